"""The joint end-to-end pass (DESIGN step 4, "Optional joint pass"): gradients flow again from a trained head
into the two fine-tuned AlexNets, whose inputs come from the media cache (never from the videos).

Start: the head of `RUN/<approach>/model.pt` (or `RUN/<approach>/seed-<s>/model.pt`), its z-score statistics
(kept fixed: the head was trained on fc7 standardised with them), and the per-modality AlexNets of
`CACHE/models/{visual,audio}.pt` (or, for a cache extracted with `--finetune none`, the base AlexNet named in
the features manifest). One step: fc7 of every second of a minibatch of clips → z-score → head → clip logits
→ cross-entropy with the clip labels; SGD updates the head and the backbones together.

Layers (`JointSettings.layers`):
- `fc` (default): fc6 and fc7 are trained, the convolutions stay frozen, so their output, pool5, never
  changes and is read from `CACHE/pool5` (as extraction's fine-tuning mode `fc` does): the convolutions are
  over 90% of AlexNet's cost and are never run. A cache without a usable pool5 store gets pool5 computed
  once, in memory, from the cached images.
- `all`: every layer is trained; key frames and spectrograms are read from `CACHE/media` per batch.
AlexNet's fc8 (its 3-way fine-tuning layer) is not used: the head classifies. It is kept, untouched, in the
saved state dicts so `build_alexnet(PATH)` loads them.

Which clips: the train split minus the validation clips the head's checkpoint lists (`"validation"`); the
test split is never read while training (only for the final predictions). With validation clips, the epoch
with the lowest validation loss is kept (`select`; epoch 0 is the start, so the pass never ends worse on
validation than the head it began from); without, the last.

Defaults (the paper gives none; ours, cited): 3 epochs (the head and backbones are already trained: this pass
adjusts them); head learning rate 0.001, a tenth of the head's own 0.01 (fine-tuning a trained model, as
Caffe's fine-tuning recipe lowers it tenfold); backbone learning rate 0.0001, ten times smaller again
("discriminative" rates: layers far from the loss and trained on more data move less, Howard & Ruder 2018,
ULMFiT); momentum 0.9 for both (AlexNet's and the trainer's); weight decay 5e-4 on the backbones (AlexNet's,
as in extraction's fine-tuning) and none on the head (as the trainer); minibatches of 32 clips (the
trainer's). A backbone learning rate of 0 freezes the backbones (no gradient is computed through them).

Outputs in `RUN/joint/`: settings.json, log.csv (per epoch: train loss, validation accuracy, seconds),
model.pt (the head, with the keys of a head checkpoint: model, norm, settings, validation; plus joint and
alexnets), visual.pt / audio.pt (tuned AlexNet state dicts, `build_alexnet(PATH)` loads them),
predictions.csv (every clip, in the trainer's format). `best.pt` holds the best epoch's trained weights while
the pass runs. `last.pt` is the checkpoint of the last finished
epoch while the pass runs (a rerun with the same settings resumes from it); it is removed at the end.

`export=OUT` writes OUT/features: fc7 (fp16) of every second of every clip from the tuned backbones, one shard
per shard of CACHE/features with the same index, the manifest settings of CACHE/features with
`tuned_sha256` set to the new backbones and a `joint` record. OUT/models holds the tuned AlexNets (so
`avemo predict` on a run trained on OUT finds them) and OUT/media (and, in `fc` mode, OUT/pool5) are symbolic
links to the cache's, which stay valid because the convolutions did not change in `fc` mode.
`avemo train --cache OUT` then reruns head experiments on the new features.

Under torchrun (`avemo.distributed`): DistributedDataParallel over the backbones and the head (gloo on
CPU, NCCL on GPUs); every rank takes every world-th clip of each global batch, and the loss is scaled so the
averaged gradient is that of the whole batch. Predictions and export are shared by shards; rank 0 writes the
run's files. Docs: docs/joint.md.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from avemo import distributed
from avemo.atomic import ensure_dir, load_torch, read_json, save_torch, write_json, write_text
from avemo.cache import ShardStore, read_images
from avemo.cache.store import read_shard_index
from avemo.datasets.labels import to_index
from avemo.errors import AvemoError
from avemo.extract.alexnet import FC7_DIM, Fc7, feature_alexnets, spectrogram_input_of, weights_sha256
from avemo.train.data import Z_LIMIT, cache_identity
from avemo.train.heads import EmotionHead, head_settings_of, load_head
from avemo.train.trainer import check_run_cache, class_weights, run_cache, sgd, supervised_losses, write_predictions

LAYERS = ("fc", "all")
MODALITIES = {"visual": "key_frames", "audio": "spectrograms"}  # modality → media dataset
UNTUNABLE = ("late",)  # late fusion averages two heads' probabilities: there is no single head to tune
INFER_SECONDS = 256  # seconds per forward pass when predicting and exporting


@dataclass(frozen=True)
class JointSettings:
    """Options of the joint pass (defaults and why: module docstring)."""

    layers: str = "fc"  # fc: fc6 and fc7 trained on cached pool5 | all: every layer, from the cached images
    epochs: int = 3
    lr: float = 0.001  # head
    backbone_lr: float = 0.0001  # AlexNets; 0 freezes them
    momentum: float = 0.9
    backbone_weight_decay: float = 5e-4
    batch_size: int = 32  # clips
    select: str = "loss"  # keep the epoch (0 = the start) with the lowest validation loss, or the last
    seed: int = 0
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")

    def __post_init__(self) -> None:
        if self.layers not in LAYERS:
            raise AvemoError(f"joint layers {self.layers!r}: must be one of {', '.join(LAYERS)}")
        if self.select not in ("loss", "last"):
            raise AvemoError(f"joint select {self.select!r}: must be loss or last")
        if self.epochs < 0 or self.batch_size < 1 or self.lr < 0 or self.backbone_lr < 0:
            raise AvemoError("joint pass: epochs ≥ 0, batch size ≥ 1 and learning rates ≥ 0, please")

    def record(self) -> dict:
        """What the result depends on (the device does not)."""
        return {k: v for k, v in asdict(self).items() if k != "device"}


# -- what is tuned ----------------------------------------------------------------------------------
class JointModel(nn.Module):
    """Backbones (fc6-fc7 on pool5, or whole AlexNets on images) → fixed z-score → the head."""

    def __init__(self, backbones: dict[str, nn.Module], head: EmotionHead, norm: dict | None, from_images: bool):
        super().__init__()
        self.backbones = nn.ModuleDict(backbones)  # only the modalities the head reads
        self.head = head
        self.from_images = from_images
        for name in ("visual", "audio"):
            mean = torch.zeros(FC7_DIM) if norm is None else norm[f"{name}_mean"].float()
            std = torch.ones(FC7_DIM) if norm is None else norm[f"{name}_std"].float()
            self.register_buffer(f"{name}_mean", mean.clone())
            self.register_buffer(f"{name}_std", std.clone())

    def train(self, mode: bool = True) -> JointModel:
        """Training mode for the head (its dropout) only: AlexNet's dropout stays off, because the head learned
        on deterministic fc7 z-scored with fixed statistics (with it on, the demo's test accuracy fell from 100%
        to 29% in 3 epochs)."""
        super().train(mode)
        self.backbones.eval()
        return self

    def fc7(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """fp32 post-ReLU fc7 [n, 4096] of pool5 rows (fp16) or uint8 images."""
        net = self.backbones[modality]
        return net(x) if self.from_images else net(x.float())

    def zscore(self, modality: str, fc7: torch.Tensor) -> torch.Tensor:
        """As the trainer's Standardiser: clamped to ±Z_LIMIT (a unit dead on the train seconds stays finite)."""
        z = (fc7 - getattr(self, f"{modality}_mean")) / getattr(self, f"{modality}_std")
        return z.clamp(-Z_LIMIT, Z_LIMIT)

    def forward(
        self, inputs: dict[str, torch.Tensor], lengths: torch.Tensor, audio_mask: torch.Tensor, per_step: bool = False
    ) -> torch.Tensor:
        z = {m: self.zscore(m, self.fc7(m, x)) for m, x in inputs.items()}
        return head_logits(self.head, z, lengths, audio_mask, per_step)


