"""`avemo train`: fit the paper's heads on the train split of a feature cache; write a run directory.

RUN/run.json          what was trained, on which cache, the train class counts, the validation clips
RUN/<approach>/       settings.json, log.csv (per epoch: train loss, validation loss and accuracy),
                      model.pt (the selected epoch), last.pt (the latest epoch, to resume from),
                      predictions.csv (every clip, with its split, true class and class probabilities)
RUN/late/{visual,audio}/  late fusion's two per-second MLP classifiers (paper eq. 14), laid out as above
RUN/valence/          the valence models (`--target valence|both`), laid out as RUN/ (no joint pass)
(the layout's owner: avemo.runfolder)

Valence models train on the same fc7 features (the cache's AlexNets were fine-tuned on arousal, the paper's
task) with the same validation clips; clips whose valence is unknown are left out of fitting, validation and
the z-score statistics, and are still predicted (an empty valence in predictions.csv).

One approach that cannot be trained (e.g. an audio model without train clips that have sound) does not stop
the others: they finish, and the failures are reported at the end (an error, so the exit status is not 0).

Model selection never sees the test split: a validation set is carved from the train split (whole movies
where the cache knows them, else stratified by class; `data.validation_clips`), the epoch with the best
validation score is kept, and training stops early when it has not improved for `patience` epochs. The
test clips are only predicted, once, at the end.

Choices where the paper is silent (options of TrainSettings): SGD with momentum 0.9, learning rate 0.01,
minibatches of 32, at most 40 epochs, 10% of the train clips for validation, selection by validation
loss, patience 10; features z-scored with the statistics of the clips trained on.
Each head is a `HeadTask` run by the training engine (avemo.train.engine: epochs, random streams per
(seed, epoch), selection, patience, last.pt after every epoch), so a run killed at any point resumes where
it stopped when started again with the same command, equal to an uninterrupted one. A folder trained with
other settings is never overwritten: the run stops and names the settings that differ.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from avemo import distributed, runfolder
from avemo.approaches import APPROACHES, N_CLASSES
from avemo.atomic import ensure_dir, load_torch, write_json
from avemo.datasets.labels import AROUSAL_NAMES, VALENCE_NAMES
from avemo.errors import AvemoError
from avemo.train import engine
from avemo.train.data import FeatureSet, Standardiser, Validation, load_features, validation_clips
from avemo.train.heads import EmotionHead, head_inputs, late_fusion
from avemo.train.settings import TrainSettings

# (LSTM size, seed, approach, its folder name, its folder relative to RUN)
Plan = list[tuple[int, int, str, str, str]]


def train(
    cache: str | Path,
    run: str | Path,
    approaches: list[str],
    settings: TrainSettings = TrainSettings(),
    seeds: list[int] | None = None,
    lstm_sizes: list[int] | None = None,
    memory: str = "auto",
    targets: list[str] | None = None,
    stacked: bool = False,
) -> Path:
    """Train each approach (late fusion reuses or trains the visual and audio models), for every target, seed
    and LSTM size asked for; approaches already finished in RUN are reused, an interrupted one resumes.

    Layout (what `avemo evaluate` reads): RUN/<approach>/, and in a sweep of LSTM sizes (Fig. 2)
    RUN/<approach>-lstm<N>/ for every size but the paper's 256; with several seeds, one `seed-<s>/` folder
    per seed inside. `targets` (default: settings.target): arousal models there, valence models in the same
    layout under RUN/valence/. Under torchrun every rank trains its part of each batch
    (DistributedDataParallel) and rank 0 writes. `stacked`: the models not yet in RUN are trained at once
    (avemo.train.stacked_run), then written as here."""
    if stacked:
        from avemo.train.stacked_run import check

        check(settings)
    distributed.init_from_env()
    run = Path(run)
    previous = runfolder.check_cache(run, cache)  # before anything is read or written: a run holds one cache's models
    run.mkdir(parents=True, exist_ok=True)
    seeds = seeds or [settings.seed]
    lstm_sizes = lstm_sizes or [settings.head.lstm_hidden]
    targets = list(dict.fromkeys(targets or [settings.target]))
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    mmap_dir = run / f".features-rank{distributed.rank()}"
    try:
        sweep = Sweep(approaches, seeds, lstm_sizes, targets, stacked)
        return _train(cache, run, sweep, settings, memory, mmap_dir, previous)
    finally:
        if mmap_dir.is_dir() and not mmap_dir.is_symlink():
            shutil.rmtree(mmap_dir, ignore_errors=True)
        torch.use_deterministic_algorithms(deterministic_before)


@dataclass(frozen=True)
class Sweep:
    """What one `avemo train` trains: approaches × seeds × LSTM sizes, for each target."""

    approaches: list[str]
    seeds: list[int]
    sizes: list[int]
    targets: list[str]
    stacked: bool = False  # the models trained at once first (avemo.train.stacked_run)


def _train(
    cache: str | Path, run: Path, sweep: Sweep, settings: TrainSettings, memory: str, mmap_dir: Path, previous: dict | None
) -> Path:
    data, settings, held = _prepare(cache, settings, memory, mmap_dir)
    fittings = {target: _fitting(data, held, target, cache) for target in sweep.targets}  # refused before any training
    with_heads = "late" in sweep.approaches and settings.late_from == "lstm"  # late fusion of the visual and audio heads
    order = [a for a in APPROACHES if a in sweep.approaches or (a in ("visual", "audio") and with_heads)]
    if distributed.rank() == 0:
        _write_run_info(run, cache, data, held, sweep, order, previous)
    failures = []
    for target, split in _splits(data, fittings, held, settings, lambda: load_features(cache, memory, mmap_dir)):
        _announce(split, held, target)
        if sweep.stacked:
            from avemo.train.stacked_run import train_pending

            train_pending(run, split, replace(settings, target=target), order, sweep)
        failures += _train_target(run, split, replace(settings, target=target), order, sweep)
    distributed.barrier()
    if failures:
        raise AvemoError(f"{len(failures)} model(s) could not be trained, the others finished in {run}: " + "; ".join(failures))
    return run


def _train_target(run: Path, split: Split, settings: TrainSettings, order: list[str], sweep: Sweep) -> list[str]:
    """Train every model of the sweep for settings.target; returns the failures, one line each."""
    failures = []
    probabilities: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    for size, seed, approach, _, out_name in plan(order, settings, sweep.seeds, sweep.sizes):
        name = out_name.removesuffix(f"/seed-{seed}") + (f" seed {seed}" if len(sweep.seeds) > 1 else "")
        approach_settings = replace(settings, head=replace(settings.head, approach=approach, lstm_hidden=size), seed=seed)
        trained = probabilities.setdefault((size, seed), {})
        out = ensure_dir(run / out_name, under=run)
        try:
            trained[approach] = _fit_one(split, approach_settings, out, trained)
        except AvemoError as e:
            failures.append(f"{name}: {e}")
            print(f"{distributed.tag()}{name}: not trained: {e}")
            continue
        _summary(name, trained[approach], split)
    return failures


def _prepare(
    cache: str | Path, settings: TrainSettings, memory: str, mmap_dir: Path
) -> tuple[FeatureSet, TrainSettings, Validation]:
    """The features, the settings as resolved (device, feature width, validation split) and the validation
    split (fixed at extraction, or made on the arousal classes: the same clips for every target)."""
    if settings.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic matmuls
        torch.use_deterministic_algorithms(True)
    device = distributed.device_for(settings.device)
    data = load_features(cache, memory, mmap_dir)
    settings = replace(settings, device=device, head=replace(settings.head, feature_dim=data.visual.shape[1]))
    held = validation_clips(data, settings.validation, settings.validation_seed, cache)
    settings = replace(settings, validation=held.fraction, validation_seed=held.seed)  # as resolved, in every record
    return data, settings, held


def _fitting(data: FeatureSet, held: Validation, target: str, cache: str | Path) -> torch.Tensor:
    """The clips a model of `target` fits: the train clips but the validation ones, whose `target` label is
    known; refused when there are none."""
    labelled = data.for_target(target)
    train = labelled.known(data.subset("train"))
    if target != "arousal" and not len(train):
        raise AvemoError(
            f"{cache}: no train clip has a {target} label (the manifest's {target} column is empty or missing), so no "
            f"{target} model can be trained; give --target arousal, or run `avemo extract` again with a manifest that "
            f"has {target} labels (only the labels change: nothing is decoded again)"
        )
    fitting = _without(train, held.clips)
    if not len(fitting):
        raise AvemoError(f"{cache}: every train clip with a {target} label is a validation clip: none is left to fit")
    return fitting


def _splits(
    data: FeatureSet, fittings: dict[str, torch.Tensor], held: Validation, settings: TrainSettings, reload: Callable
) -> Iterator[tuple[str, Split]]:
    """Each target's Split, its features z-scored in place with the statistics of its fitting clips: once for
    targets that fit the same clips (every clip labelled), else the features are read again (`reload`)."""
    fitted = None  # the clips whose statistics the features hold
    for target, fitting in fittings.items():
        if fitted is None or not torch.equal(fitting, fitted):
            data = data if fitted is None else reload()
            norm = Standardiser.fit(data, settings.feature_norm, fitting)
            norm.normalise_in_place(data)
            if settings.device.startswith("cuda") and 2 * data.visual.nbytes < torch.cuda.mem_get_info()[0] / 2:
                data.to(settings.device)  # batches are then gathered on the GPU
            fitted = fitting
        labelled = data.for_target(target)  # after the move: it shares the features
        yield target, Split(labelled, norm, fitting, labelled.known(held.clips))


def plan(order: list[str], settings: TrainSettings, seeds: list[int], sizes: list[int]) -> Plan:
    """Every model of settings.target to train, in order; late fusion's MLP classifiers have no LSTM: one size
    is enough."""
    plan = []
    for size in sizes:
        for seed in seeds:
            for approach in order:
                folder = runfolder.model_folder(approach, size, sizes)
                if approach == "late" and settings.late_from == "mlp" and folder != approach:
                    continue
                path = runfolder.model_path(approach, size, seed, sizes, seeds, settings.target)
                plan.append((size, seed, approach, folder, path))
    return plan


def _write_run_info(
    run: Path, cache: str | Path, data: FeatureSet, held: Validation, sweep: Sweep, order: list[str], previous: dict | None
) -> None:
    """RUN/run.json: what the run holds, over every `avemo train` into it (evaluate refuses a run whose seeds
    are half written)."""
    before = previous or {}
    expected = [n for t in sweep.targets for n in runfolder.expected_names(order, sweep.seeds, sweep.sizes, t)]
    info = {"cache": str(Path(cache).resolve()), "cache_sha256": data.identity}
    info |= {"approaches": runfolder.union(before.get("approaches"), sweep.approaches), "seeds": sweep.seeds}
    targets = runfolder.union(before.get("targets", ["arousal"] if before else []), sweep.targets)
    info |= {"lstm_hidden": sweep.sizes, "targets": targets}
    info |= {"predictions": runfolder.union(before.get("predictions"), expected)}
    info |= {"train_counts": _train_counts(data, "arousal")}
    if "valence" in sweep.targets or "valence_train_counts" in before:
        info["valence_train_counts"] = _train_counts(data, "valence")
    info |= {"validation_clips": data.clip_ids[held.clips.numpy()].tolist()}
    info |= {"validation": {"fraction": held.fraction, "seed": held.seed, "split": held.line, "note": held.note}}
    runfolder.write_info(run, info)


def _train_counts(data: FeatureSet, target: str) -> dict[str, int]:
    """Train clips per class of `target` (clips whose label is unknown are in no class)."""
    labels = data.for_target(target).labels[data.subset("train")]
    names = AROUSAL_NAMES if target == "arousal" else VALENCE_NAMES
    return {name: int((labels == i).sum()) for i, name in enumerate(names)}


def _announce(split: Split, held: Validation, target: str) -> None:
    data, fitting = split.data, split.fitting
    sounding = int(data.has_audio[data.subset("train")].sum())
    if sounding and not data.has_audio[fitting].any():  # hold_out avoids it; a safety net for foreign splits
        held = replace(held, note=f"warning: all {sounding} train clips with sound are in the validation split")
    for line in (held.line, held.note):
        if line:
            print(f"{distributed.tag()}{line}")
    test = data.subset("test")
    unknown = len(data.subset("train")) - len(data.known(data.subset("train")))
    left = f" ({unknown} train clips without a {target} label left out)" if unknown else ""
    print(
        f"{distributed.tag()}train{'' if target == 'arousal' else f' {target}'}: {len(fitting)} clips to fit, "
        f"{len(split.validation)} for validation, {len(data.known(test))} test clips (never read for training or "
        f"selection){left}"
    )


def _summary(name: str, probs: np.ndarray, split: Split) -> None:
    data = split.data
    summary = [
        f"{part} accuracy {100 * _accuracy(probs, data, clips):.2f}% on {len(clips)} clips"
        for part, clips in (("validation", split.validation), ("test", data.known(data.subset("test"))))
        if len(clips)
    ]
    print(f"{distributed.tag()}{name}: {', '.join(summary)}")


@dataclass(frozen=True)
class Split:
    """What every head of a run is trained on: the features (z-scored by `norm`, which is saved with each
    model for new videos), the clips fitted and the clips epochs are selected on."""

    data: FeatureSet
    norm: Standardiser
    fitting: torch.Tensor
    validation: torch.Tensor


def _fit_one(split: Split, settings: TrainSettings, out: Path, trained: dict[str, np.ndarray]) -> np.ndarray:
    if settings.head.approach == "late":
        return fit_late(split, settings, out, trained)
    return fit_and_write(split, settings, out)


def fit_and_write(split: Split, settings: TrainSettings, out: Path) -> np.ndarray:
    """`fit` one head in `out`, then write its settings.json and predictions.csv; returns its probabilities."""
    ensure_dir(out)
    probs = fit(split, settings, out)
    _write_outputs(out, settings, split.data, probs)  # after fit, which refuses a folder trained with other settings
    return probs


def fit_late(split: Split, settings: TrainSettings, out: Path, trained: dict[str, np.ndarray]) -> np.ndarray:
    """Late fusion (eq. 14) of a visual and an audio model: the two per-second MLP classifiers trained here in
    OUT/visual and OUT/audio (`late_from` mlp, the paper's), or the visual-only and audio-only heads already
    trained in this run (`late_from` lstm)."""
    parts = {}
    for modality in ("visual", "audio"):
        if settings.late_from == "lstm":
            if modality not in trained:
                raise AvemoError(f"late fusion needs the {modality}-only head, which could not be trained")
            parts[modality] = trained[modality]
        else:
            head = replace(settings.head, approach=modality, temporal="none")
            parts[modality] = fit_and_write(split, replace(settings, head=head), out / modality)
    probs = late_fusion(parts["audio"], parts["visual"], split.data.has_audio.numpy())
    ensure_dir(out)
    _write_outputs(out, settings, split.data, probs)
    return probs


def _write_outputs(out: Path, settings: TrainSettings, data: FeatureSet, probs: np.ndarray) -> None:
    """OUT/settings.json and OUT/predictions.csv (rank 0)."""
    if distributed.rank() == 0:
        write_json(out / runfolder.SETTINGS, asdict(settings))
        labels = data.labels.tolist()
        runfolder.write_predictions(out / runfolder.PREDICTIONS, data.clip_ids, data.split, labels, probs, settings.target)


# -- one head, on the engine ------------------------------------------------------------------------------
@dataclass
class HeadTask:
    """Training one head (engine.Task): the clips fitted, cross-entropy per clip, validation loss and
    accuracy on the validation clips."""

    model: EmotionHead
    data: FeatureSet
    clips: torch.Tensor  # the clips fitted
    validation: torch.Tensor  # the clips epochs are selected on
    settings: TrainSettings
    weights: torch.Tensor | None = None  # per-class loss weights
    counts_correct: bool = False

    def examples(self) -> torch.Tensor:
        return self.clips

    def losses(self, net: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return clip_losses(net, self.data, batch, self.settings, self.weights)

    def validate(self) -> dict[str, float]:
        if not len(self.validation):
            return {}
        probs = predict(self.model, self.data, self.validation, self.settings.device)
        truth = self.data.labels[self.validation].numpy()
        loss = float(-np.log(np.maximum(probs[np.arange(len(truth)), truth], 1e-12)).mean())
        return {"validation_loss": loss, "validation_accuracy": float((probs.argmax(1) == truth).mean())}

    def state(self) -> dict:
        return self.model.state_dict()

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state)


def fit(split: Split, settings: TrainSettings, out: Path) -> np.ndarray:
    """Train one head on the split's fitting clips, select the epoch on its validation clips; returns class
    probabilities for every clip. OUT/model.pt holds the selected epoch, OUT/last.pt the latest
    (engine.Checkpoints)."""
    data, fitting, validation = split.data, split.fitting, split.validation
    clips = fitting[data.has_audio[fitting]] if settings.head.approach == "audio" else fitting  # no silence lessons
    if settings.head.approach == "audio" and len(clips) == 0:
        raise AvemoError("no train clip has an audio stream: the audio-only head cannot be trained")
    _refuse_lone_model(out)
    torch.manual_seed(settings.seed)  # the initial weights (every rank alike)
    model = EmotionHead(settings.head).to(settings.device)
    weights = class_weights(data.labels[clips], settings.class_weights, settings.device)
    task = HeadTask(model, data, clips, validation, settings, weights)
    checkpoints = head_checkpoints(settings, out, data, split.norm, clips, validation)
    engine.fit(task, make_optimizer(model, settings), _loop(settings, out), checkpoints)
    _load_selected(model, out, data.identity)
    return predict(model, data, torch.arange(len(data.labels)), settings.device)


def _loop(settings: TrainSettings, out: Path) -> engine.Loop:
    return engine.Loop(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        seed=settings.seed,
        select=settings.select,
        patience=settings.patience,
        clip_grad=settings.clip_grad,
        checkpoint_share=settings.checkpoint_share,
        label=f"train {out}",  # the folder: names the model in the progress bar and in messages
    )


def head_checkpoints(
    settings: TrainSettings, out: Path, data: FeatureSet, norm: Standardiser, clips: torch.Tensor, validation: torch.Tensor
) -> engine.Checkpoints:
    """last.pt's record (what must match to resume: settings, clips fitted, cache) and what model.pt keeps
    beside the selected weights (predict and the joint pass read its settings, norm and validation)."""
    record = json.loads(json.dumps(asdict(settings)))
    del record["late_from"]  # how late fusion mixes models is not a setting of any one model
    del record["checkpoint_share"]  # how often last.pt is written does not change the model
    resume = {k: v for k, v in record.items() if k != "target" or v != "arousal"}  # as last.pt before targets were
    fitting_ids = data.clip_ids[clips.numpy()].tolist()
    validation_ids = data.clip_ids[validation.numpy()].tolist()
    return engine.Checkpoints(
        folder=out,
        record={"settings": resume, "fitting": fitting_ids, "cache_sha256": data.identity},
        best="model.pt",
        extras={"settings": record, "norm": norm.state(), "validation": validation_ids, "cache_sha256": data.identity},
    )


def _refuse_lone_model(out: Path) -> None:
    """A selected model without its last.pt: nothing says which cache and settings made it."""
    last = out / "last.pt"
    if not (last.exists() or last.is_symlink()) and (out / "model.pt").exists():
        raise AvemoError(
            f"{out / 'model.pt'}: a trained head without {last.name} (the record of its cache and settings); "
            "give another --run, or delete that folder to train it again"
        )


def _load_selected(model: EmotionHead, out: Path, identity: str) -> None:
    """Load OUT/model.pt (the selected epoch) into `model`, refused unless it was trained on this cache."""
    path, remedy = out / "model.pt", f"delete {out} to train it again"
    best = load_torch(path, remedy)
    if best.get("cache_sha256") != identity:
        raise AvemoError(f"{path}: not the head trained here on this cache; {remedy}")
    try:
        model.load_state_dict(best["model"])
    except (KeyError, TypeError, RuntimeError, AttributeError) as e:
        raise AvemoError(f"{path}: not a head of these settings ({str(e).splitlines()[0][:100]}); {remedy}") from None


def make_optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """SGD with momentum (paper: "stochastic gradient descent") over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return engine.sgd(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)


def clip_losses(
    model: torch.nn.Module, data: FeatureSet, clips: torch.Tensor, settings: TrainSettings, weights: torch.Tensor | None
) -> torch.Tensor:
    """Cross-entropy per clip [B] of `model` on a batch of `clips` (see supervised_losses)."""
    visual, audio, lengths, has_audio = data.batch(clips, settings.device, head_inputs(settings.head.approach))
    labels = data.labels[clips].to(settings.device)

    def forward(per_step: bool) -> torch.Tensor:
        return model(visual, audio, lengths, has_audio, per_step=per_step)

    return supervised_losses(forward, lengths, labels, settings.supervise, weights)


def supervised_losses(
    forward: Callable[[bool], torch.Tensor],
    lengths: torch.Tensor,
    labels: torch.Tensor,
    supervise: str,
    weights: torch.Tensor | None,
) -> torch.Tensor:
    """Cross-entropy per clip [B]: at its last second (`supervise` last; `forward(False)` gives logits [B, 3]),
    or the mean over its seconds (every; `forward(True)` gives packed logits [N, 3]); × its class weight."""
    if supervise == "last":
        losses = torch.nn.functional.cross_entropy(forward(False), labels, reduction="none")
    else:
        logits = forward(True)
        clip_of_row = torch.repeat_interleave(torch.arange(len(labels), device=logits.device), lengths)
        per_row = torch.nn.functional.cross_entropy(logits, labels[clip_of_row], reduction="none")
        losses = torch.zeros(len(labels), device=logits.device).index_add(0, clip_of_row, per_row) / lengths
    return losses if weights is None else losses * weights[labels]


def class_weights(labels: torch.Tensor, mode: str, device: str = "cpu") -> torch.Tensor | None:
    """Per-class loss weights: none, or balanced = n / (classes · n_class) (a class absent from training gets 0)."""
    if mode == "none":
        return None
    counts = torch.bincount(labels, minlength=N_CLASSES).double()
    return torch.where(counts > 0, len(labels) / (N_CLASSES * counts.clamp_min(1)), 0).float().to(device)


@torch.inference_mode()
def predict(model: EmotionHead, data: FeatureSet, clips: torch.Tensor, device: str) -> np.ndarray:
    """Class probabilities [clips, 3] (eq. 12) from each clip's last second."""
    model.eval()
    out = []
    for batch in clips.split(256):
        visual, audio, lengths, has_audio = data.batch(batch, device, head_inputs(model.approach))
        out.append(torch.softmax(model(visual, audio, lengths, has_audio), dim=1).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, N_CLASSES), np.float32)


def _without(clips: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    return clips[~torch.isin(clips, removed)]


def _accuracy(probs: np.ndarray, data: FeatureSet, clips: torch.Tensor) -> float:
    return float((probs[clips.numpy()].argmax(1) == data.labels[clips].numpy()).mean())
