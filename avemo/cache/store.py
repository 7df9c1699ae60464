"""A folder of HDF5 shards plus `manifest.json` (see docs/cache-format.md).

Each shard holds a few clips: per-clip index arrays (`clip_id`, `offset`, `n_seconds`, labels, split,
`has_audio`) and per-second arrays `[seconds, ...]` (key frames, spectrograms or fc7 features). A shard is
written under a temporary name and renamed once complete and flushed; only then is it added to the
manifest, with its sha256. Readers trust the manifest; a resumed run skips the clips it lists.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from avemo.cache.images import ImageBlock, read_images, write_block
from avemo.errors import AvemoError

SCHEMA_VERSION = 1
NO_LABEL = -128  # valence (or arousal) not known
MANIFEST = "manifest.json"
INDEX_FIELDS = ("clip_id", "offset", "n_seconds", "arousal", "valence", "split", "has_audio", "group")
# `group` is the clip's movie ("" when unknown), so that a validation split can keep a movie on one side.


@contextlib.contextmanager
def cache_lock(folder: str | Path, writer: int = 0) -> Iterator[None]:
    """Hold the cache for one run (one lock per writer, i.e. torchrun rank); a second run refuses."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / (".lock" if writer == 0 else f".lock-w{writer}"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AvemoError(f"{folder}: another avemo run is using this cache; wait for it or use another --cache") from None
        yield