def head_logits(
    head: EmotionHead, z: dict[str, torch.Tensor], lengths: torch.Tensor, audio_mask: torch.Tensor, per_step: bool = False
) -> torch.Tensor:
    """The head on packed per-second rows (clip 0's seconds, then clip 1's, …): the one place that speaks the
    head's input convention. A modality the head does not read is passed as zeros."""
    some = next(iter(z.values()))
    visual = z.get("visual", torch.zeros_like(some))
    audio = z.get("audio", torch.zeros_like(some))
    return head(visual, audio, lengths.to(some.device), audio_mask=audio_mask.to(some.device), per_step=per_step)


# -- the cache --------------------------------------------------------------------------------------
@dataclass
class _Shard:
    features: Path
    media: Path
    pool5: Path | None
    index: dict[str, np.ndarray]


@dataclass
class _Clips:
    """Every clip of CACHE/features, in its order, and where its seconds are."""

    ids: np.ndarray  # str
    split: np.ndarray  # str
    labels: torch.Tensor  # int64 class index
    has_audio: torch.Tensor  # bool
    lengths: torch.Tensor  # int64
    shard: np.ndarray  # int: position in `shards`
    offset: np.ndarray  # int64: first row in that shard
    shards: list[_Shard]

    def numbers(self, ids: set[str] | None = None, split: str | None = None) -> torch.Tensor:
        keep = np.ones(len(self.ids), bool)
        if ids is not None:
            keep &= np.isin(self.ids, list(ids))
        if split is not None:
            keep &= self.split == split
        return torch.from_numpy(np.flatnonzero(keep))


