"""Per-modality AlexNet fine-tuning on the train split (paper: "the method of AlexNet finetune to extract the fc7 layer").

The paper replaces AlexNet's last layer and fine-tunes on the new task with back-propagation, once for key
frames and once for spectrograms; it gives no hyper-parameters. Ours: fc8 becomes a 3-way layer (arousal
calm / neutral / active), every second of a **train** clip is one example labelled with its clip's class
(test clips are never read while tuning), SGD with AlexNet's own momentum 0.9 and weight decay 5e-4.
The validation clips (`validation`, default 10% of the train clips, whole movies where known:
`datasets.groups.hold_out`) are left out too: the trainer selects its epochs on them, which would be
optimistic if the AlexNets had learned them.

Modes (`--finetune`):
- `fc` (default): tune fc6, fc7 and the new fc8 (with AlexNet's dropout) on pool5 activations computed once
  per image and kept in `CACHE/pool5/`. The convolutions are >90% of AlexNet's cost, so an epoch is many
  times cheaper than a full one, and a rerun with other tuning settings skips the convolutions altogether.
- `all`: tune every layer from the cached images (a full forward and backward per image and epoch).
- `none`: no tuning; fc7 of the given weights as they are.

Defaults (our choice, CPU-friendly): 2 epochs, lr 0.001 (Caffe's usual fine-tuning rate), batch 128 (on
CPU a step has a fixed cost of about 0.3 s, reading and updating fc6's 38 M weights, so larger batches
tune more seconds per minute; ~1000 train seconds take ~10 s per modality on 2 cores). Audio
tuning skips clips without an audio stream: their spectrograms are blank and carry no label information.
Tuning runs in fp32; the tuned weights are then rounded to fp16 values (as every AlexNet avemo computes fc7
with, extract.alexnet) before their hash is taken and the features are exported. They are saved as plain fp16
state dicts in `CACHE/models/{visual,audio}.pt` (exact: loadable with `build_alexnet(PATH)`, back to the same
fp32 values), described by `CACHE/models/manifest.json`; a rerun with the same settings and train split
reuses them.

Tuning is a task of the training engine (avemo.train.engine, like the heads and the joint pass): its shuffle
and dropout streams per (seed, epoch), its batches shared between torchrun's ranks. It has no validation (the
last epoch is kept) and no checkpoints: an interrupted extraction tunes again from the start.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from avemo import distributed
from avemo.approaches import MODALITIES, N_CLASSES
from avemo.cache import ShardStore, models
from avemo.cache.images import read_images
from avemo.cache.store import read_shard_index, writable_folder
from avemo.datasets.groups import DEFAULT_FRACTION, HeldOut, hold_out
from avemo.datasets.labels import to_index
from avemo.errors import AvemoError
from avemo.extract.alexnet import Fc7, pool5_features, round_to_fp16_, weights_sha256
from avemo.log import progress
from avemo.train import engine

MODES = ("fc", "all", "none")


@dataclass(frozen=True)
class FinetuneSettings:
    mode: str = "fc"  # fc | all | none (see module docstring)
    epochs: int = 2
    lr: float = 0.001
    batch_size: int = 128
    momentum: float = 0.9  # AlexNet's (Krizhevsky et al., 2012)
    weight_decay: float = 5e-4  # AlexNet's
    seed: int = 0  # fc8 init, shuffling, dropout
    # train clips left out of tuning, kept for the trainer's epoch selection (datasets.groups.hold_out); recorded
    # as the features' `validation` setting, not in record()
    validation: float = DEFAULT_FRACTION
    validation_seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise AvemoError(f"--finetune {self.mode}: must be one of {', '.join(MODES)}")
        if not 0 <= self.validation < 1:
            raise AvemoError(f"--validation {self.validation}: must be a fraction in [0, 1)")

    def record(self) -> dict:
        """What the features depend on: with `none`, the tuning options do not matter."""
        if self.mode == "none":
            return {"mode": "none"}
        return {k: v for k, v in asdict(self).items() if k not in ("validation", "validation_seed")}


def read_media_images(path: Path, name: str, rows: list[int] | np.ndarray | None = None) -> np.ndarray:
    """uint8 images of one media shard (`key_frames` or `spectrograms`), all or the given increasing rows."""
    with h5py.File(path, "r") as f:
        return read_images(f, name, None if rows is None else np.asarray(rows))


def train_rows(
    index: dict[str, np.ndarray], modality: str, exclude: frozenset[str] = frozenset()
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int]]]:
    """Rows (seconds) of one shard that tune `modality`, their class indices (frame label = clip label), and
    their (clip id, second) keys: train clips but the validation clips in `exclude`."""
    keep = (index["split"] == "train") & ~np.isin(index["clip_id"], list(exclude))
    if modality == "audio":
        keep &= index["has_audio"] == 1
    rows, labels, keys = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], []
    for i in np.flatnonzero(keep):
        start, n = int(index["offset"][i]), int(index["n_seconds"][i])
        rows.append(np.arange(start, start + n))
        labels.append(np.full(n, to_index(index["arousal"][i])))
        keys += [(str(index["clip_id"][i]), t) for t in range(n)]
    return np.concatenate(rows), np.concatenate(labels), keys


def _canonical(keys: list[tuple[str, int]]) -> np.ndarray:
    """Example order by clip id and second, so the tuned weights do not depend on how clips fell into shards
    (resumed runs, several ranks)."""
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


def validation_split(media: ShardStore | dict[str, np.ndarray], settings: FinetuneSettings) -> HeldOut:
    """The train clips of the media cache (or of an index like `media.read_index()`'s) that fine-tuning leaves
    out for the trainer's epoch selection."""
    index = media.read_index() if isinstance(media, ShardStore) else media
    train = index["split"] == "train"
    return hold_out(
        [str(c) for c in index["clip_id"][train]],
        [int(a) for a in index["arousal"][train]],
        [str(g) for g in index["group"][train]],
        [bool(h) for h in index["has_audio"][train]],
        settings.validation,
        settings.validation_seed,
    )


def train_split_record(media: ShardStore | dict[str, np.ndarray], exclude: frozenset[str] = frozenset()) -> dict:
    """Identity of the train split: the clips that tune (all but the validation clips in `exclude`; tuned
    weights, and so all features, depend on them) and the held-out ones, so that any train clip added later
    changes it (without held-out clips, the record of caches made before validation splits). `media`: the
    media store, or an index like its `read_index()` (clip_id, arousal, n_seconds, has_audio, split)."""
    index = media.read_index() if isinstance(media, ShardStore) else media
    train = sorted(
        (str(c), int(a), int(n), int(h))
        for c, a, n, h, s in zip(index["clip_id"], index["arousal"], index["n_seconds"], index["has_audio"], index["split"])
        if s == "train" and str(c) not in exclude
    )
    held_out = {"held_out": len(exclude)} if exclude else {}
    digest = hashlib.sha256(json.dumps([train, sorted(exclude)] if exclude else train).encode()).hexdigest()
    return {"clips": len(train), "seconds": sum(t[2] for t in train), **held_out, "sha256": digest}


# -- pool5 ------------------------------------------------------------------------------------------
def export_pool5(
    media: ShardStore, pool5: ShardStore, alexnet: torch.nn.Module, batch_size: int, device: str, spectrogram_input: str
) -> None:
    """pool5 of every image, once: one pool5 shard per media shard, resumable like the other stores."""
    pool5.remove_partial_shards()
    done = pool5.completed_clips()
    media.verify()  # every shard checked (sha256, index) before its images are used
    model = Fc7(alexnet, spectrogram_input).to(device, memory_format=torch.channels_last)
    pending = [(e, p) for e, p in distributed.my_share(media.shards()) if not set(e["clips"]) <= done]
    started, n_seconds = time.perf_counter(), 0
    total = sum(len(e["clips"]) for e, _ in pending)
    with progress(total=total, desc="pool5", unit="clip") as bar:
        for entry, path in pending:
            with h5py.File(path, "r") as f:
                index = read_shard_index(f)
            out = {m: pool5_features(model, read_media_images(path, name), batch_size, device) for m, name in MODALITIES.items()}
            pool5.add_shard(index, out)
            n_seconds += entry["n_seconds"]
            bar.update(len(entry["clips"]))
    print(
        f"{distributed.tag()}pool5: {sum(len(e['clips']) for e, _ in pending)} clips done, {len(done)} already cached; "
        f"{n_seconds} s of video in {time.perf_counter() - started:.1f} s"
    )


def pool5_shard_for(pool5: ShardStore, clips: list[str]) -> Path:
    """The pool5 shard made from the media shard holding exactly `clips`, checked before it is used."""
    for entry, path in pool5.shards():
        if entry["clips"] == clips:
            pool5.verify([(entry, path)])
            return path
    raise AvemoError(f"{pool5.folder}: no pool5 shard for clips {clips[0]}…; delete {pool5.folder} and run again")


# -- tuning -----------------------------------------------------------------------------------------
class _Classifier(torch.nn.Module):
    """What is tuned: [convolutions →] fc6 → fc7 → 3-way fc8, AlexNet's dropout included."""

    def __init__(self, alexnet: torch.nn.Module, from_images: bool, spectrogram_input: str):
        super().__init__()
        self.fc7, self.fc8 = Fc7(alexnet, spectrogram_input), alexnet.classifier[6]
        self.from_images = from_images

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.fc7.fc6_fc7(self.fc7.pool5(x) if self.from_images else x.float()))


