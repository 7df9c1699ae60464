"""The joint pass itself (`joint_train`): load and check what it starts from, build the model, run it as a task
of the one training engine (avemo.train.engine), then write RUN/joint/ and, with `export`, OUT/."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from avemo import distributed, runfolder
from avemo.atomic import ensure_dir, save_torch, write_json, write_text
from avemo.cache import ShardStore, check_cache
from avemo.cache.models import fp16_state
from avemo.errors import AvemoError
from avemo.extract.alexnet import fc7_width, round_to_fp16_, spectrogram_input_of, weights_sha256
from avemo.extract.embed import Embedder, feature_alexnets, finetune_mode
from avemo.train.data import cache_identity
from avemo.train.engine import Checkpoints, Loop, fit, sgd
from avemo.train.heads import EmotionHead, head_settings_of
from avemo.train.joint.clips import Clips, Inputs, read_clips
from avemo.train.joint.export import check_export, export_extras, export_settings, open_export, predict_and_export
from avemo.train.joint.model import JointModel, joint_model, load_fc7_head
from avemo.train.joint.task import JointTask
from avemo.train.settings import JointSettings
from avemo.train.trainer import class_weights

INFER_SECONDS = 256  # seconds per forward pass of the embedder (pool5 where not cached, predictions, export)
LOG_COLUMNS = ("epoch", "train_loss", "validation_loss", "validation_accuracy", "seconds")  # RUN/joint/log.csv


@dataclass
class Start:
    """What the pass starts from, checked: the cache, its features' settings and AlexNets, the head."""

    cache: Path
    identity: str  # cache_sha256 of its features
    head_path: Path
    head: EmotionHead
    saved: dict  # the head's checkpoint
    features: dict  # CACHE/features' manifest settings
    alexnets: dict[str, torch.nn.Module]
    hashes: dict[str, str]  # the AlexNets' weights_sha256 as loaded
    use_pool5: bool  # layers fc on a usable CACHE/pool5
    clips: Clips


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
    run, export = Path(run), None if export is None else Path(export)
    distributed.init_from_env()
    device = distributed.device_for(settings.device)
    start = load_start(cache, run, settings, approach, seed)
    if export is not None and export.resolve() == start.cache.resolve():
        raise AvemoError(f"export folder {export}: must not be the cache itself (its features would be replaced)")
    model, embedder, inputs = build(start, settings, device)
    train_ids, validation_ids = fitting(start)
    record = make_record(settings, start, train_ids, validation_ids)
    if export is not None:  # refuse a foreign OUT/features before training, not after
        check_export(export, start.features, record, start.hashes)
    objective = _objective(start, train_ids, device)
    task = JointTask(model, inputs, start.clips.by_id(train_ids), start.clips.by_id(validation_ids), objective)
    out = run / "joint"
    if distributed.rank() == 0:
        runfolder.add_predictions(run, [f"{runfolder.JOINT}/{runfolder.PREDICTIONS}"])
    kept = _tune(task, settings, out, record, start)
    hashes = _save_model(out, model, start, settings, kept, validation_ids)
    exported = export_settings(start.features, record, hashes)
    probabilities = predict_and_export(model, inputs, embedder, open_export(export, exported))
    if distributed.rank() == 0:
        _finish(out, start, probabilities, export, exported, hashes)
    distributed.barrier()
    return out