def _read_clips(cache: Path, use_pool5: bool) -> _Clips:
    features = ShardStore(cache / "features", "features")
    media = {tuple(e["clips"]): p for e, p in ShardStore(cache / "media", "media").shards()}
    pool5 = {tuple(e["clips"]): p for e, p in ShardStore(cache / "pool5", "pool5").shards()} if use_pool5 else {}
    shards, parts = [], []
    for number, (entry, path) in enumerate(features.shards()):
        key = tuple(entry["clips"])
        if key not in media:
            raise AvemoError(f"{cache / 'media'}: no media shard for the clips of {path}; the cache is incomplete")
        with h5py.File(path, "r") as f:
            index = read_shard_index(f)
        shards.append(_Shard(path, media[key], pool5.get(key), index))
        parts.append((index, np.full(len(index["clip_id"]), number)))
    if not shards:
        raise AvemoError(f"{cache / 'features'}: no features shards here; run `avemo extract` first")
    cat = {
        k: np.concatenate([p[0][k] for p in parts]) for k in ("clip_id", "split", "arousal", "has_audio", "n_seconds", "offset")
    }
    return _Clips(
        ids=cat["clip_id"],
        split=cat["split"],
        labels=torch.tensor([to_index(a) for a in cat["arousal"]], dtype=torch.int64),
        has_audio=torch.from_numpy(cat["has_audio"].astype(bool)),
        lengths=torch.from_numpy(cat["n_seconds"].astype(np.int64)),
        shard=np.concatenate([p[1] for p in parts]),
        offset=cat["offset"].astype(np.int64),
        shards=shards,
    )


class _Inputs:
    """Per-second backbone inputs: pool5 rows (mode fc; those of the training clips held in memory) or images."""

    def __init__(self, clips: _Clips, modalities: list[str], from_images: bool, convs: dict[str, Fc7], device: str):
        self.clips, self.modalities, self.from_images, self.convs, self.device = clips, modalities, from_images, convs, device
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
            mine = chosen[self.clips.shard[chosen] == s]
            shard_pool5 = {m: self.shard_pool5(int(s), m) for m in self.modalities}
            for c in mine:
                o, n = int(self.clips.offset[c]), int(self.clips.lengths[c])
                for m in self.modalities:
                    rows[m].append(shard_pool5[m][o : o + n])
                self.start[c] = at
                at += n
        self.memory = {m: torch.from_numpy(np.concatenate(v)) for m, v in rows.items()}

    def batch(self, numbers: torch.Tensor) -> dict[str, torch.Tensor]:
        """Packed inputs of these clips (clip by clip, seconds in order), per modality."""
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
        return _batched(self.convs[modality].pool5, images, self.device).half().numpy()


@torch.inference_mode()
def _batched(fn, inputs: np.ndarray, device: str, size: int = INFER_SECONDS) -> torch.Tensor:
    """fn over inputs in batches of seconds → fp32 CPU tensor."""
    out = [fn(torch.from_numpy(inputs[i : i + size]).to(device)).float().cpu() for i in range(0, len(inputs), size)]
    return torch.cat(out) if out else torch.zeros(0, FC7_DIM)


