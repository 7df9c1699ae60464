"""The one training engine: every model avemo trains (AlexNet fine-tuning at extraction, the heads, the joint
pass) is a `Task` run by `fit`. The engine owns what they share; a task supplies its examples, its loss, its
validation score and its trainable state.

- Epochs and random streams: epoch e shuffles the examples with a generator seeded from (seed, e) and seeds
  torch's global stream (dropout) from (seed, e, rank + 1), so a resumed run draws what an uninterrupted one
  would have drawn.
- Under torchrun every rank draws the same global batches and takes every world-th example of each; its loss
  sum is scaled by world / |batch|, so the gradients DistributedDataParallel averages are those of the whole
  batch on one process. A rank left without examples by a short last batch still takes part with a zero loss.
- Validation after every epoch; selection by validation loss, accuracy or the last epoch (epoch 0, the
  start, is a candidate when `Loop.start_candidate`); early stop after `patience` epochs without a better
  score; the selected state is loaded into the task's model at the end.
- One checkpoint format, OUT/last.pt: {"model": trainable state, "optimizer", "record" (what must match to
  resume), "progress"}, written after every epoch, or with `Loop.checkpoint_share` after an epoch once the
  training since the last write took at least that write's time / the share (and always after the last
  epoch); OUT/<best> holds the selected epoch's state ({"model", "epoch"} plus the task's extras);
  OUT/log.csv one row per epoch (runfolder.write_log).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from avemo import distributed
from avemo.atomic import load_torch, save_torch
from avemo.errors import AvemoError
from avemo.log import progress as progress_bar
from avemo.runfolder import write_log

SELECT = ("loss", "accuracy", "last")


class Task(Protocol):
    """What one kind of training supplies to the engine."""

    model: nn.Module  # what is trained (wrapped in DDP under torchrun)
    counts_correct: bool  # whether `losses` also returns the number of correct examples (train_accuracy)

    def examples(self) -> torch.Tensor:
        """Numbers of the training examples, in a canonical order (the engine shuffles them per epoch)."""
        ...

    def losses(self, net: nn.Module, batch: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Loss per example [B] of `net` (the model, or its DDP wrapper) on this rank's share of a batch;
        optionally with the number of correctly classified examples (a 0-d tensor)."""
        ...

    def validate(self) -> dict[str, float]:
        """{"validation_loss", "validation_accuracy"} over the validation examples (all ranks), {} without."""
        ...

    def state(self) -> dict:
        """The trainable state to checkpoint (a state dict, or part of one)."""
        ...

    def load(self, state: dict) -> None:
        """Load a state saved by `state()` into the model."""
        ...


@dataclass(frozen=True)
class Loop:
    epochs: int
    batch_size: int
    seed: int
    select: str = "last"  # loss | accuracy | last (without validation examples: last)
    patience: int = 0  # stop after this many epochs without a better validation score; 0 = never early
    start_candidate: bool = False  # epoch 0 (the model as given) may be selected
    clip_grad: float = 0.0  # max gradient norm; 0 = off
    timed: bool = False  # a `seconds` column in the log
    say_epochs: bool = False  # print one line per epoch
    label: str = "train"  # progress bar and messages
    on_mismatch: str = "refuse"  # a last.pt with another record: refuse, or restart from scratch
    # Zero the gradient buffers in place (an AlexNet's fc6 alone is 150 MB: not reallocated every step) instead
    # of dropping them (a head's: freeing saves the fill and the accumulation, 6% of a CPU epoch; same values).
    keep_grads: bool = False
    # write last.pt only once the training since the last write took ≥ its write time / this (0: every epoch);
    # a kill then loses a little more, and resuming replays those epochs bit for bit
    checkpoint_share: float = 0.0

    def __post_init__(self) -> None:
        if self.select not in SELECT:
            raise AvemoError(f"select {self.select!r}: must be one of {', '.join(SELECT)}")