class ShardStore:
    """Shards of one kind ("media", "pool5" or "features") made with one set of settings.

    Several processes (torchrun ranks) may fill one store: each is a *writer* with its own manifest
    (`manifest.json` for writer 0, `manifest-w<N>.json` for writer N) and its own shard names, so no file
    has two writers. Readers see the union of all writers' shards, in writer order."""

    def __init__(self, folder: str | Path, kind: str, writer: int = 0):
        self.folder = Path(folder)
        self.kind = kind
        self.writer = writer
        self.manifest_name = MANIFEST if writer == 0 else f"manifest-w{writer}.json"
        self.others: list[dict] = []  # manifests of the other writers
        self.manifest = {"schema_version": SCHEMA_VERSION, "kind": kind, "settings": None, "shards": []}
        for path in sorted(self.folder.glob("manifest*.json"), key=_writer_of):
            manifest = json.loads(path.read_text())
            if manifest.get("schema_version") != SCHEMA_VERSION:
                raise AvemoError(
                    f"{path}: cache schema {manifest.get('schema_version')} but this avemo reads {SCHEMA_VERSION}; "
                    "extract into a new --cache"
                )
            if path.name == self.manifest_name:
                self.manifest = manifest
            else:
                self.others.append(manifest)

    # -- settings ---------------------------------------------------------------------------------
    def check_settings(self, settings: dict) -> None:
        """Adopt `settings` for a new store; refuse when existing shards were made with other ones."""
        stored = self.manifest["settings"] or next((m["settings"] for m in self.others if m["settings"]), None)
        if stored is None:
            self.manifest["settings"] = settings
            return
        for key in sorted(set(stored) | set(settings)):
            if stored.get(key) != settings.get(key):
                raise AvemoError(
                    f"{self.folder}: existing {self.kind} shards were made with {key}={stored.get(key)!r}, "
                    f"not {settings.get(key)!r}; use the same settings or another --cache"
                )
        self.manifest["settings"] = self.manifest["settings"] or stored

    @property
    def settings(self) -> dict:
        return self.manifest["settings"] or next((m["settings"] for m in self.others if m["settings"]), None) or {}

    def shards(self) -> list[tuple[dict, Path]]:
        """(manifest entry, path) of every completed shard of every writer."""
        manifests = sorted([self.manifest, *self.others], key=lambda m: m.get("writer", 0))
        return [(entry, self.folder / entry["file"]) for m in manifests for entry in m["shards"]]

    # -- writing ----------------------------------------------------------------------------------
    def completed_clips(self) -> set[str]:
        return {clip for entry, _ in self.shards() for clip in entry["clips"]}

    def remove_partial_shards(self) -> None:
        """Delete what a killed run left half-written (never listed in the manifest)."""
        pattern = "shard-[0-9]*.tmp" if self.writer == 0 else f"shard-w{self.writer}-*.tmp"  # never another writer's
        for leftover in self.folder.glob(pattern):
            leftover.unlink()

    def add_shard(
        self,
        index: dict[str, np.ndarray],
        seconds: dict[str, np.ndarray | ImageBlock],
        compression: dict[str, str] | None = None,
    ) -> None:
        """Write one shard (index arrays per clip; per-second arrays or image blocks) and list it in the manifest."""
        self.folder.mkdir(parents=True, exist_ok=True)
        prefix = "shard-" if self.writer == 0 else f"shard-w{self.writer}-"
        name = f"{prefix}{len(self.manifest['shards']):05d}.h5"
        final, tmp = self.folder / name, self.folder / (name + ".tmp")
        compression = compression or {}
        with h5py.File(tmp, "w") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["kind"] = self.kind
            f.attrs["settings"] = json.dumps(self.settings, sort_keys=True)
            for key in INDEX_FIELDS:
                values = index[key] if key in index else np.full(len(index["clip_id"]), "", dtype=str)  # group
                if values.dtype.kind in "UO":
                    f.create_dataset(f"index/{key}", data=values.astype(object), dtype=h5py.string_dtype())
                else:
                    f.create_dataset(f"index/{key}", data=values)
            for key, values in seconds.items():
                if isinstance(values, ImageBlock):
                    write_block(f, key, values)
                    continue
                codec = compression.get(key)
                chunks = (1, *values.shape[1:]) if codec else None
                f.create_dataset(key, data=values, compression=codec, chunks=chunks if len(values) else None)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        self.manifest["shards"].append(
            {
                "file": name,
                "sha256": _sha256(final),
                "clips": [str(c) for c in index["clip_id"]],
                "n_seconds": int(index["n_seconds"].sum()),
            }
        )
        self._save_manifest()

    def _save_manifest(self) -> None:
        self.manifest["writer"] = self.writer
        tmp = self.folder / (self.manifest_name + ".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=1))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.folder / self.manifest_name)

    # -- reading ----------------------------------------------------------------------------------
    def shard_paths(self) -> list[Path]:
        shards = self.shards()
        if not shards:
            raise AvemoError(f"{self.folder}: no {self.kind} shards here; run `avemo extract` first")
        return [path for _, path in shards]

    def read_index(self) -> dict[str, np.ndarray]:
        """The per-clip index of all shards, with `offset` counted over the concatenated seconds."""
        parts: dict[str, list[np.ndarray]] = {key: [] for key in INDEX_FIELDS}
        base = 0
        for path in self.shard_paths():
            with h5py.File(path, "r") as f:
                index = read_shard_index(f)
            for key in INDEX_FIELDS:
                parts[key].append(index[key] + base if key == "offset" else index[key])
            base += int(index["n_seconds"].sum())
        return {key: np.concatenate(values) for key, values in parts.items()}

    def _shapes(self, name: str) -> list[tuple[tuple[int, ...], np.dtype]]:
        """(shape, dtype) of one per-second array in every shard (images: as decoded)."""
        shapes = []
        for path in self.shard_paths():
            with h5py.File(path, "r") as f:
                dataset = f[name]
                if "image_shape" in dataset.attrs:
                    shapes.append(((len(dataset), *dataset.attrs["image_shape"]), np.dtype(np.uint8)))
                else:
                    shapes.append((dataset.shape, dataset.dtype))
        return shapes

    def seconds_shape(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of `read_seconds(name)`, without reading it."""
        shapes = self._shapes(name)
        return (sum(shape[0] for shape, _ in shapes), *shapes[0][0][1:]), shapes[0][1]

    def read_seconds(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        """One per-second array over all shards (images decoded), read into one preallocated array: `out`
        when given (e.g. a memory map of `seconds_shape(name)`)."""
        shape, dtype = self.seconds_shape(name)
        if out is None:
            out = np.empty(shape, dtype=dtype)
        elif out.shape != shape or out.dtype != dtype:
            raise ValueError(f"out is {out.shape} {out.dtype}, {name} is {shape} {dtype}")
        start = 0
        for path, (part, _) in zip(self.shard_paths(), self._shapes(name)):
            if part[0]:
                with h5py.File(path, "r") as f:
                    if f[name].attrs.get("codec", "raw") != "raw":
                        out[start : start + part[0]] = read_images(f, name)
                    else:
                        f[name].read_direct(out, dest_sel=np.s_[start : start + part[0]])
            start += part[0]
        return out


def read_shard_index(f: h5py.File) -> dict[str, np.ndarray]:
    """The per-clip index of one open shard; strings come back as str arrays."""
    index = {}
    for key in INDEX_FIELDS:
        if key == "group" and "index/group" not in f:
            index[key] = np.full(len(f["index/clip_id"]), "", dtype=str)
            continue
        values = f[f"index/{key}"][()]
        if values.dtype.kind == "O":
            values = np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=str)
        index[key] = values
    return index


def _writer_of(path: Path) -> int:
    """manifest.json → 0, manifest-w3.json → 3."""
    stem = path.stem
    return int(stem.split("-w")[1]) if "-w" in stem else 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