# -- loading the start ------------------------------------------------------------------------------
def head_checkpoint(run: Path, approach: str, seed: int | None) -> Path:
    """RUN/<approach>/model.pt, or RUN/<approach>/seed-<seed>/model.pt; one clear line when there is none."""
    if approach in UNTUNABLE:
        raise AvemoError(
            f"approach {approach}: late fusion has no single head to tune jointly; use modal, early, visual or audio"
        )
    folder = run / approach
    seeds = sorted(int(p.parent.name[5:]) for p in folder.glob("seed-*/model.pt") if p.parent.name[5:].lstrip("-").isdigit())
    if seed is not None:
        path = folder / f"seed-{seed}" / "model.pt"
        if path.is_file():
            return path
        if seed in ([] if not (folder / "model.pt").is_file() else [_saved_seed(folder / "model.pt")]):
            return folder / "model.pt"
        have = f"it holds seeds {', '.join(map(str, seeds))}" if seeds else "no seed folders there"
        raise AvemoError(f"{path}: no trained head for seed {seed} ({have})")
    if (folder / "model.pt").is_file():
        return folder / "model.pt"
    if seeds:
        raise AvemoError(
            f"{folder}: trained with {len(seeds)} seeds ({', '.join(map(str, seeds))}); choose the head to tune with its seed"
        )
    raise AvemoError(f"{folder / 'model.pt'}: no trained head here; train it first with `avemo train --approach {approach}`")


def _saved_seed(path: Path) -> int | None:
    settings = path.parent / "settings.json"
    if not settings.is_file():
        return None
    return read_json(settings, f"delete {path.parent} and train it again with `avemo train`").get("seed")


def load_fc7_head(path: Path) -> tuple[EmotionHead, dict]:
    head, saved = load_head(path)
    if head_settings_of(saved).feature_dim != FC7_DIM:
        raise AvemoError(
            f"{path}: this head reads {head_settings_of(saved).feature_dim}-d features, not AlexNet's fc7 ({FC7_DIM})"
        )
    return head, saved


