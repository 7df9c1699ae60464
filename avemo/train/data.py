"""The feature cache in memory (or memory-mapped): one fp16 array per modality, and where each clip's
seconds are in it.

Batches are built by indexing (`features[rows]`), not by a per-item Python loader. A batch is **packed**:
the seconds of its first clip, then of the second, … (see train.heads). Features are z-scored once, in
place, with statistics of the train clips' seconds (fc7 scales differ widely between backbones: random init
gives values near 0.005, ImageNet near 1).

`memory`: `ram` reads the shards into memory; `mmap` copies them into two fp16 files (in a folder you name,
normally inside the run directory) and maps those, so a cache larger than RAM trains with the page cache
holding what fits; `auto` (default) picks `mmap` when the features would take more than half of the memory
available now.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avemo.cache import ShardStore
from avemo.datasets.groups import pick_groups
from avemo.datasets.labels import to_index
from avemo.errors import AvemoError

MEMORY_MODES = ("auto", "ram", "mmap")


@dataclass
class FeatureSet:
    visual: torch.Tensor  # fp16 [seconds, d]
    audio: torch.Tensor  # fp16 [seconds, d]
    offsets: torch.Tensor  # int64 [clips]: row of each clip's first second
    lengths: torch.Tensor  # int64 [clips]: its number of seconds
    labels: torch.Tensor  # int64 [clips], arousal class index 0 calm, 1 neutral, 2 active
    clip_ids: np.ndarray  # str [clips]
    split: np.ndarray  # str [clips]
    has_audio: torch.Tensor  # bool [clips]
    groups: np.ndarray  # str [clips], the clip's movie ("" when unknown), for validation splits by movie
    settings: dict  # how the features were made (from the cache manifest)

    def subset(self, split: str) -> torch.Tensor:
        """Clip numbers of one split."""
        return torch.from_numpy(np.flatnonzero(self.split == split))

    def rows(self, clips: torch.Tensor) -> torch.Tensor:
        """Feature rows of `clips`, packed: clip by clip, second by second."""
        lengths = self.lengths[clips]
        starts = torch.cumsum(lengths, 0) - lengths
        clip_of_row = torch.repeat_interleave(torch.arange(len(clips)), lengths)
        return self.offsets[clips][clip_of_row] + torch.arange(int(lengths.sum())) - starts[clip_of_row]

    def batch(self, clips: torch.Tensor, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """fp32 packed inputs [N, d] per modality, the lengths [B] and audio mask [B] of `clips`."""
        rows = self.rows(clips)
        visual = self.visual[rows.to(self.visual.device)].to(device, non_blocking=True).float()
        audio = self.audio[rows.to(self.audio.device)].to(device, non_blocking=True).float()
        return visual, audio, self.lengths[clips].to(device), self.has_audio[clips].to(device)

    def to(self, device: str) -> None:
        """Move the feature arrays (not the index) to `device`, e.g. into GPU memory once for all epochs."""
        self.visual, self.audio = self.visual.to(device), self.audio.to(device)


def load_features(cache: str | Path, memory: str = "auto", mmap_dir: str | Path | None = None) -> FeatureSet:
    store = ShardStore(Path(cache) / "features", "features")
    index = store.read_index()
    if not (index["split"] == "train").any():
        raise AvemoError(f"{cache}: the cache holds no train clips")
    if memory not in MEMORY_MODES:
        raise AvemoError(f"memory {memory!r}: must be one of {', '.join(MEMORY_MODES)}")
    n_seconds = int(index["n_seconds"].sum())
    (_, dim), _ = store.seconds_shape("visual")
    needed = 2 * n_seconds * dim * 2  # two fp16 arrays
    if memory == "auto":
        memory = "mmap" if mmap_dir is not None and needed > available_memory() / 2 else "ram"
    arrays = {}
    for name in ("visual", "audio"):
        out = None
        if memory == "mmap":
            if mmap_dir is None:
                raise AvemoError("memory mmap needs a folder for the mapped files")
            Path(mmap_dir).mkdir(parents=True, exist_ok=True)
            shape, dtype = store.seconds_shape(name)
            out = np.lib.format.open_memmap(Path(mmap_dir) / f"{name}.npy", "w+", dtype, shape)
        arrays[name] = torch.from_numpy(store.read_seconds(name, out=out))
    if memory == "mmap":
        print(f"features: {needed / 1e9:.2f} GB memory-mapped from {mmap_dir}")
    return FeatureSet(
        visual=arrays["visual"],
        audio=arrays["audio"],
        offsets=torch.from_numpy(index["offset"].astype(np.int64)),
        lengths=torch.from_numpy(index["n_seconds"].astype(np.int64)),
        labels=torch.tensor([to_index(a) for a in index["arousal"]], dtype=torch.int64),
        clip_ids=index["clip_id"],
        split=index["split"],
        has_audio=torch.from_numpy(index["has_audio"].astype(bool)),
        groups=index["group"],
        settings=store.settings,
    )


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable), or a large number where /proc/meminfo is missing."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


class Standardiser:
    """Per-dimension z-scoring of fc7 features with statistics of the train clips' seconds only (clips
    without audio are left out of the audio statistics: their blank spectrograms are not sound)."""

    def __init__(self, stats: dict[str, torch.Tensor] | None):
        self.stats = stats

    @classmethod
    def fit(cls, data: FeatureSet, mode: str, clips: torch.Tensor, chunk: int = 8192) -> Standardiser:
        """Statistics over the seconds of `clips` (the clips the model trains on), in float64 chunk by chunk."""
        if mode == "none":
            return cls(None)
        stats = {}
        for name in ("visual", "audio"):
            chosen = clips[data.has_audio[clips]] if name == "audio" else clips
            rows = data.rows(chosen) if len(chosen) else data.rows(clips)
            values = getattr(data, name)
            total = torch.zeros(values.shape[1], dtype=torch.float64)
            squares = torch.zeros_like(total)
            for part in rows.split(chunk):
                x = values[part].double()
                total += x.sum(0)
                squares += (x * x).sum(0)
            n = max(len(rows), 2)
            mean = total / n
            std = ((squares - n * mean * mean).clamp_min(0) / (n - 1)).sqrt()
            stats[f"{name}_mean"], stats[f"{name}_std"] = mean.float(), std.float().clamp_min(1e-6)
        return cls(stats)

    def normalise_in_place(self, data: FeatureSet, chunk: int = 8192) -> None:
        """Replace the fp16 features by their z-scores, chunk by chunk (no second copy in memory)."""
        if self.stats is None:
            return
        for name in ("visual", "audio"):
            values = getattr(data, name)
            for start in range(0, len(values), chunk):
                values[start : start + chunk] = self.apply(name, values[start : start + chunk]).half()

    def apply(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """z-scores of `name` ("visual" or "audio") features, fp32."""
        x = x.float()
        if self.stats is None:
            return x
        return (x - self.stats[f"{name}_mean"].to(x.device)) / self.stats[f"{name}_std"].to(x.device)

    def state(self) -> dict | None:
        return None if self.stats is None else {k: v.cpu() for k, v in self.stats.items()}


def validation_clips(data: FeatureSet, fraction: float, seed: int) -> torch.Tensor:
    """Clip numbers of a validation set carved from the train split: about `fraction` of the train clips,
    whole movies where the cache knows movies (clips of one movie share actors, light and sound, and the
    test split takes whole movies too), else stratified by class. Empty when `fraction` is 0."""
    train = data.subset("train").tolist()
    if fraction <= 0 or len(train) < 2:
        return torch.zeros(0, dtype=torch.int64)
    groups: dict[str, list[int]] = {}
    for i in train:
        groups.setdefault(str(data.groups[i]) or f"clip:{data.clip_ids[i]}", []).append(i)
    if sum(not g.startswith("clip:") for g in groups) >= 2:
        chosen = pick_groups(groups, fraction, seed)
    else:
        rng, chosen = random.Random(seed), []
        for label in range(int(data.labels.max()) + 1):
            members = [i for i in train if int(data.labels[i]) == label]
            rng.shuffle(members)
            chosen += members[: round(fraction * len(members))]
    return torch.tensor(sorted(chosen), dtype=torch.int64)