def load_start(cache: str | Path | None, run: Path, settings: JointSettings, approach: str, seed: int | None) -> Start:
    """The cache (the run's, or `cache`: refused when RUN holds heads of another), checked whole; the head to
    tune; the AlexNets that made the cache's features; every clip."""
    if cache is None:
        cache = runfolder.cache_of(run)
    else:  # RUN/joint beside heads of another cache would mix two caches in one run
        runfolder.check_cache(run, cache)
    cache = Path(cache)
    identity = cache_identity(cache)
    check_cache(cache, "the joint pass", verify=("features", "pool5", "media"))  # busy, unfinished, damaged
    head_path = runfolder.head_checkpoint(run, approach, seed)
    features = ShardStore(cache / "features", "features").settings
    if not features:
        raise AvemoError(f"{cache / 'features'}: no feature manifest; run `avemo extract` first")
    alexnets, hashes = feature_alexnets(cache, features)
    head, saved = load_fc7_head(head_path, fc7_width(alexnets["visual"]))
    if saved.get("cache_sha256") not in (None, identity) and distributed.rank() == 0:
        print(f"joint: note: the head {head_path} was trained on other features than those of {cache}")
    pool5 = ShardStore(cache / "pool5", "pool5").settings if (cache / "pool5").is_dir() else {}
    # cached pool5 is valid only if made by the very convolutions being used: mode fc keeps the base's
    use_pool5 = settings.layers == "fc" and finetune_mode(features) == "fc"
    use_pool5 = use_pool5 and pool5.get("weights_sha256") == features.get("weights_sha256")
    clips = read_clips(cache, use_pool5)
    return Start(cache, identity, head_path, head, saved, features, alexnets, hashes, use_pool5, clips)


def build(start: Start, settings: JointSettings, device: str) -> tuple[JointModel, Embedder, Inputs]:
    """The model (sharing the AlexNets' layers), the embedder of the tuned AlexNets (pool5 where the cache has
    none, predictions and export) and the backbones' inputs."""
    fit, from_images = spectrogram_input_of(start.features), settings.layers == "all"
    model = joint_model(start.alexnets, start.head, start.saved, from_images, fit, settings.backbone_lr == 0, device)
    embedder = Embedder(start.alexnets, fit, settings.layers, INFER_SECONDS, device)  # fc: via fp16 pool5
    inputs = Inputs(start.clips, list(model.backbones), from_images, embedder, device)
    return model, embedder, inputs


def fitting(start: Start) -> tuple[set[str], set[str]]:
    """(train clips, validation clips): the train split minus the validation clips the head's checkpoint
    lists; for an audio head, without the clips that have no sound (as the trainer)."""
    clips = start.clips
    validation = set(map(str, start.saved.get("validation") or [])) & set(clips.ids)
    train = set(clips.ids[clips.split == "train"]) - validation
    if start.head.approach == "audio":  # a clip without sound teaches the audio model nothing
        train -= set(clips.ids[~clips.has_audio.numpy()])
    if not train:
        raise AvemoError(f"{start.cache}: no train clips to tune on")
    return train, validation


def make_record(settings: JointSettings, start: Start, train: set[str], validation: set[str]) -> dict:
    """What must be equal to resume the pass (and what the export's manifests record)."""
    return {
        "settings": settings.record(),
        "head": str(start.head_path.resolve()),
        "head_sha256": _state_sha256(start.saved["model"]),
        "cache": str(start.cache.resolve()),
        "cache_sha256": start.identity,
        "alexnets_sha256": start.hashes,
        "train_clips": len(train),
        "validation_clips": len(validation),
    }


def _objective(start: Start, train: set[str], device: str) -> tuple[str, torch.Tensor | None]:
    """The head's own objective: its supervision (last second or every second) and class weights."""
    trained = start.saved["settings"]
    labels = start.clips.labels[start.clips.numbers(train)]
    return trained.get("supervise", "last"), class_weights(labels, trained.get("class_weights", "none"), device)