# -- the pass ---------------------------------------------------------------------------------------
def joint_train(
    cache: str | Path | None,
    run: str | Path,
    settings: JointSettings = JointSettings(),
    approach: str = "modal",
    export: str | Path | None = None,
    seed: int | None = None,
) -> Path:
    """Tune the head of RUN/<approach> (seed folder `seed` for a multi-seed run) and the AlexNets of `cache`
    (None: the cache named in RUN/run.json) end to end; write RUN/joint/ and, with `export`, EXPORT/features.
    Returns RUN/joint. Under torchrun every rank calls this."""
    run = Path(run)
    distributed.init_from_env()
    rank, world = distributed.rank(), distributed.world()
    device = distributed.device_for(settings.device)
    if cache is None:
        cache = run_cache(run)
    elif (run / "run.json").exists():  # RUN/joint beside heads of another cache would mix two caches in one run
        check_run_cache(run, cache)
    cache = Path(cache)
    identity = cache_identity(cache)
    from avemo.cache import check_cache  # busy or unfinished caches are refused; every shard verified

    check_cache(cache, "the joint pass", verify=("features", "pool5", "media"))
    out = run / "joint"
    head_path = head_checkpoint(run, approach, seed)
    head, saved = load_fc7_head(head_path)
    if saved.get("cache_sha256") not in (None, identity) and rank == 0:
        print(f"joint: note: the head {head_path} was trained on other features than those of {cache}")
    features = ShardStore(cache / "features", "features").settings
    if not features:
        raise AvemoError(f"{cache / 'features'}: no feature manifest; run `avemo extract` first")
    alexnets, source_hashes = feature_alexnets(cache, features)
    from_images = settings.layers == "all"
    mode = (features.get("finetune") or {}).get("mode", "none")
    pool5_settings = ShardStore(cache / "pool5", "pool5").settings if (cache / "pool5").is_dir() else {}
    # cached pool5 is valid only if made by the very convolutions being used: mode fc keeps the base's
    use_pool5 = not from_images and mode == "fc" and pool5_settings.get("weights_sha256") == features.get("weights_sha256")
    clips = _read_clips(cache, use_pool5)
    if export is not None and Path(export).resolve() == cache.resolve():
        raise AvemoError(f"export folder {export}: must not be the cache itself (its features would be replaced)")

    used = _modalities_of(head.approach)
    torch.manual_seed(settings.seed)
    for alexnet in alexnets.values():
        alexnet.to(device, memory_format=torch.channels_last)
    fit = spectrogram_input_of(features)
    backbones = {m: (Fc7(alexnets[m], fit) if from_images else alexnets[m].classifier[:6]) for m in used}
    model = JointModel(backbones, head, saved.get("norm"), from_images).to(device)
    backbone_params = [p for net in backbones.values() for p in net.parameters()]
    if settings.backbone_lr == 0:
        for p in backbone_params:
            p.requires_grad_(False)  # frozen: no gradient is computed through them at all
    convs = {m: Fc7(a, fit).eval() for m, a in alexnets.items()}
    inputs = _Inputs(clips, used, from_images, convs, device)

    validation_ids = set(map(str, saved.get("validation") or [])) & set(clips.ids)
    train_ids = set(clips.ids[clips.split == "train"]) - validation_ids
    if head.approach == "audio":  # as the trainer: a clip without sound teaches the audio model nothing
        train_ids -= set(clips.ids[~clips.has_audio.numpy()])
    if not train_ids:
        raise AvemoError(f"{cache}: no train clips to tune on")
    record = {
        "settings": settings.record(),
        "head": str(head_path.resolve()),
        "head_sha256": _state_sha256(saved["model"]),
        "cache": str(cache.resolve()),
        "cache_sha256": identity,
        "alexnets_sha256": source_hashes,
        "train_clips": len(train_ids),
        "validation_clips": len(validation_ids),
    }
    groups = [{"params": [p for p in head.parameters() if p.requires_grad], "lr": settings.lr, "weight_decay": 0.0}]
    if settings.backbone_lr > 0:
        groups.append({"params": backbone_params, "lr": settings.backbone_lr, "weight_decay": settings.backbone_weight_decay})
    optimizer = sgd(groups, lr=settings.lr, momentum=settings.momentum)

    if export is not None:  # refuse a foreign OUT/features before training, not after
        existing = ShardStore(Path(export) / "features", "features")
        joint_record = _export_settings(features, record, source_hashes)["joint"]
        if existing.shards() and existing.settings.get("joint") != joint_record:
            raise AvemoError(
                f"{existing.folder}: holds features of another cache or joint pass; choose another export folder or delete it"
            )
    head_training = saved["settings"]
    weights = class_weights(clips.labels[clips.numbers(train_ids)], head_training.get("class_weights", "none"), device)
    objective = (head_training.get("supervise", "last"), weights)
    log, first = _resume(out, record, model, optimizer, rank)
    # canonical order (by clip id) so the result does not depend on how clips fell into shards or ranks
    train_clips = _sorted_by_id(clips, clips.numbers(train_ids))
    validation = _sorted_by_id(clips, clips.numbers(validation_ids))
    if first < settings.epochs:
        inputs.preload(torch.cat([train_clips, validation]))
    net = model
    if world > 1:
        ids = [torch.cuda.current_device()] if device.startswith("cuda") else None
        # every rank loaded the same verified weights: no 0.5 GB broadcast at start; the buffers are constants
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids, init_sync=False, broadcast_buffers=False)
    if rank == 0:
        ensure_dir(out, under=run)
        settings_json = {**asdict(settings), "source": record, "head": asdict(head_settings_of(saved))}
        write_json(out / "settings.json", settings_json)
    selecting = settings.select == "loss" and len(validation) > 0 and settings.epochs > 0
    if selecting and first == 0:  # the start is a candidate too: the pass never ends worse on validation
        val_loss, accuracy = _validate(model, inputs, clips, validation)
        log.append({"epoch": 0, "train_loss": "", "validation_loss": round(val_loss, 6)})
        log[-1] |= {"validation_accuracy": round(accuracy, 6), "seconds": 0.0}
        if rank == 0:
            save_torch(_trainable_state(model), out / "best.pt")
    for epoch in range(first, settings.epochs):
        started = time.perf_counter()
        loss = _train_epoch(net, inputs, clips, train_clips, optimizer, settings, objective, epoch, device)
        val_loss, accuracy = _validate(model, inputs, clips, validation) if len(validation) else (None, None)
        if selecting and rank == 0 and epoch + 1 < settings.epochs and round(val_loss, 6) < _best(log)["validation_loss"]:
            save_torch(_trainable_state(model), out / "best.pt")  # (the last epoch's weights are in memory anyway)
        log.append(
            {
                "epoch": epoch + 1,
                "train_loss": round(loss, 6),
                "validation_loss": "" if val_loss is None else round(val_loss, 6),
                "validation_accuracy": "" if accuracy is None else round(accuracy, 6),
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        if rank == 0:
            if epoch + 1 < settings.epochs:  # the last epoch's result is written as the outputs right below
                _save_checkpoint(out, record, model, optimizer, log)
            _write_log(out / "log.csv", log)
            note = "" if accuracy is None else f", validation accuracy {100 * accuracy:.2f}%"
            print(f"joint epoch {epoch + 1}/{settings.epochs}: train loss {loss:.4f}{note}, {log[-1]['seconds']:.1f} s")
        distributed.barrier()
    inputs.memory = {}  # the training rows are no longer needed
    kept = _best(log)["epoch"] if selecting else settings.epochs
    if kept != settings.epochs:
        distributed.barrier()
        best = load_torch(out / "best.pt", f"delete {out} and run the joint pass again")
        _load_trainable(model, best, out / "best.pt", f"delete {out} and run the joint pass again")
    if selecting and rank == 0:
        print(f"joint: kept epoch {kept} of {settings.epochs} (lowest validation loss; 0 = the trained head as it was)")

    tuned = {m: m in used and settings.backbone_lr > 0 and settings.epochs > 0 for m in MODALITIES}
    hashes = {m: weights_sha256(a) if tuned[m] else source_hashes[m] for m, a in alexnets.items()}
    if rank == 0:  # the trained weights first: a kill during prediction or export loses no training
        for m, alexnet in alexnets.items():
            save_torch({k: v.cpu() for k, v in alexnet.state_dict().items()}, out / f"{m}.pt")
        head_state = {
            "model": {k: v.cpu() for k, v in head.state_dict().items()},
            "norm": saved.get("norm"),
            "settings": saved["settings"],
            "validation": sorted(validation_ids),
            "epoch": kept,
            "cache_sha256": identity,  # the features the pass tuned and predicted on (predict checks them)
            "joint": asdict(settings),
            "alexnets": {m: {"file": f"{m}.pt", "sha256": h} for m, h in hashes.items()},
        }
        save_torch(head_state, out / "model.pt")
    probabilities = _predict_and_export(model, inputs, clips, export, features, record, hashes, used)
    if rank == 0:
        write_predictions(out / "predictions.csv", _Rows(clips.ids, clips.split, clips.labels), probabilities)
        _write_log(out / "log.csv", log)
        if export is not None:
            _export_extras(cache, Path(export), out, record, use_pool5, features, hashes)
        for name in ("last.pt", "best.pt"):
            (out / name).unlink(missing_ok=True)
        test = clips.numbers(split="test").numpy()
        if len(test):
            accuracy = (probabilities[test].argmax(1) == clips.labels[test].numpy()).mean()
            print(f"joint ({approach}): test accuracy {100 * accuracy:.2f}% on {len(test)} clips → {out}")
    distributed.barrier()
    return out


@dataclass
class _Rows:
    """What trainer.write_predictions reads of a FeatureSet."""

    clip_ids: np.ndarray
    split: np.ndarray
    labels: torch.Tensor


def _modalities_of(approach: str) -> list[str]:
    return {"visual": ["visual"], "audio": ["audio"]}.get(approach, ["visual", "audio"])


def _sorted_by_id(clips: _Clips, numbers: torch.Tensor) -> torch.Tensor:
    return numbers[torch.from_numpy(np.argsort(clips.ids[numbers.numpy()], kind="stable"))]


def _state_sha256(state: dict) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(state.items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _train_epoch(
    net: nn.Module,
    inputs: _Inputs,
    clips: _Clips,
    order_clips: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    settings: JointSettings,
    objective: tuple[str, torch.Tensor | None],
    epoch: int,
    device: str,
) -> float:
    """One pass of SGD over the training clips; returns the mean train loss (over all ranks). `objective`:
    the head's own (supervision at the last second or every second, class weights or none)."""
    rank, world = distributed.rank(), distributed.world()
    # seeded per epoch (and rank, for dropout): a resumed run draws exactly what an uninterrupted one would
    draw = settings.seed * 100_003 + epoch
    order = order_clips[torch.randperm(len(order_clips), generator=torch.Generator().manual_seed(draw))]
    torch.manual_seed(draw * 1009 + rank)
    net.train()
    total, seen = 0.0, 0
    batches = [b for b in order.split(settings.batch_size) if len(b) >= world]
    with tqdm(batches, desc=f"joint {epoch + 1}/{settings.epochs}", unit="batch", leave=False, disable=rank > 0) as bar:
        for batch in bar:
            mine = batch[rank::world]
            losses = _clip_losses(net, inputs, clips, mine, objective, device)
            # DDP averages gradients over ranks: sum / |global batch| · world makes that the global batch mean
            loss = losses.sum() * (world / len(batch))
            optimizer.zero_grad(set_to_none=False)  # reuse gradient buffers (fc6 alone is 150 MB)
            loss.backward()
            optimizer.step()
            total += float(losses.detach().sum())
            seen += len(mine)
            bar.set_postfix(loss=f"{total / max(seen, 1):.4f}")
    if world > 1:
        sums = torch.tensor([total, seen], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(sums)
        total, seen = sums[0].item(), int(sums[1].item())
    return total / max(seen, 1)


def _clip_losses(
    net: nn.Module, inputs: _Inputs, clips: _Clips, mine: torch.Tensor, objective: tuple, device: str
) -> torch.Tensor:
    """Cross-entropy per clip, as the trainer computes it for the head (trainer.supervised_losses)."""
    supervise, weights = objective
    lengths, labels = clips.lengths[mine].to(device), clips.labels[mine].to(device)
    batch, has_audio = inputs.batch(mine), clips.has_audio[mine]
    return supervised_losses(
        lambda per_step: net(batch, lengths, has_audio, per_step=per_step), lengths, labels, supervise, weights
    )


@torch.inference_mode()
def _validate(model: JointModel, inputs: _Inputs, clips: _Clips, numbers: torch.Tensor) -> tuple[float, float]:
    """Mean loss and accuracy on these clips (each rank its share, summed over ranks)."""
    model.eval()
    mine = distributed.my_share(numbers)
    loss, correct = 0.0, 0
    for batch in mine.split(64) if len(mine) else []:  # (an empty tensor splits into one empty part)
        logits = model(inputs.batch(batch), clips.lengths[batch], clips.has_audio[batch]).cpu()
        loss += float(nn.functional.cross_entropy(logits, clips.labels[batch], reduction="sum"))
        correct += int((logits.argmax(1) == clips.labels[batch]).sum())
    sums = torch.tensor([loss, correct, len(mine)], dtype=torch.float64)
    if distributed.world() > 1:
        sums = sums.to(next(model.parameters()).device)
        torch.distributed.all_reduce(sums)
    n = max(float(sums[2]), 1.0)
    return float(sums[0]) / n, float(sums[1]) / n


@torch.inference_mode()
def _predict_and_export(
    model: JointModel,
    inputs: _Inputs,
    clips: _Clips,
    export: str | Path | None,
    features: dict,
    record: dict,
    hashes: dict[str, str],
    used: list[str],
) -> np.ndarray:
    """Class probabilities of every clip (returned on rank 0) and, with `export`, the new fc7 shards; the
    shards are shared between ranks."""
    model.eval()
    rank = distributed.rank()
    store = None
    if export is not None:
        store = ShardStore(Path(export) / "features", "features", writer=rank)
        store.check_settings(_export_settings(features, record, hashes))
        store.remove_partial_shards()
    done = store.completed_clips() if store is not None else set()
    probabilities = {}
    mine = distributed.my_share(list(range(len(clips.shards))))
    started, n_seconds = time.perf_counter(), 0
    for s in tqdm(mine, desc="joint predict", unit="shard", disable=rank > 0):
        shard = clips.shards[s]
        fc7 = {}
        for m in MODALITIES:
            if m in used:
                fc7[m] = _batched(lambda x, m=m: model.fc7(m, x), inputs.shard_inputs(s, m), inputs.device)
            elif store is not None:  # untouched backbone: its features are the cache's, exactly
                with h5py.File(shard.features, "r") as f:
                    fc7[m] = torch.from_numpy(f[m][()]).float()
        numbers = torch.from_numpy(np.flatnonzero(clips.shard == s))
        z = {m: model.zscore(m, fc7[m].to(inputs.device)) for m in used}
        for batch in numbers.split(256):
            lengths = clips.lengths[batch]
            rows = torch.cat([torch.arange(int(clips.offset[c]), int(clips.offset[c]) + int(clips.lengths[c])) for c in batch])
            logits = head_logits(model.head, {m: v[rows.to(v.device)] for m, v in z.items()}, lengths, clips.has_audio[batch])
            for c, p in zip(batch.tolist(), torch.softmax(logits, 1).cpu().numpy()):  # eq. 12
                probabilities[c] = p
        if store is not None and not set(shard.index["clip_id"]) <= done:
            store.add_shard(shard.index, {m: fc7[m].half().numpy() for m in MODALITIES})
        n_seconds += int(shard.index["n_seconds"].sum())
    if distributed.world() > 1:
        parts: list[dict] = [None] * distributed.world()  # type: ignore[list-item]
        torch.distributed.all_gather_object(parts, probabilities)
        probabilities = {c: p for part in parts for c, p in part.items()}
    what = "predict and export" if store is not None else "predict"
    print(f"{distributed.tag()}joint {what}: {n_seconds} s of video in {time.perf_counter() - started:.1f} s")
    return np.stack([probabilities[c] for c in range(len(clips.ids))])


def _export_settings(features: dict, record: dict, hashes: dict[str, str]) -> dict:
    joint = {k: record[k] for k in ("settings", "head", "head_sha256", "alexnets_sha256", "train_clips", "validation_clips")}
    return json.loads(json.dumps({**features, "tuned_sha256": hashes, "joint": joint}))


def _export_extras(cache: Path, export: Path, out: Path, record: dict, pool5: bool, features: dict, hashes: dict) -> None:
    """OUT/models (the tuned AlexNets, hard links to RUN/joint's where possible) and links to the cache's media
    (and, mode fc, pool5: the convolutions did not change)."""
    models = export / "models"
    models.mkdir(parents=True, exist_ok=True)
    for m in MODALITIES:
        target = models / f"{m}.pt"
        target.unlink(missing_ok=True)
        try:
            os.link(out / f"{m}.pt", target)
        except OSError:  # another file system
            shutil.copyfile(out / f"{m}.pt", target)
    manifest = {
        "schema_version": 1,
        "kind": "models",
        "settings": _export_settings(features, record, hashes),
        "models": {m: {"file": f"{m}.pt", "sha256": h} for m, h in hashes.items()},
    }
    write_json(models / "manifest.json", manifest)
    links = ["media"] + (["pool5"] if pool5 else [])  # pool5 only when the pass read it: convolutions unchanged
    for name in links:
        link = export / name
        if not link.exists() and not link.is_symlink():
            link.symlink_to((cache / name).resolve(), target_is_directory=True)


# -- checkpoints ------------------------------------------------------------------------------------
def _resume(out: Path, record: dict, model: JointModel, optimizer: torch.optim.Optimizer, rank: int) -> tuple[list, int]:
    """(log so far, first epoch to run): from RUN/joint/last.pt when it was made with the same settings."""
    path = out / "last.pt"
    if not path.is_file():
        return [], 0
    remedy = f"delete {path} to start the joint pass again"
    saved = load_torch(path, remedy)  # random bytes or a foreign pickle: one line, never torch's advice
    if saved.get("record") != json.loads(json.dumps(record)):
        if rank == 0:
            print(f"joint: {path} was made with other settings or inputs; starting again")
        return [], 0
    _load_trainable(model, saved, path, remedy)
    try:
        optimizer.load_state_dict(saved["optimizer"])
        log = saved["log"]
        log[-1]["epoch"]
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError):
        raise AvemoError(f"{path}: not a checkpoint written by the joint pass; {remedy}") from None
    if rank == 0:
        print(f"joint: resuming after epoch {log[-1]['epoch']} from {path}")
    return log, log[-1]["epoch"]


def _load_trainable(model: JointModel, saved: dict, path: Path, remedy: str) -> None:
    try:
        model.load_state_dict(saved["model"], strict=False)
    except (KeyError, TypeError, RuntimeError, AttributeError):
        raise AvemoError(f"{path}: not a checkpoint written by the joint pass; {remedy}") from None


def _save_checkpoint(out: Path, record: dict, model: JointModel, optimizer: torch.optim.Optimizer, log: list) -> None:
    state = {"record": json.loads(json.dumps(record)), "optimizer": optimizer.state_dict(), "log": log}
    save_torch(_trainable_state(model) | state, out / "last.pt")


def _trainable_state(model: JointModel) -> dict:
    """{"model": state dict} without the frozen backbone weights (they are the cache's: not saved again)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {"model": {k: v for k, v in model.state_dict().items() if not k.startswith("backbones.") or k in trainable}}


def _best(log: list[dict]) -> dict:
    """The row of the lowest validation loss, the earliest among equals."""
    return min((r for r in log if r["validation_loss"] != ""), key=lambda r: (r["validation_loss"], r["epoch"]))


def _write_log(path: Path, log: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["epoch", "train_loss", "validation_loss", "validation_accuracy", "seconds"])
    writer.writeheader()
    writer.writerows(log)
    write_text(path, text.getvalue())