@dataclass
class Progress:
    epoch: int = 0  # the last finished epoch
    log: list[dict] = field(default_factory=list)
    best: float | None = None  # the selected epoch's score (higher is better)
    best_epoch: int = 0
    stale: int = 0  # epochs since the score last improved
    finished: bool = False


@dataclass(frozen=True)
class Checkpoints:
    """Where the engine keeps a task's progress (None: nowhere; fine-tuning at extraction is not resumed)."""

    folder: Path
    record: dict  # what must be equal to resume (settings, clips, cache identity, ...)
    best: str = "best.pt"  # the file of the selected state
    extras: dict = field(default_factory=dict)  # saved with the selected state (e.g. a head's z-score statistics)
    remedy: str = "give another --run, or delete that folder to train it again"


def stream(*key: int) -> int:
    """A seed for one random stream (e.g. seed, epoch, rank), well mixed."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def sgd(params: list, **options) -> torch.optim.Optimizer:
    """torch's SGD, fused into one kernel where this torch has it for the device (a third faster on CPU)."""
    try:
        return torch.optim.SGD(params, **options, fused=True)
    except (RuntimeError, TypeError):  # older torch, or a device without the fused kernel
        return torch.optim.SGD(params, **options)


def fit(task: Task, optimizer: torch.optim.Optimizer, loop: Loop, checkpoints: Checkpoints | None = None) -> Progress:
    """Train `task` for `loop.epochs` epochs (resuming from checkpoints.folder/last.pt when there is one) and
    leave the selected epoch's state in task.model; returns the progress (log, selected epoch)."""
    progress = _resume(task, optimizer, loop, checkpoints) if checkpoints else Progress()
    net = _ddp(task.model)
    if progress.epoch == 0 and not progress.finished and loop.start_candidate:
        start = {"epoch": 0, "train_loss": ""} | ({"train_accuracy": ""} if task.counts_correct else {})  # log.csv's columns
        _consider(task, loop, checkpoints, progress, start | task.validate(), 0.0)
    bar = progress_bar(range(progress.epoch + 1, loop.epochs + 1), desc=loop.label, unit="epoch", disable=progress.finished)
    writes = _Writes(loop.checkpoint_share)
    for epoch in [] if progress.finished else bar:
        started = time.perf_counter()
        row = {"epoch": epoch} | train_epoch(net, task, optimizer, loop, epoch)
        row |= task.validate()
        _consider(task, loop, checkpoints, progress, row, time.perf_counter() - started)
        progress.finished = _stopping(loop, progress) or epoch == loop.epochs
        if checkpoints and (progress.finished or writes.due()):
            writes.timed(lambda: _save_last(task, optimizer, checkpoints, progress))
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "epoch" and v != ""})
        if _stopping(loop, progress):
            print(f"{distributed.tag()}{loop.label}: no better validation {loop.select} for {loop.patience} epochs; stopped")
            break
    bar.close()
    distributed.barrier()
    _restore_selected(task, progress, checkpoints)
    return progress


class _Writes:
    """When last.pt is due: always with share 0, else once the time since the last write (or the start) is at
    least the last write's duration / share (the first epoch's write measures it)."""

    def __init__(self, share: float):
        self.share, self.took, self.since = share, 0.0, time.perf_counter()

    def due(self) -> bool:
        return self.share <= 0 or (time.perf_counter() - self.since) * self.share >= self.took

    def timed(self, write) -> None:
        started = time.perf_counter()
        write()
        self.since = time.perf_counter()
        self.took = self.since - started


