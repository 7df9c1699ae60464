"""`avemo train`: fit the paper's heads on the train split of a feature cache; write a run directory.

RUN/run.json          what was trained, on which cache, the train class counts, the validation clips
RUN/<approach>/       settings.json, log.csv (per epoch: train loss, validation loss and accuracy),
                      model.pt (the selected epoch), last.pt (the latest epoch, to resume from),
                      predictions.csv (every clip, with its split, true class and class probabilities)
RUN/late/{visual,audio}/  late fusion's two per-second MLP classifiers (paper eq. 14), laid out as above

One approach that cannot be trained (e.g. an audio model without train clips that have sound) does not stop
the others: they finish, and the failures are reported at the end (an error, so the exit status is not 0).

Model selection never sees the test split: a validation set is carved from the train split (whole movies
where the cache knows them, else stratified by class; `data.validation_clips`), the epoch with the best
validation score is kept, and training stops early when it has not improved for `patience` epochs. The
test clips are only predicted, once, at the end.

Choices where the paper is silent (options of TrainSettings): SGD with momentum 0.9, learning rate 0.01,
minibatches of 32, at most 40 epochs, 10% of the train clips for validation, selection by validation
loss, patience 10; features z-scored with the statistics of the clips trained on.
A run killed at any point resumes where it stopped when started again with the same command: every epoch
ends with an atomic `last.pt` (model, optimizer, epoch, settings, log), and the random streams of an epoch
(shuffle, dropout) are derived from (seed, epoch), so a resumed run equals an uninterrupted one. A folder
trained with other settings is never overwritten: the run stops and names the settings that differ.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avemo import distributed
from avemo.atomic import ensure_dir, load_torch, read_json, save_torch, write_json, write_text
from avemo.datasets.labels import AROUSAL_NAMES, to_label
from avemo.errors import AvemoError
from avemo.train.data import FeatureSet, Standardiser, cache_identity, load_features, validation_clips
from avemo.train.heads import APPROACHES, N_CLASSES, EmotionHead, HeadSettings

LATE_ALPHA = 0.56  # paper eq. 14: p = α·p_a + (1 − α)·p_v with α = 0.56 (after Goyal et al., 2016)
CHOICES = {
    "supervise": ("last", "every"),
    "late_from": ("mlp", "lstm"),
    "class_weights": ("none", "balanced"),
    "select": ("loss", "accuracy", "last"),
    "feature_norm": ("zscore", "none"),
}


@dataclass(frozen=True)
class TrainSettings:
    head: HeadSettings = field(default_factory=HeadSettings)
    epochs: int = 40  # at most; the paper gives no number
    batch_size: int = 32  # paper: "minibatches" (no size given)
    lr: float = 0.01  # paper: SGD (no rate given)
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip_grad: float = 0.0  # max gradient norm; 0 = off, as in the paper
    # every: cross-entropy on every second, each step predicting its clip's class (paper: "trained end-to-end to
    # predict the videos emotion class at each time step"); last: on each clip's last second only (the clip's
    # prediction is its last second either way)
    supervise: str = "every"
    # late fusion (eq. 14) mixes "two MLP classifiers" (paper): mlp trains a per-second MLP per modality
    # (heads.HeadSettings.temporal none) in RUN/late/; lstm mixes the visual-only and audio-only LSTM heads
    late_from: str = "mlp"
    class_weights: str = "none"  # balanced: weight n / (3·n_class) per clip; off by default, as in the paper
    # fraction of the train clips held out for model selection; 0 = keep the last epoch; None = the split the
    # cache's extraction left out of fine-tuning (any other is refused), 0.1 for a cache without one
    validation: float | None = None
    validation_seed: int | None = None  # the same held-out clips for every seed and approach (paired comparisons)
    # the epoch with the lowest validation loss (smoother than accuracy on a small validation set, where a slow
    # start can leave accuracy flat for many epochs), the best validation accuracy, or the last epoch
    select: str = "loss"
    patience: int = 10  # stop after this many epochs without a better validation score; 0 = never early
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU; CPU is deterministic anyway)
    feature_norm: str = "zscore"  # zscore | none
    device: str = "cuda" if torch.cuda.is_available() else "cpu"

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise AvemoError(f"{name} {getattr(self, name)!r}: must be one of {', '.join(allowed)}")
        if self.validation is not None and not 0 <= self.validation < 1:
            raise AvemoError(f"validation {self.validation}: must be a fraction in [0, 1)")


def train(
    cache: str | Path,
    run: str | Path,
    approaches: list[str],
    settings: TrainSettings = TrainSettings(),
    seeds: list[int] | None = None,
    lstm_sizes: list[int] | None = None,
    memory: str = "auto",
) -> Path:
    """Train each approach (late fusion reuses or trains the visual and audio models), for every seed and
    LSTM size asked for; approaches already finished in RUN are reused, an interrupted one resumes.

    Layout (what `avemo evaluate` reads): RUN/<approach>/, and in a sweep of LSTM sizes (Fig. 2)
    RUN/<approach>-lstm<N>/ for every size but the paper's 256; with several seeds, one `seed-<s>/` folder
    per seed inside. Under torchrun every rank trains its part of each batch (DistributedDataParallel) and
    rank 0 writes."""
    distributed.init_from_env()
    run = Path(run)
    previous = check_run_cache(run, cache)  # before anything is read or written: a run holds one cache's models
    run.mkdir(parents=True, exist_ok=True)
    seeds = seeds or [settings.seed]
    lstm_sizes = lstm_sizes or [settings.head.lstm_hidden]
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    mmap_dir = run / f".features-rank{distributed.rank()}"
    try:
        return _train(cache, run, approaches, settings, seeds, lstm_sizes, memory, mmap_dir, previous)
    finally:
        if mmap_dir.is_dir() and not mmap_dir.is_symlink():
            shutil.rmtree(mmap_dir, ignore_errors=True)
        torch.use_deterministic_algorithms(deterministic_before)


def _train(
    cache: str | Path,
    run: Path,
    approaches: list[str],
    settings: TrainSettings,
    seeds: list[int],
    lstm_sizes: list[int],
    memory: str,
    mmap_dir: Path,
    previous: dict | None,
) -> Path:
    if settings.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic matmuls
        torch.use_deterministic_algorithms(True)
    device = distributed.device_for(settings.device)
    data = load_features(cache, memory, mmap_dir)
    settings = replace(settings, device=device, head=replace(settings.head, feature_dim=data.visual.shape[1]))
    held = validation_clips(data, settings.validation, settings.validation_seed, cache)
    validation = held.clips
    settings = replace(settings, validation=held.fraction, validation_seed=held.seed)  # as resolved, in every record
    fitting = _without(data.subset("train"), validation)
    norm = Standardiser.fit(data, settings.feature_norm, fitting)
    norm.normalise_in_place(data)  # once, for every approach: the same clips give the same statistics
    if device.startswith("cuda") and 2 * data.visual.nbytes < torch.cuda.mem_get_info()[0] / 2:
        data.to(device)  # batches are then gathered on the GPU
    train_labels = data.labels[data.subset("train")]
    counts = {name: int((train_labels == i).sum()) for i, name in enumerate(AROUSAL_NAMES)}
    with_heads = "late" in approaches and settings.late_from == "lstm"  # late fusion of the visual and audio heads
    order = [a for a in APPROACHES if a in approaches or (a in ("visual", "audio") and with_heads)]
    plan = [
        (size, seed, approach, _folder(approach, size, lstm_sizes), _out(approach, size, seed, lstm_sizes, seeds))
        for size in lstm_sizes
        for seed in seeds
        for approach in order
        if not (approach == "late" and settings.late_from == "mlp" and _folder(approach, size, lstm_sizes) != approach)
    ]  # late fusion's MLP classifiers have no LSTM: one size is enough
    if distributed.rank() == 0:
        # what the run holds, over every `avemo train` into it (evaluate refuses a run whose seeds are half written)
        expected = [f"{out}/predictions.csv" for *_, out in plan]
        before = previous or {}
        info = {"cache": str(Path(cache).resolve()), "cache_sha256": data.identity}
        info |= {"approaches": _union(before.get("approaches"), approaches), "seeds": seeds, "lstm_hidden": lstm_sizes}
        info |= {"predictions": _union(before.get("predictions"), expected)}
        info |= {"train_counts": counts, "validation_clips": data.clip_ids[validation.numpy()].tolist()}
        info |= {"validation": {"fraction": held.fraction, "seed": held.seed, "split": held.line, "note": held.note}}
        write_json(run / "run.json", info)
    sounding = int(data.has_audio[data.subset("train")].sum())
    if sounding and not data.has_audio[fitting].any():  # hold_out avoids it; a safety net for foreign splits
        held = replace(held, note=f"warning: all {sounding} train clips with sound are in the validation split")
    for line in (held.line, held.note):
        if line:
            print(f"{distributed.tag()}{line}")
    print(
        f"{distributed.tag()}train: {len(fitting)} clips to fit, {len(validation)} for validation, "
        f"{len(data.subset('test'))} test clips (never read for training or selection)"
    )
    failures = []
    probabilities: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    for size, seed, approach, folder, out_name in plan:
        out = ensure_dir(run / out_name, under=run)
        name = folder + (f" seed {seed}" if len(seeds) > 1 else "")
        head = replace(settings.head, approach=approach, lstm_hidden=size)
        approach_settings = replace(settings, head=head, seed=seed)
        trained = probabilities.setdefault((size, seed), {})
        try:
            if approach == "late":
                probs = fit_late(data, approach_settings, out, norm, fitting, validation, trained)
            else:
                probs = fit_and_write(data, approach_settings, out, norm, fitting, validation)
        except AvemoError as e:
            failures.append(f"{name}: {e}")
            print(f"{distributed.tag()}{name}: not trained: {e}")
            continue
        trained[approach] = probs
        summary = [
            f"{name} accuracy {100 * _accuracy(probs, data, clips):.2f}% on {len(clips)} clips"
            for name, clips in (("validation", validation), ("test", data.subset("test")))
            if len(clips)
        ]
        print(f"{distributed.tag()}{name}: {', '.join(summary)}")
    distributed.barrier()
    if failures:
        raise AvemoError(f"{len(failures)} model(s) could not be trained, the others finished in {run}: " + "; ".join(failures))
    return run


def fit_and_write(
    data: FeatureSet, settings: TrainSettings, out: Path, norm: Standardiser, fitting: torch.Tensor, validation: torch.Tensor
) -> np.ndarray:
    """`fit` one head in `out`, then write its settings.json and predictions.csv; returns its probabilities."""
    ensure_dir(out)
    probs = fit(data, settings, out, norm, fitting, validation)
    if distributed.rank() == 0:  # after fit, which refuses a folder trained with other settings
        write_json(out / "settings.json", asdict(settings))
        write_predictions(out / "predictions.csv", data, probs)
    return probs


def fit_late(
    data: FeatureSet,
    settings: TrainSettings,
    out: Path,
    norm: Standardiser,
    fitting: torch.Tensor,
    validation: torch.Tensor,
    trained: dict[str, np.ndarray],
) -> np.ndarray:
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
            parts[modality] = fit_and_write(data, replace(settings, head=head), out / modality, norm, fitting, validation)
    probs = late_fusion(parts["audio"], parts["visual"], data.has_audio.numpy())
    ensure_dir(out)
    if distributed.rank() == 0:
        write_json(out / "settings.json", asdict(settings))
        write_predictions(out / "predictions.csv", data, probs)
    return probs


RUN_JSON_REMEDY = (
    "delete it and run `avemo train` again into this folder with the cache it was trained on (finished models are "
    "kept: each checkpoint records its cache, and another cache is refused)"
)


def run_info(run: Path) -> dict:
    """RUN/run.json, checked: a JSON object naming the cache (one clear line when it is not)."""
    path = Path(run) / "run.json"
    if not path.is_file():
        raise AvemoError(f"{path}: not found; is {run} a run directory of `avemo train`?")
    info = read_json(path, RUN_JSON_REMEDY)
    if not isinstance(info.get("cache"), str) or not info["cache"]:
        raise AvemoError(f'{path}: names no cache (no "cache" entry); {RUN_JSON_REMEDY}')
    return info


def run_cache(run: Path) -> Path:
    """The cache a run directory was trained on (RUN/run.json)."""
    return Path(run_info(run)["cache"])


def check_run_cache(run: Path, cache: str | Path) -> dict | None:
    """Refuse to train RUN on `cache` when RUN/run.json records another cache (by the identity of its features,
    not its path: a cache extracted again at the same path is another cache). Returns run.json (None if absent)."""
    path = Path(run) / "run.json"
    if not path.exists() and not path.is_symlink():
        return None
    info = run_info(run)
    recorded, identity = info.get("cache_sha256"), cache_identity(cache)
    if recorded == identity:
        return info
    way_out = f"give another --run, or delete {run} to train it again on {cache}"
    if recorded is None:
        raise AvemoError(
            f"{path}: records no cache identity (written by an older avemo), so {run} may hold models of another "
            f"cache than {cache}; {way_out}"
        )
    same_path = Path(info["cache"]).resolve() == Path(cache).resolve()
    what = (
        f"the features of {cache} changed since {run} was trained on them (extracted again?)"
        if same_path
        else f"{run} was trained on another cache, {info['cache']}"
    )
    raise AvemoError(
        f"{what} (features {recorded[:12]}, now {identity[:12]}): a run holds the models of one cache and never "
        f"mixes two; {way_out}"
    )


def late_fusion(audio: np.ndarray, visual: np.ndarray, has_audio: np.ndarray) -> np.ndarray:
    """Paper eq. 14 for clips with sound; a clip without an audio stream keeps its visual probabilities."""
    return np.where(has_audio[:, None], LATE_ALPHA * audio + (1 - LATE_ALPHA) * visual, visual)


def fit(
    data: FeatureSet,
    settings: TrainSettings,
    out: Path,
    norm: Standardiser,
    fitting: torch.Tensor,
    validation: torch.Tensor,
) -> np.ndarray:
    """Train one head on the `fitting` clips of `data` (already normalised by `norm`, which is saved with the
    model for new videos), select the epoch on `validation`; returns class probabilities for every clip."""
    head = settings.head
    clips = fitting[data.has_audio[fitting]] if head.approach == "audio" else fitting  # no silence lessons
    if head.approach == "audio" and len(clips) == 0:
        raise AvemoError("no train clip has an audio stream: the audio-only head cannot be trained")
    device = settings.device
    torch.manual_seed(settings.seed)  # the initial weights (every rank alike; DDP also broadcasts rank 0's)
    model = EmotionHead(head).to(device)
    optimizer = make_optimizer(model, settings)
    weights = class_weights(data.labels[clips], settings.class_weights, device)
    record = json.loads(json.dumps(asdict(settings)))
    del record["late_from"]  # how late fusion mixes models is not a setting of any one model
    progress = {"epoch": 0, "log": [], "best": None, "best_epoch": 0, "stale": 0, "finished": False}
    last = out / "last.pt"
    fitting_ids = data.clip_ids[clips.numpy()].tolist()
    if last.exists() or last.is_symlink():
        progress = _resume(last, out, record, fitting_ids, data.identity, model, optimizer)
        if not progress["finished"]:
            print(f"{distributed.tag()}{out}: resuming after epoch {progress['epoch']}")
    elif (out / "model.pt").exists():  # a selected model without its last.pt: nothing says which cache made it
        raise AvemoError(
            f"{out / 'model.pt'}: a trained head without {last.name} (the record of its cache and settings); "
            "give another --run, or delete that folder to train it again"
        )
    cache_record = {"cache_sha256": data.identity}
    trained = _ddp(model)
    validation_ids = data.clip_ids[validation.numpy()].tolist()
    epochs = range(progress["epoch"] + 1, settings.epochs + 1)
    bar = tqdm(epochs, desc=f"train {out.name}", unit="epoch", disable=progress["finished"] or distributed.rank() > 0)
    for epoch in [] if progress["finished"] else bar:
        shuffle = torch.Generator().manual_seed(_stream(settings.seed, epoch))  # the same on every rank
        torch.manual_seed(_stream(settings.seed, epoch, distributed.rank() + 1))  # dropout
        order = clips[torch.randperm(len(clips), generator=shuffle)]
        row = {"epoch": epoch, "train_loss": run_epoch(trained, data, order, optimizer, settings, weights)}
        if len(validation):
            probs = predict(model, data, validation, device)
            truth = data.labels[validation].numpy()
            row["validation_loss"] = float(-np.log(np.maximum(probs[np.arange(len(truth)), truth], 1e-12)).mean())
            row["validation_accuracy"] = float((probs.argmax(1) == truth).mean())
        progress["log"].append(row)
        score = {"accuracy": row.get("validation_accuracy"), "loss": -row.get("validation_loss", 0)}.get(settings.select)
        if settings.select == "last" or not len(validation):
            score = epoch
        if progress["best"] is None or score > progress["best"]:
            progress |= {"best": score, "best_epoch": epoch, "stale": 0}
            checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
            checkpoint |= {"settings": record, "norm": norm.state(), "validation": validation_ids} | cache_record
            _save(out / "model.pt", checkpoint)
        else:
            progress["stale"] += 1
        progress["epoch"] = epoch
        stop = settings.patience > 0 and progress["stale"] >= settings.patience
        progress["finished"] = stop or epoch == settings.epochs
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "epoch"})
        _save(
            last,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "settings": record,
                "fitting": fitting_ids,
                "progress": progress,
            }
            | cache_record,
        )
        if stop:
            print(f"{distributed.tag()}{out}: no better validation {settings.select} for {settings.patience} epochs; stopped")
            break
    bar.close()
    if distributed.rank() == 0:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(progress["log"][0]))
        writer.writeheader()
        writer.writerows(progress["log"])
        write_text(out / "log.csv", text.getvalue())
    distributed.barrier()
    best = load_torch(out / "model.pt", f"delete {out} to train it again")
    if best.get("cache_sha256") != data.identity:
        raise AvemoError(f"{out / 'model.pt'}: not the head trained here on this cache; delete {out} to train it again")
    _load_state(model, best, out / "model.pt", f"delete {out} to train it again")
    return predict(model, data, torch.arange(len(data.labels)), device)


def _resume(
    last: Path,
    out: Path,
    record: dict,
    fitting_ids: list[str],
    identity: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> dict:
    """The progress of OUT/last.pt, with its model and optimizer state loaded; refused (one line naming the
    folder and the way out) when it was trained on another cache, with other settings or clips, or is not
    a checkpoint of avemo's."""
    remedy = "give another --run, or delete that folder to train it again"
    saved = load_torch(last, remedy)
    try:
        differ = _differences(saved["settings"], record)
        if saved.get("cache_sha256") != identity:
            was = "a cache not recorded (an older avemo)" if saved.get("cache_sha256") is None else "another cache"
            differ.insert(0, f"the cache: {was}, not these features")
        elif saved["fitting"] != fitting_ids:
            differ.append("the clips trained on (another validation split)")
        progress = saved["progress"]
        keys = {"epoch", "log", "best", "best_epoch", "stale", "finished"}
        if not isinstance(progress, dict) or not keys <= set(progress):
            raise KeyError("progress")
    except (KeyError, TypeError, AttributeError):
        raise AvemoError(f"{last}: not a checkpoint written by `avemo train`; {remedy}") from None
    if differ:
        raise AvemoError(f"{out} holds a model trained with other settings ({'; '.join(differ[:3])}): {remedy}")
    _load_state(model, saved, last, remedy)
    try:
        optimizer.load_state_dict(saved["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError):
        raise AvemoError(f"{last}: not a checkpoint written by `avemo train` (its optimizer state); {remedy}") from None
    return progress


def _load_state(model: torch.nn.Module, saved: dict, path: Path, remedy: str) -> None:
    try:
        model.load_state_dict(saved["model"])
    except (KeyError, TypeError, RuntimeError, AttributeError) as e:
        raise AvemoError(f"{path}: not a head of these settings ({str(e).splitlines()[0][:100]}); {remedy}") from None


def make_optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """SGD with momentum (paper: "stochastic gradient descent") over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return sgd(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)


def sgd(params: list, **options) -> torch.optim.Optimizer:
    """torch's SGD, fused into one kernel where this torch has it for the device (a third faster on CPU)."""
    try:
        return torch.optim.SGD(params, **options, fused=True)
    except (RuntimeError, TypeError):  # older torch, or a device without the fused kernel
        return torch.optim.SGD(params, **options)


def run_epoch(
    model: torch.nn.Module,
    data: FeatureSet,
    order: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    settings: TrainSettings,
    weights: torch.Tensor | None = None,
) -> float:
    """One pass of SGD over the clips in `order`, minibatch by minibatch; returns the mean train loss.

    Under torchrun each rank takes every world()-th clip of a batch; its loss is scaled so that the gradients
    DDP averages equal those of the whole batch on one process."""
    model.train()
    world, rank = distributed.world(), distributed.rank()
    total = torch.zeros((), device=settings.device)
    for batch in order.split(settings.batch_size):
        mine = batch[rank::world]
        optimizer.zero_grad(set_to_none=True)
        if len(mine):
            loss = clip_losses(model, data, mine, settings, weights).sum() * (world / len(batch))
        else:  # a short last batch: still take part in DDP's gradient exchange
            loss = sum(p.sum() * 0 for p in model.parameters())
        loss.backward()
        if settings.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad)
        optimizer.step()
        total += loss.detach() * len(batch) / world
    if world > 1:
        torch.distributed.all_reduce(total)
    return float(total) / len(order)


def clip_losses(
    model: torch.nn.Module, data: FeatureSet, clips: torch.Tensor, settings: TrainSettings, weights: torch.Tensor | None
) -> torch.Tensor:
    """Cross-entropy per clip [B] of `model` on a batch of `clips` (see supervised_losses)."""
    visual, audio, lengths, has_audio = data.batch(clips, settings.device)
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
        visual, audio, lengths, has_audio = data.batch(batch, device)
        out.append(torch.softmax(model(visual, audio, lengths, has_audio), dim=1).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, N_CLASSES), np.float32)


