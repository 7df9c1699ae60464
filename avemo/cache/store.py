"""A folder of HDF5 shards plus `manifest.json` (see docs/cache-format.md).

Each shard holds a few clips: per-clip index arrays (`clip_id`, `offset`, `n_seconds`, labels, split,
`has_audio`) and per-second arrays `[seconds, ...]` (key frames, spectrograms or fc7 features). A shard is
built in memory, written under a temporary name (created exclusively, never through a link), flushed and
renamed; only then is it added to the manifest, with its sha256.

Nothing is read on trust. A manifest must be valid JSON of the expected kind whose entries name plain files
of its own folder, each clip once. Before a shard's contents are used (`verify`, and every read method),
its sha256 must equal the manifest's and its own index must agree with the entry (clips, seconds, kind)
and its rows with the store's recorded feature `width`. Hashing whole files (two threads) adds ~0.85 s to
the 0.6 s of reading MediaEval's 1.8 GB of features on 2 cores (docs/cache-format.md, "Integrity"); a file
checked once is not hashed again in the same process while its inode, size, mtime and ctime stay the same.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from avemo.approaches import UNKNOWN_LABEL
from avemo.atomic import refuse_link, write_bytes
from avemo.cache.images import ImageBlock, read_images, write_block
from avemo.errors import AvemoError

SCHEMA_VERSION = 1
NO_LABEL = UNKNOWN_LABEL  # valence (or arousal) not known
MANIFEST = "manifest.json"
INDEX_FIELDS = ("clip_id", "offset", "n_seconds", "arousal", "valence", "split", "has_audio", "group")
# `group` is the clip's movie ("" when unknown), so that a validation split can keep a movie on one side.
LABEL_FIELDS = ("arousal", "valence", "split", "group")  # what a manifest may change without decoding again
SECONDS = {
    "media": ("key_frames", "spectrograms", "key_frame_index", "key_frame_time"),
    "pool5": ("visual", "audio"),
    "features": ("visual", "audio"),
}
# per-second vector of an AlexNet cache (pool5, fc7) made before stores recorded their `width`
WIDTH = {"pool5": 9216, "features": 4096}
_MANIFEST_NAME = re.compile(r"manifest(?:-w([0-9]+))?\.json")
_SHARD_NUMBER = re.compile(r"shard-(?:w[0-9]+-)?([0-9]+)\.h5")
_LOCK_NAME = re.compile(r"\.lock(?:-w[0-9]+)?")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
_VERIFIED: set[tuple] = set()  # (path, device, inode, size, mtime, ctime, sha256, kind, width) of shards found intact


class DamagedShard(AvemoError):
    """A listed shard whose bytes are not the ones its manifest recorded (missing, cut short, changed) —
    `extract` re-makes it — or whose contents disagree with its manifest entry (`repairable` False)."""

    def __init__(self, store: ShardStore, entry: dict, path: Path, reason: str, repairable: bool = True):
        self.store, self.entry, self.path, self.reason, self.repairable = store, entry, path, reason, repairable
        cache = store.folder.parent
        if repairable:
            again = "its clips are decoded again" if store.kind == "media" else f"its {store.kind} are computed again"
            remedy = (
                f"run `avemo extract --cache {cache}` with the manifest and options the cache was made with: it "
                f"re-makes damaged shards ({again})"
            )
        else:
            remedy = f"restore {store.folder / store.manifest_name_of(entry)}, or delete {store.folder} to make it again"
        super().__init__(f"{path}: {reason}; {remedy}")


def writable_folder(folder: Path) -> Path:
    """mkdir -p `folder` for avemo's own writes: never through a symbolic link, one clear line when refused."""
    folder = Path(folder)
    refuse_link(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AvemoError(f"{folder}: cannot create it ({e.strerror}); {_write_remedy(folder)}") from None
    return folder


def write_file(path: Path, data: bytes) -> None:
    """`data` into `path` whole or not at all (avemo.atomic: a fresh temporary, never a link's target, fsync,
    rename). A full disk or a read-only folder is one AvemoError naming the cache, the free space and what to
    do; the partial temporary is removed."""
    path = Path(path)
    free = _free_bytes(path.parent)
    if free is not None and free < len(data) + (1 << 20):
        raise AvemoError(_no_space(path, len(data), free))
    try:
        write_bytes(path, data)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise AvemoError(_no_space(path, len(data), _free_bytes(path.parent))) from None
        raise AvemoError(f"{path}: cannot write it ({e.strerror}); {_write_remedy(path.parent)}") from None


def open_new(path: Path, text: bool = True):
    """A new file at `path` for avemo's own writes (errors.csv): the old file is removed first, then created with
    O_EXCL | O_NOFOLLOW. A symbolic link there is refused (it may point at one of the user's files)."""
    path = Path(path)
    refuse_link(path)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        fd = os.open(path, _CREATE, 0o644)
    except OSError as e:
        raise AvemoError(f"{path}: cannot write it ({e.strerror}); {_write_remedy(path.parent)}") from None
    return os.fdopen(fd, "w", newline="") if text else os.fdopen(fd, "wb")


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _no_space(path: Path, size: int, free: int | None) -> str:
    cache = path.parent.parent if path.parent.name in ("media", "pool5", "features", "models") else path.parent
    room = "" if free is None else f" ({free / 1e6:.1f} MB free)"
    return (
        f"{cache}: the disk is full{room}: writing {path.name} needs {size / 1e6:.1f} MB; free some space or use another "
        "--cache, then run again (work already written is kept and resumed)"
    )


def _write_remedy(folder: Path) -> str:
    return f"check that {folder} is a writable folder (not read-only, enough space), or use another --cache"


@contextlib.contextmanager
def cache_lock(folder: str | Path, writer: int = 0) -> Iterator[None]:
    """Hold the cache for one run (one lock per writer, i.e. torchrun rank); a second run refuses. The lock
    file is opened without following a link and never truncated."""
    folder = Path(folder)  # the user's --cache: may itself be a link to a folder elsewhere
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AvemoError(f"{folder}: cannot create the cache folder ({e.strerror}); {_write_remedy(folder)}") from None
    path = folder / (".lock" if writer == 0 else f".lock-w{writer}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AvemoError(
                f"{path}: is a symbolic link; avemo does not write through links, which could truncate another file: remove it"
            ) from None
        raise AvemoError(
            f"{folder}: cannot write in this cache ({e.strerror}): extract writes its shards here; make it writable "
            "or use another --cache"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AvemoError(f"{folder}: another avemo run is using this cache; wait for it or use another --cache") from None
        yield
    finally:
        os.close(fd)


def busy_lock(cache: Path) -> str | None:
    """The name of a lock an extract holds on `cache` now, or None. Opens read-only, never through a link."""
    for path in sorted(Path(cache).glob(".lock*")):
        if not _LOCK_NAME.fullmatch(path.name):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return path.name
        finally:
            os.close(fd)  # releases our shared lock at once
    return None


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
        self.has_manifest = False  # this writer's manifest exists on disk
        names = [p for p in self.folder.glob("manifest*.json") if _MANIFEST_NAME.fullmatch(p.name)]
        for path in sorted(names, key=_writer_of):
            manifest = _load_manifest(path, kind)
            if path.name == self.manifest_name:
                self.manifest, self.has_manifest = manifest, True
            else:
                self.others.append(manifest)
        self._check_entries()

    def writer_of(self, entry: dict) -> int:
        """The writer whose manifest lists `entry` (one of this store's entries)."""
        for manifest in self.others:
            if any(e is entry for e in manifest["shards"]):
                return int(manifest.get("writer", 0))
        return self.writer

    def manifest_name_of(self, entry: dict) -> str:
        writer = self.writer_of(entry)
        return MANIFEST if not writer else f"manifest-w{writer}.json"

    def _check_entries(self) -> None:
        """Each file and each clip once over all manifests (a clip listed twice would be read twice)."""
        files: dict[str, str] = {}
        clips: dict[str, str] = {}
        for entry, _ in self.shards():
            if entry["file"] in files:
                raise AvemoError(
                    f"{self.folder}: {entry['file']} is listed twice in its manifests; restore them, or delete "
                    f"{self.folder} to make the {self.kind} shards again"
                )
            files[entry["file"]] = entry["file"]
            for clip in entry["clips"]:
                if clip in clips:
                    raise AvemoError(
                        f"{self.folder / self.manifest_name_of(entry)}: clip {clip} is listed in both {clips[clip]} and "
                        f"{entry['file']}; restore the manifest, or delete {self.folder} to make the {self.kind} shards again"
                    )
                clips[clip] = entry["file"]

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

    @property
    def width(self) -> int | None:
        """The per-second width of a pool5 or features store: the recorded `width`, else (a store made before
        widths were recorded) AlexNet's for an AlexNet cache (settings with `weights`); None: any one width
        (synthetic caches, media)."""
        if self.kind not in WIDTH:
            return None
        recorded = self.settings.get("width")
        if isinstance(recorded, int) and not isinstance(recorded, bool):
            return recorded
        return WIDTH[self.kind] if "weights" in self.settings else None

    def shards(self) -> list[tuple[dict, Path]]:
        """(manifest entry, path) of every completed shard of every writer (listed, not yet verified)."""
        manifests = sorted([self.manifest, *self.others], key=lambda m: m.get("writer", 0))
        return [(entry, self.folder / entry["file"]) for m in manifests for entry in m["shards"]]

    # -- integrity --------------------------------------------------------------------------------
    def damaged(self, shards: list[tuple[dict, Path]] | None = None) -> list[DamagedShard]:
        """The listed shards (all, or `shards`) that fail their check; the others are remembered as intact."""
        found, todo = [], []
        for entry, path in self.shards() if shards is None else shards:
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                found.append(DamagedShard(self, entry, path, "missing (listed in the manifest, not on disk)"))
                continue
            except OSError as e:
                found.append(DamagedShard(self, entry, path, f"unreadable ({e.strerror})"))
                continue
            if not stat.S_ISREG(info.st_mode):
                found.append(DamagedShard(self, entry, path, "not a regular file (a link or a folder)", repairable=False))
                continue
            key = _key(path, info, entry["sha256"], self.kind, self.width)
            if key not in _VERIFIED:
                todo.append((entry, path, key))
        if todo:  # hashlib releases the GIL: the files are hashed in parallel
            with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1, len(todo)))) as pool:
                digests = list(pool.map(lambda item: _sha256_of(item[1]), todo))
            for (entry, path, key), digest in zip(todo, digests):
                problem = self._problem(entry, path, digest)
                if problem is None:
                    _VERIFIED.add(key)
                else:
                    found.append(problem)
        return found

    def verify(self, shards: list[tuple[dict, Path]] | None = None) -> None:
        """Raise DamagedShard (one line naming the file) unless every listed shard (or `shards`) is intact."""
        bad = self.damaged(shards)
        if bad:
            raise bad[0]

    def _problem(self, entry: dict, path: Path, digest: str | OSError) -> DamagedShard | None:
        if isinstance(digest, OSError):
            return DamagedShard(self, entry, path, f"unreadable ({digest.strerror})")
        if digest != entry["sha256"]:
            size = path.stat().st_size
            return DamagedShard(
                self,
                entry,
                path,
                f"damaged: its sha256 is not the one in {self.manifest_name_of(entry)} (changed, cut short or "
                f"corrupted since it was written; {size} bytes now)",
            )
        try:
            with h5py.File(path, "r") as f:
                reason = self._contents_problem(entry, f)
        except (OSError, KeyError, ValueError, TypeError) as e:
            reason = f"not a readable avemo shard ({type(e).__name__})"
        return None if reason is None else DamagedShard(self, entry, path, reason, repairable=False)

    def _contents_problem(self, entry: dict, f: h5py.File) -> str | None:
        """What in a shard (whose bytes are the recorded ones) disagrees with its manifest entry, or None."""
        kind = f.attrs.get("kind")
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind != self.kind:
            return f"a {kind!r} shard listed among the {self.kind} shards"
        if f.attrs.get("schema_version") != SCHEMA_VERSION:
            return f"schema {f.attrs.get('schema_version')}, not {SCHEMA_VERSION}"
        index = read_shard_index(f)
        lengths = {len(values) for values in index.values()}
        if len(lengths) != 1:
            return "its index arrays differ in length"
        ids = [str(c) for c in index["clip_id"]]
        if ids != list(entry["clips"]):
            return (
                f"its manifest entry lists other clips than the shard holds ({len(entry['clips'])} listed, "
                f"{len(ids)} held{', in another order' if sorted(ids) == sorted(entry['clips']) else ''})"
            )
        counts = index["n_seconds"].astype(np.int64)
        total = int(counts.sum())
        if total != entry["n_seconds"] or (counts < 0).any():
            return f"holds {total} seconds, its manifest entry says {entry['n_seconds']}"
        if not np.array_equal(index["offset"], np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)):
            return "its clip offsets do not follow its clip lengths"
        return self._seconds_problem(f, total)

    def _seconds_problem(self, f: h5py.File, total: int) -> str | None:
        """What in a shard's per-second datasets disagrees with its `total` seconds or the store's width."""
        for name in SECONDS.get(self.kind, ()):
            if name not in f:
                return f"no {name!r} dataset"
            dataset = f[name]
            if len(dataset) != total:
                return f"{name!r} has {len(dataset)} rows for {total} seconds"
            if self.kind in WIDTH:
                width = self.width
                if dataset.ndim != 2 or dataset.dtype != np.float16 or (width and dataset.shape[1] != width):
                    want = f"[seconds, {width}]" if width else "[seconds, width]"
                    return f"{name!r} is {list(dataset.shape)} {dataset.dtype}, not {want} float16 ({self.kind})"
        if self.kind in WIDTH and f["visual"].shape[1] != f["audio"].shape[1]:
            return "its visual and audio rows differ in width"
        return None

    # -- writing ----------------------------------------------------------------------------------
    def completed_clips(self) -> set[str]:
        return {clip for entry, _ in self.shards() for clip in entry["clips"]}

    def remove_partial_shards(self) -> None:
        """Delete what a killed run left half-written: `*.tmp`, and this writer's shard files its manifest does
        not list (renamed, then killed before the manifest was saved). Never another writer's."""
        mine = "shard-[0-9]*" if self.writer == 0 else f"shard-w{self.writer}-*"
        if not self.folder.is_dir():
            return
        writable_folder(self.folder)
        listed = {entry["file"] for entry in self.manifest["shards"]}
        for leftover in self.folder.glob(mine + ".tmp"):
            leftover.unlink()
        if self.has_manifest:
            for leftover in self.folder.glob(mine + ".h5"):
                if leftover.name not in listed and _SHARD_NUMBER.fullmatch(leftover.name):
                    leftover.unlink()

    def _next_name(self) -> str:
        prefix = "shard-" if self.writer == 0 else f"shard-w{self.writer}-"
        numbers = [int(m.group(1)) for e in self.manifest["shards"] if (m := _SHARD_NUMBER.fullmatch(e["file"]))]
        number = max(numbers, default=-1) + 1
        number = max(number, len(self.manifest["shards"]))
        return f"{prefix}{number:05d}.h5"

    def add_shard(
        self,
        index: dict[str, np.ndarray],
        seconds: dict[str, np.ndarray | ImageBlock],
        compression: dict[str, str] | None = None,
    ) -> None:
        """Write one shard (index arrays per clip; per-second arrays or image blocks) and list it in the manifest."""
        writable_folder(self.folder)
        image = _shard_image(self.kind, self.settings, index, seconds, compression or {})
        name = self._next_name()
        entry = {
            "file": name,
            "sha256": hashlib.sha256(image).hexdigest(),
            "clips": [str(c) for c in index["clip_id"]],
            "n_seconds": int(np.asarray(index["n_seconds"]).sum()),
        }
        self._put(entry, image)
        self.manifest["shards"].append(entry)
        self._save_manifest()

    def _put(self, entry: dict, image: bytes) -> None:
        path = self.folder / entry["file"]
        write_file(path, image)
        _VERIFIED.add(_key(path, os.lstat(path), entry["sha256"], self.kind, self.width))

    def rewrite_index(self, entry: dict, values: dict[str, np.ndarray]) -> None:
        """Replace some per-clip index arrays (labels, split, group) of one of this writer's shards: a new file
        with a new name and sha256, listed in place of the old one (atomic: the manifest switches at once)."""
        old = self.folder / entry["file"]
        data = io.BytesIO(old.read_bytes())
        with h5py.File(data, "r+") as f:
            for key, new in values.items():
                name = f"index/{key}"
                if new.dtype.kind in "UO":
                    if name in f:
                        del f[name]
                    f.create_dataset(name, data=new.astype(object), dtype=h5py.string_dtype())
                else:
                    f[name][...] = new
        image = data.getvalue()
        position = next(i for i, e in enumerate(self.manifest["shards"]) if e is entry)
        fresh = {**entry, "file": self._next_name(), "sha256": hashlib.sha256(image).hexdigest()}
        self._put(fresh, image)
        self.manifest["shards"][position] = fresh
        self._save_manifest()
        with contextlib.suppress(FileNotFoundError):
            old.unlink()

    def drop(self, entry: dict) -> None:
        """Unlist one of this writer's shards and delete its file (a damaged shard, re-made after)."""
        self.manifest["shards"] = [e for e in self.manifest["shards"] if e is not entry]
        self._save_manifest()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.folder / entry["file"])

    def _save_manifest(self) -> None:
        self.manifest["writer"] = self.writer
        writable_folder(self.folder)
        write_file(self.folder / self.manifest_name, json.dumps(self.manifest, indent=1).encode())
        self.has_manifest = True

    # -- reading ----------------------------------------------------------------------------------
    def shard_paths(self) -> list[Path]:
        """The paths of every shard, each verified (sha256 and index) before its contents are used."""
        shards = self.shards()
        if not shards:
            raise AvemoError(f"{self.folder}: no {self.kind} shards here; run `avemo extract` first")
        self.verify(shards)
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
        """(shape, dtype) of one per-second array in every shard (images: as decoded); all alike but the rows."""
        shapes = []
        for path in self.shard_paths():
            with h5py.File(path, "r") as f:
                dataset = f[name]
                if "image_shape" in dataset.attrs:
                    shapes.append(((len(dataset), *dataset.attrs["image_shape"]), np.dtype(np.uint8)))
                else:
                    shapes.append((dataset.shape, dataset.dtype))
            if (shapes[-1][0][1:], shapes[-1][1]) != (shapes[0][0][1:], shapes[0][1]):
                raise AvemoError(
                    f"{path}: its {name!r} rows are {list(shapes[-1][0][1:])} {shapes[-1][1]}, those of the store's first "
                    f"shard {list(shapes[0][0][1:])} {shapes[0][1]}; delete {self.folder} to make the {self.kind} shards again"
                )
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


