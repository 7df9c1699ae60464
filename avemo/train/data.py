"""The feature cache in memory: one fp16 tensor per modality and a step index per clip.

Batches are built by indexing (`features[steps[batch]]`), not by a per-item Python loader: `steps[c, t]` is
the row of second t of clip c, and rows past a clip's end point at an all-zero padding row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avemo.cache import ShardStore
from avemo.datasets.labels import to_index
from avemo.errors import AvemoError


@dataclass
class FeatureSet:
    visual: torch.Tensor  # fp16 [seconds + 1, 4096]; the last row is zeros (padding)
    audio: torch.Tensor  # fp16 [seconds + 1, 4096]
    steps: torch.Tensor  # int64 [clips, max_seconds]
    lengths: torch.Tensor  # int64 [clips]
    labels: torch.Tensor  # int64 [clips], arousal class index 0 calm, 1 neutral, 2 active
    clip_ids: np.ndarray  # str [clips]
    split: np.ndarray  # str [clips]
    has_audio: np.ndarray  # bool [clips]
    groups: np.ndarray  # str [clips], the clip's movie ("" when unknown), for validation splits by movie
    settings: dict  # how the features were made (from the cache manifest)

    def subset(self, split: str) -> torch.Tensor:
        """Clip numbers of one split."""
        return torch.from_numpy(np.flatnonzero(self.split == split))

    def batch(self, clips: torch.Tensor, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded fp16 inputs [B, T, 4096] per modality, trimmed to the longest clip in the batch, and lengths."""
        lengths = self.lengths[clips]
        rows = self.steps[clips, : int(lengths.max())]
        return self.visual[rows].to(device), self.audio[rows].to(device), lengths


def load_features(cache: str | Path) -> FeatureSet:
    store = ShardStore(Path(cache) / "features", "features")
    index = store.read_index()
    if not (index["split"] == "train").any():
        raise AvemoError(f"{cache}: the cache holds no train clips")
    n_seconds = int(index["n_seconds"].sum())

    def with_padding_row(name: str) -> torch.Tensor:
        values = store.read_seconds(name)
        return torch.from_numpy(np.concatenate([values, np.zeros((1, values.shape[1]), values.dtype)]))

    lengths = torch.from_numpy(index["n_seconds"].astype(np.int64))
    offsets = torch.from_numpy(index["offset"].astype(np.int64))
    t = torch.arange(int(lengths.max()))
    steps = torch.where(t[None, :] < lengths[:, None], offsets[:, None] + t[None, :], torch.tensor(n_seconds))
    return FeatureSet(
        visual=with_padding_row("visual"),
        audio=with_padding_row("audio"),
        steps=steps,
        lengths=lengths,
        labels=torch.tensor([to_index(a) for a in index["arousal"]], dtype=torch.int64),
        clip_ids=index["clip_id"],
        split=index["split"],
        has_audio=index["has_audio"].astype(bool),
        groups=index["group"],
        settings=store.settings,
    )