def write_predictions(path: Path, data: FeatureSet, probs: np.ndarray) -> None:
    """predictions.csv, written atomically (never through a link)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["clip_id", "split", "arousal", "predicted", *(f"p_{n}" for n in AROUSAL_NAMES)])
    for clip_id, split, label, p in zip(data.clip_ids, data.split, data.labels.tolist(), probs):
        writer.writerow([clip_id, split, to_label(label), to_label(int(p.argmax())), *(f"{v:.6f}" for v in p)])
    write_text(path, text.getvalue())


def _ddp(model: torch.nn.Module) -> torch.nn.Module:
    if distributed.world() == 1:
        return model
    ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    """'name: saved → wanted' for every setting that differs (nested dicts by dotted name)."""
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b and key != "device":
            out.append(f"{prefix}{key}: {a} → {b}")
    return out


def _folder(approach: str, size: int, sizes: list[int]) -> str:
    """RUN/<approach>, or RUN/<approach>-lstm<N> in a sweep of LSTM sizes for every size but the paper's."""
    return approach if len(sizes) == 1 or size == HeadSettings.lstm_hidden else f"{approach}-lstm{size}"


def _out(approach: str, size: int, seed: int, sizes: list[int], seeds: list[int]) -> str:
    """The folder of one model, relative to RUN: <folder>, or <folder>/seed-<s> with several seeds."""
    return _folder(approach, size, sizes) + (f"/seed-{seed}" if len(seeds) > 1 else "")


def _union(before: list | None, now: list) -> list:
    """`before` (a run.json list) then what `now` adds, in order, without repeats."""
    kept = list(before) if isinstance(before, list) else []
    return kept + [x for x in now if x not in kept]


def _stream(*key: int) -> int:
    """A seed for one random stream (e.g. seed, epoch, rank), well mixed."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def _without(clips: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    return clips[~torch.isin(clips, removed)]


def _accuracy(probs: np.ndarray, data: FeatureSet, clips: torch.Tensor) -> float:
    return float((probs[clips.numpy()].argmax(1) == data.labels[clips].numpy()).mean())


def _save(path: Path, value: dict) -> None:
    """A checkpoint, written atomically by rank 0 only."""
    if distributed.rank() == 0:
        save_torch(value, path)
