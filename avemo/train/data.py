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

import hashlib
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from avemo.approaches import UNKNOWN_LABEL
from avemo.atomic import refuse_link
from avemo.cache import ShardStore
from avemo.datasets.groups import DEFAULT_FRACTION, HeldOut, clips_sha256, hold_out
from avemo.datasets.labels import to_index
from avemo.errors import AvemoError

MEMORY_MODES = ("auto", "ram", "mmap")
# z-scores are stored in fp16 (max 65504). A unit that is constant on the train seconds (a dead ReLU: 0 on all
# of them) has std 0; its std is floored at STD_FLOOR × the modality's mean std (and at least 1e-6), and every
# z-score is clamped to ±Z_LIMIT, so a new value there gives a large but finite input, never inf.
STD_FLOOR = 1e-3
Z_LIMIT = 1e4
UNKNOWN_INDEX = -1  # the class index of a label not known (UNKNOWN_LABEL in the cache: valence of some corpora)


@dataclass
class FeatureSet:
    visual: torch.Tensor  # fp16 [seconds, d]
    audio: torch.Tensor  # fp16 [seconds, d]
    offsets: torch.Tensor  # int64 [clips]: row of each clip's first second
    lengths: torch.Tensor  # int64 [clips]: its number of seconds
    labels: torch.Tensor  # int64 [clips], class index of the target trained: arousal 0 calm, 1 neutral, 2 active
    valence: torch.Tensor  # int64 [clips], valence class index 0 negative, 1 neutral, 2 positive; UNKNOWN_INDEX
    clip_ids: np.ndarray  # str [clips]
    split: np.ndarray  # str [clips]
    has_audio: torch.Tensor  # bool [clips]
    groups: np.ndarray  # str [clips], the clip's movie ("" when unknown), for validation splits by movie
    settings: dict  # how the features were made (from the cache manifest)
    identity: str = ""  # features_identity of the cache: what a run and its checkpoints record

    def subset(self, split: str) -> torch.Tensor:
        """Clip numbers of one split."""
        return torch.from_numpy(np.flatnonzero(self.split == split))

    def for_target(self, target: str) -> FeatureSet:
        """The same features (shared, not copied) with `labels` of `target`: arousal (as loaded) or valence."""
        return self if target == "arousal" else replace(self, labels=self.valence)

    def known(self, clips: torch.Tensor) -> torch.Tensor:
        """The clips of `clips` whose label (of this set's target) is known."""
        return clips[self.labels[clips] != UNKNOWN_INDEX]

    def rows(self, clips: torch.Tensor) -> torch.Tensor:
        """Feature rows of `clips`, packed: clip by clip, second by second."""
        lengths = self.lengths[clips]
        starts = torch.cumsum(lengths, 0) - lengths
        clip_of_row = torch.repeat_interleave(torch.arange(len(clips)), lengths)
        return self.offsets[clips][clip_of_row] + torch.arange(int(lengths.sum())) - starts[clip_of_row]

    def batch(
        self, clips: torch.Tensor, device: str = "cpu", modalities: tuple[str, ...] = ("visual", "audio")
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """fp32 packed inputs [N, d] per modality (None for one not in `modalities`: a head that does not read
        it), the lengths [B] and audio mask [B] of `clips`."""
        rows = self.rows(clips)
        visual, audio = (self.gather(name, rows, device) if name in modalities else None for name in ("visual", "audio"))
        return visual, audio, self.lengths[clips].to(device), self.has_audio[clips].to(device)

    def gather(self, modality: str, rows: torch.Tensor, device: str | None = None) -> torch.Tensor:
        """fp32 features of `rows` (any shape) → [*rows.shape, d], moved to `device` (default: where they are)
        before the conversion, so that half the bytes travel."""
        features = getattr(self, modality)
        # index_select: 2.4× faster than features[rows] on CPU (issue 15)
        picked = features.index_select(0, rows.to(features.device).flatten()).view(*rows.shape, -1)
        return picked.to(device or features.device, non_blocking=True).float()

    def to(self, device: str) -> None:
        """Move the feature arrays (not the index) to `device`, e.g. into GPU memory once for all epochs."""
        self.visual, self.audio = self.visual.to(device), self.audio.to(device)


def load_features(cache: str | Path, memory: str = "auto", mmap_dir: str | Path | None = None) -> FeatureSet:
    from avemo.cache import check_cache  # busy or unfinished caches are refused; shards verified when read

    check_cache(cache, "train")
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
    if memory == "mmap":
        if mmap_dir is None:
            raise AvemoError("memory mmap needs a folder for the mapped files")
        _fresh_folder(Path(mmap_dir))
    for name in ("visual", "audio"):
        out = None
        if memory == "mmap":
            shape, dtype = store.seconds_shape(name)
            out = np.lib.format.open_memmap(Path(mmap_dir) / f"{name}.npy", "w+", dtype, shape)
        arrays[name] = torch.from_numpy(store.read_seconds(name, out=out))
        check_finite(name, arrays[name], index, store)
    if memory == "mmap":
        print(f"features: {needed / 1e9:.2f} GB memory-mapped from {mmap_dir}")
    return FeatureSet(
        visual=arrays["visual"],
        audio=arrays["audio"],
        offsets=torch.from_numpy(index["offset"].astype(np.int64)),
        lengths=torch.from_numpy(index["n_seconds"].astype(np.int64)),
        labels=torch.tensor([to_index(a) for a in index["arousal"]], dtype=torch.int64),
        valence=torch.tensor([_class_index(v) for v in index["valence"]], dtype=torch.int64),
        clip_ids=index["clip_id"],
        split=index["split"],
        has_audio=torch.from_numpy(index["has_audio"].astype(bool)),
        groups=index["group"],
        settings=store.settings,
        identity=features_identity(store),
    )


def _class_index(label: int) -> int:
    """A stored label as a class index; UNKNOWN_INDEX for UNKNOWN_LABEL."""
    return UNKNOWN_INDEX if int(label) == UNKNOWN_LABEL else to_index(label)


def features_identity(store: ShardStore) -> str:
    """What makes a feature cache this one: sha256 of its manifest's settings and its shards' sha256s, in order.
    A run records it (run.json, every checkpoint) and never continues on features with another."""
    shards = [entry.get("sha256", entry.get("file")) for entry, _ in store.shards()]
    text = json.dumps({"settings": store.settings, "shards": shards}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_identity(cache: str | Path) -> str:
    """features_identity of CACHE/features, from its manifest only (cheap: no shard is read)."""
    return features_identity(ShardStore(Path(cache) / "features", "features"))


def check_finite(name: str, values: torch.Tensor, index: dict, store: ShardStore, chunk: int = 8192) -> None:
    """Refuse NaN or inf features (chunk by chunk, fp16 as stored), naming the shard, clip and second.

    A chunk's fp32 sum is finite exactly when all its values are (fp16 values cannot overflow an fp32 sum of a
    chunk): twice as fast as isfinite, which runs only on a chunk that fails."""
    for start in range(0, len(values), chunk):
        part = values[start : start + chunk]
        if bool(torch.isfinite(part.sum(dtype=torch.float32))):
            continue
        row = start + int((~torch.isfinite(part)).any(1).nonzero()[0])
        clip = int(np.searchsorted(index["offset"], row, side="right")) - 1
        clip_id = str(index["clip_id"][clip])
        shard = next((path for entry, path in store.shards() if clip_id in entry["clips"]), store.folder)
        raise AvemoError(
            f"{shard}: clip {clip_id}, second {row - int(index['offset'][clip])}: its {name} features are not finite "
            f"(NaN or inf), so no model can be trained on them (were the AlexNet weights finite?); extract the features "
            f"again (delete {store.folder}: decoded media and pool5 are reused)"
        )


def _fresh_folder(folder: Path) -> None:
    """An empty scratch folder of our own (what a killed run left is removed; a planted link is refused)."""
    refuse_link(folder)
    if folder.exists():
        shutil.rmtree(folder)  # never follows links inside it: it removes them
    folder.mkdir(parents=True)


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
            scale = float(std[std > 0].mean()) if bool((std > 0).any()) else 0.0
            floor = max(1e-6, STD_FLOOR * scale)  # relative to the features' scale (module constants)
            stats[f"{name}_mean"], stats[f"{name}_std"] = mean.float(), std.clamp_min(floor).float()
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
        """z-scores of `name` ("visual" or "audio") features, fp32, clamped to ±Z_LIMIT (finite in fp16)."""
        x = x.float()
        if self.stats is None:
            return x
        z = (x - self.stats[f"{name}_mean"].to(x.device)) / self.stats[f"{name}_std"].to(x.device)
        return z.clamp_(-Z_LIMIT, Z_LIMIT)

    def state(self) -> dict | None:
        return None if self.stats is None else {k: v.cpu() for k, v in self.stats.items()}


@dataclass(frozen=True)
class Validation:
    """The trainer's validation clips and what to print about them."""

    clips: torch.Tensor  # int64 clip numbers, sorted
    fraction: float  # as resolved (the cache's when not given)
    seed: int
    line: str  # how many clips and movies, and where the split comes from
    note: str = ""  # a warning to print, e.g. that fine-tuning saw these clips


def validation_clips(data: FeatureSet, fraction: float | None, seed: int | None, cache: str | Path = "CACHE") -> Validation:
    """The validation clips carved from the train split (rules: avemo.datasets.groups.hold_out).

    A cache whose AlexNets were fine-tuned records the split extraction held out of fine-tuning
    (`validation` in the features settings, the ids in FEATURES/validation.json): that split is used; None
    (`fraction`, `seed`) means the cache's, 0 keeps the last epoch, any other split is refused (its clips
    were seen by fine-tuning, so selecting epochs on them would be optimistic). A cache without a record is
    split here, with `fraction` (default 0.1) and `seed` (default 0); when it was fine-tuned all the same (made
    before splits were recorded), `note` says that fine-tuning saw these clips."""
    record = data.settings.get("validation")
    if record is None:
        return _split_here(data, DEFAULT_FRACTION if fraction is None else fraction, 0 if seed is None else seed, cache)
    f = record["fraction"] if fraction is None else fraction
    s = record["seed"] if seed is None else seed
    if f == 0:
        line = "validation: none (validation 0): every train clip is fitted, the last epoch is kept"
        return Validation(torch.zeros(0, dtype=torch.int64), 0.0, s, line)
    if (f, s) != (record["fraction"], record["seed"]):
        _refuse_other_split(record, f, s, cache)
    return _recorded_split(data, record, f, s, Path(cache) / "features")


def _hold_out(data: FeatureSet, fraction: float, seed: int) -> HeldOut:
    """hold_out over the train clips of `data`."""
    train = data.subset("train").numpy()
    return hold_out(
        [str(c) for c in data.clip_ids[train]],
        data.labels[train].tolist(),
        [str(g) for g in data.groups[train]],
        data.has_audio[train].tolist(),
        fraction,
        seed,
    )


def _numbers(data: FeatureSet, ids: tuple[str, ...] | list[str]) -> torch.Tensor:
    """The clip numbers of clip ids, sorted."""
    number = {str(c): i for i, c in enumerate(data.clip_ids)}
    return torch.tensor(sorted(number[c] for c in ids), dtype=torch.int64)


def _split_here(data: FeatureSet, fraction: float, seed: int, cache: str | Path) -> Validation:
    """The split of a cache without a record (a note when it was fine-tuned all the same)."""
    held = _hold_out(data, fraction, seed)
    note = ""
    if held.clips and (data.settings.get("finetune") or {}).get("mode", "none") != "none":
        note = (
            f"note: {cache} was fine-tuned before extraction held a validation split out, so its AlexNets saw "
            f"these {len(held.clips)} validation clips and epoch selection is optimistic; extract again to fix "
            f"it (delete {Path(cache) / 'features'}: decoded media and pool5 are reused)"
        )
    return Validation(_numbers(data, held.clips), fraction, seed, f"validation: {held.describe()}", note)


def _refuse_other_split(record: dict, f: float, s: int, cache: str | Path) -> None:
    """Another split than the one extraction left out of fine-tuning: one line naming the cache's."""
    asked = f"--validation {f:g}" + (f" with seed {s}" if s != record["seed"] else "")
    cached = f"--validation {record['fraction']:g}" + (f" with seed {record['seed']}" if s != record["seed"] else "")
    tuned = (
        f"were fine-tuned on every train clip ({cached} at extraction)"
        if not record["clips"]
        else f"were fine-tuned on every train clip except the {record['clips']} validation clip"
        f"{'s' * (record['clips'] != 1)} fixed at extraction ({cached})"
    )
    raise AvemoError(
        f"{asked}: the AlexNets of {cache} {tuned}, so another split would select epochs on clips they were "
        f"tuned on; give {cached} (the cache's), or --validation 0 to keep the last epoch, or extract again "
        f"with {asked} (delete {Path(cache) / 'features'}: decoded media and pool5 are reused)"
    )


def _recorded_split(data: FeatureSet, record: dict, f: float, s: int, features: Path) -> Validation:
    """The split recorded at extraction: rebuilt by hold_out, or the ids written then (FEATURES/validation.json)
    when these rules give another."""
    held = _hold_out(data, f, s)
    if held.sha256 == record["sha256"]:
        ids, line = held.clips, held.describe()
    else:  # split by another version of the rules: the ids written at extraction
        listed = features / "validation.json"
        ids = json.loads(listed.read_text())["clips"] if listed.is_file() else None
        known = set(map(str, data.clip_ids))
        if ids is None or clips_sha256(ids) != record["sha256"] or any(c not in known for c in ids):
            raise AvemoError(
                f"{features}: the validation split recorded at extraction ({record['clips']} clips) cannot be "
                f"rebuilt{'' if listed.is_file() else f' and {listed} is missing'}; extract again (delete {features}: "
                "decoded media and pool5 are reused)"
            )
        ids, line = tuple(ids), f"{len(ids)} of {len(data.subset('train'))} train clips ({record['method']})"
    where = ", fixed at extraction (fine-tuning never saw them)" if ids else " (at extraction)"
    return Validation(_numbers(data, ids), f, s, f"validation: {line}{where}")