def _shard_image(
    kind: str, settings: dict, index: dict[str, np.ndarray], seconds: dict[str, np.ndarray | ImageBlock], compression: dict
) -> bytes:
    """The bytes of one shard file, built in memory (HDF5's core driver): the disk is only ever written by
    plain writes, so a full disk is an ordinary error, never a half-flushed HDF5 file."""
    with h5py.File(f"avemo-shard-{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False) as f:
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["kind"] = kind
        f.attrs["settings"] = json.dumps(settings, sort_keys=True)
        for key in INDEX_FIELDS:
            values = index[key] if key in index else np.full(len(index["clip_id"]), "", dtype=str)  # group
            values = np.asarray(values)
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
        f.flush()
        return f.id.get_file_image()


def _load_manifest(path: Path, kind: str) -> dict:
    """One manifest, checked: valid JSON, this schema and kind, entries naming plain files of its folder."""
    remedy = f"restore it, or delete {path.parent} to make the {kind} shards again"
    try:
        manifest = json.loads(path.read_bytes())
    except OSError as e:
        raise AvemoError(f"{path}: cannot read it ({e.strerror}); check its permissions") from None
    except ValueError as e:
        raise AvemoError(f"{path}: not valid JSON, cut short or edited ({str(e).splitlines()[0][:80]}); {remedy}") from None
    if not isinstance(manifest, dict):
        raise AvemoError(f"{path}: not a manifest (a JSON {type(manifest).__name__}); {remedy}")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise AvemoError(
            f"{path}: cache schema {manifest.get('schema_version')} but this avemo reads {SCHEMA_VERSION}; "
            "extract into a new --cache"
        )
    if manifest.get("kind") != kind:
        raise AvemoError(f"{path}: a manifest of {manifest.get('kind')!r} shards where {kind} shards belong; {remedy}")
    if manifest.get("settings") is not None and not isinstance(manifest["settings"], dict):
        raise AvemoError(f"{path}: its settings are not a JSON object; {remedy}")
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        raise AvemoError(f"{path}: no list of shards; {remedy}")
    for number, entry in enumerate(shards):
        problem = _entry_problem(entry)
        if problem:
            raise AvemoError(f"{path}: shard entry {number + 1} {problem}; {remedy}")
    return manifest


def _entry_problem(entry: object) -> str | None:
    if not isinstance(entry, dict):
        return "is not a JSON object"
    name = entry.get("file")
    if not isinstance(name, str) or not name.endswith(".h5") or name != os.path.basename(name) or "\\" in name or "\0" in name:
        return f"names {name!r}, not a plain shard file name inside the store folder"
    if name.startswith("."):
        return f"names {name!r}, a hidden file"
    if not isinstance(entry.get("sha256"), str):  # a wrong one is found when the shard is checked
        return f"({name}) has no sha256"
    clips = entry.get("clips")
    if not isinstance(clips, list) or not all(isinstance(c, str) and c for c in clips):
        return f"({name}) has no list of clip ids"
    seconds = entry.get("n_seconds")
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 0:
        return f"({name}) has no number of seconds"
    return None


def _key(path: Path, info: os.stat_result, sha256: str, kind: str, width: int | None) -> tuple:
    """What a verified shard is remembered by: any write, truncation or replacement changes it, and so does
    another expected width."""
    return (str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, sha256, kind, width)


def _writer_of(path: Path) -> int:
    """manifest.json → 0, manifest-w3.json → 3."""
    match = _MANIFEST_NAME.fullmatch(path.name)
    return int(match.group(1)) if match and match.group(1) else 0


def _sha256_of(path: Path) -> str | OSError:
    try:
        return _sha256(path)
    except OSError as e:
        return e


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(8 << 20)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while size := handle.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()