def train_epoch(net: nn.Module, task: Task, optimizer: torch.optim.Optimizer, loop: Loop, epoch: int) -> dict:
    """One pass of SGD over the task's examples in minibatches; the mean train loss (and accuracy when the
    task counts it) over all ranks."""
    world, rank = distributed.world(), distributed.rank()
    order = epoch_order(task.examples(), loop.seed, epoch)
    torch.manual_seed(stream(loop.seed, epoch, rank + 1))  # dropout
    trainable = [p for p in task.model.parameters() if p.requires_grad]
    device = trainable[0].device if trainable else torch.device("cpu")
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss, correct
    net.train()
    for batch in order.split(loop.batch_size):
        mine = batch[rank::world]
        optimizer.zero_grad(set_to_none=not loop.keep_grads)
        if len(mine):
            losses, correct = _losses(task, net, mine)
            loss = losses.sum() * (world / len(batch))
            sums += torch.stack([losses.detach().sum().double(), correct.double().to(device)])
        else:  # a short last batch: still take part in DDP's gradient exchange, which only a forward through
            # `net` arms (a loss on the bare parameters leaves this rank out of the all-reduce: the others hang)
            loss = _losses(task, net, batch[:1])[0].sum() * 0
        loss.backward()
        if loop.clip_grad > 0:
            nn.utils.clip_grad_norm_(trainable, loop.clip_grad)
        optimizer.step()
    if world > 1:
        torch.distributed.all_reduce(sums)
    row = {"train_loss": float(sums[0]) / max(len(order), 1)}
    return row | ({"train_accuracy": float(sums[1]) / max(len(order), 1)} if task.counts_correct else {})