def _tune(task: JointTask, settings: JointSettings, out: Path, record: dict, start: Start) -> int:
    """Run the pass on the engine (resuming from RUN/joint/last.pt); the selected epoch's state is left in
    the model. Returns the epoch kept (0: the start)."""
    model = task.model
    selecting = settings.select == "loss" and len(task.validation) > 0 and settings.epochs > 0
    if distributed.rank() == 0:
        ensure_dir(out, under=out.parent)
        source = {**asdict(settings), "source": record, "head": asdict(head_settings_of(start.saved))}
        write_json(out / "settings.json", source)
    groups = [{"params": [p for p in model.head.parameters() if p.requires_grad], "lr": settings.lr, "weight_decay": 0.0}]
    if settings.backbone_lr > 0:
        backbones = list(model.backbones.parameters())
        groups.append({"params": backbones, "lr": settings.backbone_lr, "weight_decay": settings.backbone_weight_decay})
    loop = Loop(
        settings.epochs,
        settings.batch_size,
        settings.seed,
        select="loss" if selecting else "last",
        start_candidate=selecting,  # the pass never ends worse on validation than the head it began from
        timed=True,
        say_epochs=True,
        label="joint",
        on_mismatch="restart",
        keep_grads=True,  # the AlexNets' gradient buffers
    )
    checkpoints = Checkpoints(folder=out, record=record, best="best.pt", remedy=f"delete {out} and run the joint pass again")
    progress = fit(task, sgd(groups, lr=settings.lr, momentum=settings.momentum), loop, checkpoints)
    task.inputs.release()  # the training rows are no longer needed
    if distributed.rank() == 0 and not progress.log:  # no epochs: the log's columns, no rows
        write_text(out / "log.csv", ",".join(LOG_COLUMNS) + "\n")
    if selecting and distributed.rank() == 0:
        kept = f"joint: kept epoch {progress.best_epoch} of {settings.epochs}"
        print(f"{kept} (lowest validation loss; 0 = the trained head as it was)")
    return progress.best_epoch


def _save_model(out: Path, model: JointModel, start: Start, settings: JointSettings, kept: int, validation: set[str]) -> dict:
    """RUN/joint/{visual,audio}.pt (fp16) and model.pt (rank 0), before predicting: a kill there loses no
    training. The AlexNets, tuned in fp32, are first rounded in place to fp16 values (every rank: they then
    predict and export), as every AlexNet avemo computes with (extract.alexnet.build_alexnet); the fp16 files
    are exact. Returns the AlexNets' hashes, of the weights saved (a backbone not tuned: its source's)."""
    hashes = {m: weights_sha256(round_to_fp16_(alexnet, f"joint {m} AlexNet")) for m, alexnet in start.alexnets.items()}
    if distributed.rank() == 0:
        for m, alexnet in start.alexnets.items():
            save_torch(fp16_state(alexnet.state_dict()), out / f"{m}.pt")
        head_state = {
            "model": {k: v.cpu() for k, v in model.head.state_dict().items()},
            "norm": start.saved.get("norm"),
            "settings": start.saved["settings"],
            "validation": sorted(validation),
            "epoch": kept,
            "cache_sha256": start.identity,  # the features the pass tuned and predicted on (predict checks them)
            "joint": asdict(settings),
            "alexnets": {m: {"file": f"{m}.pt", "sha256": h} for m, h in hashes.items()},
        }
        save_torch(head_state, out / "model.pt")
    return hashes


def _finish(out: Path, start: Start, probabilities: np.ndarray, export: Path | None, exported: dict, hashes: dict) -> None:
    """predictions.csv, the export's models and links, the checkpoints removed; the test accuracy said."""
    clips = start.clips
    runfolder.write_predictions(out / "predictions.csv", clips.ids, clips.split, clips.labels.tolist(), probabilities)
    if export is not None:
        export_extras(start.cache, export, out, exported, start.use_pool5, hashes)
    for name in ("last.pt", "best.pt"):
        (out / name).unlink(missing_ok=True)
    test = clips.numbers(split="test").numpy()
    if len(test):
        accuracy = (probabilities[test].argmax(1) == clips.labels[test].numpy()).mean()
        print(f"joint ({start.head.approach}): test accuracy {100 * accuracy:.2f}% on {len(test)} clips → {out}")


def _state_sha256(state: dict) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(state.items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