class _Tuning:
    """Fine-tuning as a task of the training engine (engine.Task): every train second is an example,
    cross-entropy per example, no validation (the trainer selects its epochs on the held-out clips)."""

    counts_correct = True

    def __init__(self, model: torch.nn.Module, inputs: Callable[[np.ndarray], torch.Tensor], labels: np.ndarray, device: str):
        self.model, self.inputs = model, inputs
        self.targets = torch.from_numpy(labels).to(device)

    def examples(self) -> torch.Tensor:
        return torch.arange(len(self.targets))

    def losses(self, net: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = np.sort(batch.numpy())  # increasing rows read faster from HDF5
        logits = net(self.inputs(positions))
        targets = self.targets[positions]
        return torch.nn.functional.cross_entropy(logits, targets, reduction="none"), (logits.argmax(1) == targets).sum()

    def validate(self) -> dict[str, float]:
        return {}

    def state(self) -> dict:
        return self.model.state_dict()

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state)


def fit(
    net: torch.nn.Module,
    params: list[torch.nn.Parameter],
    inputs: Callable[[np.ndarray], torch.Tensor],
    labels: np.ndarray,
    settings: FinetuneSettings,
    desc: str,
    device: str,
) -> dict:
    """SGD with minibatches and cross-entropy over `len(labels)` examples, `params` trained, run by the training
    engine (no checkpoints: an interrupted extraction tunes again); `inputs(positions)` gives a batch. Returns
    the models manifest's statistics."""
    if not len(labels):
        raise AvemoError(f"fine-tune {desc}: no train seconds in the cache (need clips with split=train)")
    tuned = {id(p) for p in params}
    was = {p: p.requires_grad for p in net.parameters()}
    for p in net.parameters():  # DDP needs every parameter it sees to take part
        p.requires_grad_(id(p) in tuned)
    optimizer = engine.sgd(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    loop = engine.Loop(
        epochs=settings.epochs, batch_size=settings.batch_size, seed=settings.seed, label=f"fine-tune {desc}", keep_grads=True
    )
    started = time.perf_counter()
    try:
        log = engine.fit(_Tuning(net, inputs, labels, device), optimizer, loop).log
    finally:
        for p, flag in was.items():
            p.requires_grad_(flag)
    net.eval()
    return {
        "epochs": settings.epochs,
        "train_seconds": len(labels),
        "loss": [row["train_loss"] for row in log],
        "train_accuracy": log[-1]["train_accuracy"] if log else 0.0,  # last epoch, with dropout
        "seconds": round(time.perf_counter() - started, 1),
    }


def finetune(
    base: torch.nn.Module,
    modality: str,
    media: ShardStore,
    pool5: ShardStore | None,
    settings: FinetuneSettings,
    device: str,
    spectrogram_input: str = "resize",
    exclude: frozenset[str] = frozenset(),
) -> tuple[torch.nn.Module, dict]:
    """A copy of `base` with a 3-way fc8, tuned on the train seconds of one modality (see module docstring),
    the validation clips in `exclude` left out; tuned in fp32, then rounded to fp16 values (extract.alexnet
    `build_alexnet`: one precision everywhere), so its hash and fc7 are those of the fp16 file saved."""
    with torch.random.fork_rng(devices=[]):  # fc8 init and dropout from the seed; the caller's RNG untouched
        torch.manual_seed(settings.seed)
        alexnet = copy.deepcopy(base)
        alexnet.classifier[6] = torch.nn.Linear(alexnet.classifier[4].out_features, N_CLASSES)  # fc7's width
        alexnet.to(device, memory_format=torch.channels_last)
        media.verify()
        if settings.mode == "fc":
            x, labels = _pool5_examples(media, pool5, modality, exclude)
            net, params = _Classifier(alexnet, False, spectrogram_input), list(alexnet.classifier.parameters())
            stats = fit(net, params, lambda p: x[p].to(device), labels, settings, modality, device)
        else:
            images, labels = _image_examples(media, modality, exclude, device)
            net = _Classifier(alexnet, True, spectrogram_input)
            stats = fit(net, list(alexnet.parameters()), images, labels, settings, modality, device)
    return round_to_fp16_(alexnet.cpu().eval(), f"fine-tuned {modality} AlexNet"), stats


def _pool5_examples(
    media: ShardStore, pool5: ShardStore | None, modality: str, exclude: frozenset[str]
) -> tuple[torch.Tensor, np.ndarray]:
    """pool5 [seconds, width] and the class of every second that tunes `modality` (mode fc), in canonical order."""
    pool5_rows, labels, keys = [], [], []
    for entry, _ in media.shards():
        with h5py.File(pool5_shard_for(pool5, entry["clips"]), "r") as f:
            rows, shard_labels, shard_keys = train_rows(read_shard_index(f), modality, exclude)
            if len(rows):
                pool5_rows.append(f[modality][()][rows])  # whole shard, then rows: faster than h5py fancy indexing
        labels.append(shard_labels)
        keys += shard_keys
    order = _canonical(keys)
    x = torch.from_numpy(np.concatenate(pool5_rows)[order] if pool5_rows else np.zeros((0, 1), np.float16))
    return x, np.concatenate(labels)[order]


def _image_examples(
    media: ShardStore, modality: str, exclude: frozenset[str], device: str
) -> tuple[Callable[[np.ndarray], torch.Tensor], np.ndarray]:
    """A reader of the cached images of the seconds that tune `modality` (mode all), by position in canonical
    order, and their classes."""
    where, labels, keys = [], [], []  # (media shard path, row) of every train second
    for _, path in media.shards():
        with h5py.File(path, "r") as f:
            rows, shard_labels, shard_keys = train_rows(read_shard_index(f), modality, exclude)
        where += [(path, r) for r in rows]
        labels.append(shard_labels)
        keys += shard_keys
    order = _canonical(keys)
    where = [where[i] for i in order]

    def images(positions: np.ndarray) -> torch.Tensor:
        picked = [where[p] for p in positions]
        batch: list[np.ndarray] = [None] * len(picked)  # type: ignore[list-item]
        for path in dict.fromkeys(q for q, _ in picked):  # one read per shard, rows increasing
            mine = sorted((r, i) for i, (q, r) in enumerate(picked) if q == path)
            for (_, i), image in zip(mine, read_media_images(path, MODALITIES[modality], [r for r, _ in mine])):
                batch[i] = image
        return torch.from_numpy(np.stack(batch)).to(device)

    return images, np.concatenate(labels)[order]


def tuned_models(
    cache: Path,
    media: ShardStore,
    pool5: ShardStore | None,
    base: torch.nn.Module,
    record: dict,
    settings: FinetuneSettings,
    device: str,
    spectrogram_input: str = "resize",
    exclude: frozenset[str] = frozenset(),
    expected: dict[str, str] | None = None,
) -> dict[str, tuple[torch.nn.Module, str]]:
    """Per modality, the tuned AlexNet and its weights sha256: reused from CACHE/models when it was tuned with
    the same `record` (settings, train split and validation clips), else tuned now (the validation clips in
    `exclude` left out) and saved there. `expected`: the hashes recorded with existing features (tuning is
    deterministic): a re-tuned model that differs is refused before it is saved."""
    folder = writable_folder(cache / "models")
    out = {}
    for modality in MODALITIES:
        path, known = folder / f"{modality}.pt", models.entry(folder, modality, record)
        model = models.load(folder, modality, known["sha256"]) if known else None  # None: tuned (again)
        if model is not None:
            print(f"fine-tune {modality}: reusing {path} (same settings and train split)")
            out[modality] = (model, known["sha256"])
            continue
        model, stats = finetune(base, modality, media, pool5, settings, device, spectrogram_input, exclude)
        sha = weights_sha256(model)
        if expected and expected.get(modality) not in (None, sha):
            features = cache / "features"
            raise AvemoError(
                f"{path}: tuning again gave other weights than those that made {features} (tuned_sha256 "
                f"{expected[modality][:12]}…, now {sha[:12]}…; another machine or library version?); delete {features} to "
                "tune again and export new features (decoded media and pool5 are reused)"
            )
        if distributed.rank() == 0:  # every rank holds the same weights (DDP); one writes them
            models.save(folder, modality, model.state_dict(), sha, record, **stats)
            print(
                f"fine-tune {modality}: {stats['epochs']} epochs on {stats['train_seconds']} train seconds, "
                f"final train loss {stats['loss'][-1]:.4f}, train accuracy {100 * stats['train_accuracy']:.1f}%, "
                f"{stats['seconds']:.1f} s → {path}"
            )
        out[modality] = (model, sha)
    return out