def epoch_order(examples: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """The examples in the order epoch `epoch` trains them (the same on every rank)."""
    return examples[torch.randperm(len(examples), generator=torch.Generator().manual_seed(stream(seed, epoch)))]


def _losses(task: Task, net: nn.Module, mine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = task.losses(net, mine)
    losses, correct = out if isinstance(out, tuple) else (out, torch.zeros(()))
    return losses, correct


def _by_epoch(loop: Loop, row: dict) -> bool:
    """Whether `_score` ranks this row by its epoch (the latest is the best)."""
    return loop.select == "last" or row.get(f"validation_{loop.select}", "") == ""


def _score(loop: Loop, row: dict) -> float:
    """Higher is better: minus the validation loss, the validation accuracy, or the epoch (select last, or
    no validation)."""
    if loop.select == "loss" and row.get("validation_loss", "") != "":
        return -row["validation_loss"]
    if loop.select == "accuracy" and row.get("validation_accuracy", "") != "":
        return row["validation_accuracy"]
    return float(row["epoch"])


def _consider(task: Task, loop: Loop, checkpoints: Checkpoints | None, progress: Progress, row: dict, seconds: float) -> None:
    """Log an epoch's row and keep its state when its score is the best so far."""
    row = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
    progress.log.append(row | ({"seconds": round(seconds, 2)} if loop.timed else {}))
    progress.epoch = row["epoch"]
    score = _score(loop, row)
    if progress.best is None or score > progress.best:
        progress.best, progress.best_epoch, progress.stale = score, row["epoch"], 0
        # Selected by epoch (select last, or no validation), every epoch is the best so far: only the last one's
        # state is written (a joint pass's is 0.45 GB; last.pt holds the others' to resume).
        kept = not _by_epoch(loop, row) or row["epoch"] == loop.epochs
        if checkpoints and kept and distributed.rank() == 0:
            best = {"model": task.state(), "epoch": row["epoch"]} | checkpoints.extras
            save_torch(best, checkpoints.folder / checkpoints.best)
    else:
        progress.stale += 1
    if checkpoints and distributed.rank() == 0:
        write_log(checkpoints.folder / "log.csv", progress.log)
    if loop.say_epochs and distributed.rank() == 0:
        print(f"{loop.label} epoch {row['epoch']}/{loop.epochs}: " + _row_text(progress.log[-1]))


def _row_text(row: dict) -> str:
    parts = [f"{k.replace('_', ' ')} {v:.4f}" for k, v in row.items() if k not in ("epoch", "seconds") and v != ""]
    return ", ".join(parts + ([f"{row['seconds']:.1f} s"] if "seconds" in row else []))


def _stopping(loop: Loop, progress: Progress) -> bool:
    return loop.patience > 0 and progress.stale >= loop.patience


def _save_last(task: Task, optimizer: torch.optim.Optimizer, checkpoints: Checkpoints, progress: Progress) -> None:
    if distributed.rank() == 0:
        state = {"model": task.state(), "optimizer": optimizer.state_dict(), "record": checkpoints.record}
        save_torch(state | {"progress": asdict(progress)}, checkpoints.folder / "last.pt")


def _restore_selected(task: Task, progress: Progress, checkpoints: Checkpoints | None) -> None:
    """Load the selected epoch's state into the model when it is not the last epoch's (which is in memory)."""
    if progress.best_epoch == progress.epoch or checkpoints is None:
        return
    path = checkpoints.folder / checkpoints.best
    saved = load_torch(path, checkpoints.remedy)
    if saved.get("epoch") != progress.best_epoch:
        raise AvemoError(f"{path}: not the selected epoch {progress.best_epoch} of this training; {checkpoints.remedy}")
    _load(task, saved, path, checkpoints.remedy)


def _load(task: Task, saved: dict, path: Path, remedy: str) -> None:
    try:
        task.load(saved["model"])
    except (KeyError, TypeError, RuntimeError, AttributeError, ValueError) as e:
        reason = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
        raise AvemoError(f"{path}: not a checkpoint of this model ({reason}); {remedy}") from None


def _resume(task: Task, optimizer: torch.optim.Optimizer, loop: Loop, checkpoints: Checkpoints) -> Progress:
    """The progress of FOLDER/last.pt with its model and optimizer state loaded, or a fresh start; a last.pt
    of another record is refused (or, `on_mismatch` restart, ignored), one of no avemo training refused."""
    path = checkpoints.folder / "last.pt"
    if not path.exists() and not path.is_symlink():
        return Progress()
    saved = load_torch(path, checkpoints.remedy)
    try:
        progress = Progress(**saved["progress"])
        differ = differences(saved["record"], checkpoints.record)
    except (KeyError, TypeError, AttributeError):
        raise AvemoError(f"{path}: not a checkpoint written by avemo's training; {checkpoints.remedy}") from None
    if differ and loop.on_mismatch == "restart":
        print(f"{distributed.tag()}{loop.label}: {path} was made with other settings or inputs; starting again")
        return Progress()
    if differ:
        raise AvemoError(
            f"{checkpoints.folder} holds a model trained with other settings ({'; '.join(differ[:3])}): {checkpoints.remedy}"
        )
    _load(task, saved, path, checkpoints.remedy)
    try:
        optimizer.load_state_dict(saved["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError):
        raise AvemoError(f"{path}: not a checkpoint of this training (its optimizer state); {checkpoints.remedy}") from None
    if not progress.finished:
        print(f"{distributed.tag()}{loop.label}: resuming after epoch {progress.epoch}")
    return progress


def differences(saved: dict, wanted: dict) -> list[str]:
    """What differs between a checkpoint's record and this training's, in words: the cache, the clips, then
    'name: saved → wanted' for every setting (nested by dotted name; the device does not count)."""
    out = []
    if "cache_sha256" in wanted and saved.get("cache_sha256") != wanted["cache_sha256"]:
        was = "a cache not recorded (an older avemo)" if saved.get("cache_sha256") is None else "another cache"
        out.append(f"the cache: {was}, not these features")
    elif "fitting" in wanted and saved.get("fitting") != wanted["fitting"]:
        out.append("the clips trained on (another validation split)")
    out += _setting_differences(saved.get("settings", {}), wanted.get("settings", {}))
    others = sorted(k for k in set(saved) | set(wanted) if k not in ("cache_sha256", "fitting", "settings"))
    return out + [f"{k}" for k in others if saved.get(k) != wanted.get(k)]


def _setting_differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _setting_differences(a, b, f"{prefix}{key}.")
        elif a != b and key != "device":
            out.append(f"{prefix}{key}: {a} → {b}")
    return out


def _ddp(model: nn.Module) -> nn.Module:
    """The model wrapped for DistributedDataParallel under torchrun (every rank built the same weights from
    the same seed and files: no broadcast at start)."""
    if distributed.world() == 1:
        return model
    ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, init_sync=False, broadcast_buffers=False)
