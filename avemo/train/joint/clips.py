"""The joint pass's reader of the cache: every clip of CACHE/features with where its seconds are, and the
backbones' inputs per second (pool5 rows, or key frames and spectrograms from CACHE/media)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from avemo.approaches import MODALITIES
from avemo.cache import ShardStore, read_images
from avemo.cache.store import read_shard_index
from avemo.datasets.labels import to_index
from avemo.errors import AvemoError
from avemo.extract.embed import Embedder

INDEX = ("clip_id", "split", "arousal", "has_audio", "n_seconds", "offset")


@dataclass
class Shard:
    features: Path
    media: Path
    pool5: Path | None
    index: dict[str, np.ndarray]


@dataclass
class Clips:
    """Every clip of CACHE/features, in its order, and where its seconds are."""

    ids: np.ndarray  # str
    split: np.ndarray  # str
    labels: torch.Tensor  # int64 class index
    has_audio: torch.Tensor  # bool
    lengths: torch.Tensor  # int64
    shard: np.ndarray  # int: position in `shards`
    offset: np.ndarray  # int64: first row in that shard
    shards: list[Shard]

    def numbers(self, ids: set[str] | None = None, split: str | None = None) -> torch.Tensor:
        keep = np.ones(len(self.ids), bool)
        if ids is not None:
            keep &= np.isin(self.ids, list(ids))
        if split is not None:
            keep &= self.split == split
        return torch.from_numpy(np.flatnonzero(keep))

    def by_id(self, ids: set[str]) -> torch.Tensor:
        """The numbers of these clips in canonical order (by clip id): a result that does not depend on how
        clips fell into shards or ranks."""
        numbers = self.numbers(ids)
        return numbers[torch.from_numpy(np.argsort(self.ids[numbers.numpy()], kind="stable"))]


def read_clips(cache: Path, use_pool5: bool) -> Clips:
    """The index of every features shard, with the media (and, `use_pool5`, pool5) shard of the same clips."""
    media = {tuple(e["clips"]): p for e, p in ShardStore(cache / "media", "media").shards()}
    pool5 = {tuple(e["clips"]): p for e, p in ShardStore(cache / "pool5", "pool5").shards()} if use_pool5 else {}
    shards, parts = [], []
    for number, (entry, path) in enumerate(ShardStore(cache / "features", "features").shards()):
        key = tuple(entry["clips"])
        if key not in media:
            raise AvemoError(f"{cache / 'media'}: no media shard for the clips of {path}; the cache is incomplete")
        with h5py.File(path, "r") as f:
            index = read_shard_index(f)
        shards.append(Shard(path, media[key], pool5.get(key), index))
        parts.append((index, np.full(len(index["clip_id"]), number)))
    if not shards:
        raise AvemoError(f"{cache / 'features'}: no features shards here; run `avemo extract` first")
    cat = {k: np.concatenate([p[0][k] for p in parts]) for k in INDEX}
    return Clips(
        ids=cat["clip_id"],
        split=cat["split"],
        labels=torch.tensor([to_index(a) for a in cat["arousal"]], dtype=torch.int64),
        has_audio=torch.from_numpy(cat["has_audio"].astype(bool)),
        lengths=torch.from_numpy(cat["n_seconds"].astype(np.int64)),
        shard=np.concatenate([p[1] for p in parts]),
        offset=cat["offset"].astype(np.int64),
        shards=shards,
    )


class Inputs:
    """Per-second backbone inputs: pool5 rows (mode fc; those of the training clips held in memory) or images."""

    def __init__(self, clips: Clips, modalities: list[str], from_images: bool, embedder: Embedder, device: str):
        """`embedder`: computes pool5 where the cache has none (its convolutions are the frozen ones)."""
        self.clips, self.modalities, self.from_images, self.device = clips, modalities, from_images, device
        self.embedder = embedder
        self.memory: dict[str, torch.Tensor] = {}
        self.start = torch.full((len(clips.ids),), -1, dtype=torch.int64)

    def preload(self, numbers: torch.Tensor) -> None:
        """Hold the pool5 rows of these clips in memory (mode fc), shard by shard, whole shards read at once."""
        if self.from_images or not len(numbers):
            return
        chosen = np.sort(numbers.numpy())
        rows: dict[str, list[np.ndarray]] = {m: [] for m in self.modalities}
        at = 0
        for s in np.unique(self.clips.shard[chosen]):
            shard_pool5 = {m: self.shard_pool5(int(s), m) for m in self.modalities}
            for c in chosen[self.clips.shard[chosen] == s]:
                o, n = int(self.clips.offset[c]), int(self.clips.lengths[c])
                for m in self.modalities:
                    rows[m].append(shard_pool5[m][o : o + n])
                self.start[c] = at
                at += n
        self.memory = {m: torch.from_numpy(np.concatenate(v)) for m, v in rows.items()}

    def release(self) -> None:
        """Drop the rows held by `preload`."""
        self.memory = {}
        self.start[:] = -1

    def batch(self, numbers: torch.Tensor) -> dict[str, torch.Tensor]:
        """Packed inputs of these clips (clip by clip, seconds in order), per modality; mode fc: preloaded clips."""
        if self.from_images:
            return {m: torch.from_numpy(self._images(numbers, m)).to(self.device) for m in self.modalities}
        lengths = self.clips.lengths[numbers]
        first = torch.cumsum(lengths, 0) - lengths
        rows = torch.repeat_interleave(self.start[numbers] - first, lengths) + torch.arange(int(lengths.sum()))
        return {m: self.memory[m][rows].to(self.device) for m in self.modalities}

    def _images(self, numbers: torch.Tensor, modality: str) -> np.ndarray:
        out: list[np.ndarray] = [None] * len(numbers)  # type: ignore[list-item]
        shards = self.clips.shard[numbers.numpy()]
        for s in np.unique(shards):
            with h5py.File(self.clips.shards[s].media, "r") as f:
                for i in np.flatnonzero(shards == s):
                    c = int(numbers[i])
                    o, n = int(self.clips.offset[c]), int(self.clips.lengths[c])
                    out[i] = read_images(f, MODALITIES[modality], slice(o, o + n))
        return np.concatenate(out)

    def shard_inputs(self, s: int, modality: str) -> np.ndarray:
        """Every second of one shard: images (mode all) or pool5 (mode fc)."""
        if self.from_images:
            with h5py.File(self.clips.shards[s].media, "r") as f:
                return read_images(f, MODALITIES[modality])
        return self.shard_pool5(s, modality)

    def shard_pool5(self, s: int, modality: str) -> np.ndarray:
        shard = self.clips.shards[s]
        if shard.pool5 is not None:
            with h5py.File(shard.pool5, "r") as f:
                return f[modality][()]  # whole dataset, then rows: faster than h5py fancy indexing
        with h5py.File(shard.media, "r") as f:  # no usable pool5 store: the frozen convolutions, once
            images = read_images(f, MODALITIES[modality])
        return self.embedder.pool5(modality, images)
