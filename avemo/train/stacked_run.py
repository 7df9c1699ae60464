"""`avemo train --stacked`: the models of a run trained at once (avemo.train.stacked), written as one by one.

For each target and LSTM size, every model of the plan (approaches × seeds; late fusion's two per-second MLP
classifiers, or with `late_from` lstm the visual and audio heads) whose folder holds no model yet is trained
in one stack. After the last epoch each gets what `engine.fit` leaves in its folder: model.pt (the selected
epoch, with the trainer's extras), log.csv and last.pt (the last epoch's weights and SGD momentum, the record
the trainer checks, the progress marked finished). Then the trainer's own pass runs over the plan as always:
it finds each model finished, loads model.pt, predicts every clip and writes settings.json, predictions.csv
and late fusion with its own writers (run.json too, before the stack). A stacked run is therefore a run like any other: evaluate,
predict, export, `--joint`, and a later `avemo train` (stacked or not) reuse its models.

Nothing is written before the last epoch: a stacked pass that is interrupted starts again from scratch. A
folder that already holds a model (finished, an interrupted one-by-one training, other settings) is left to
the trainer, which reuses, resumes or refuses it as it does without --stacked.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from avemo.atomic import ensure_dir, save_torch
from avemo.errors import AvemoError
from avemo.runfolder import write_log
from avemo.train import engine
from avemo.train.heads import EmotionHead
from avemo.train.settings import TrainSettings
from avemo.train.stacked import KINDS, Kind, StackedRun, train_models
from avemo.train.trainer import Split, Sweep, head_checkpoints, make_optimizer, plan


def check(settings: TrainSettings) -> None:
    """Refuse what stacked training does not do, before anything is read or written."""
    if settings.clip_grad > 0:
        raise AvemoError("--stacked: gradient clipping (--clip-grad) works per model, not in a stack; give --clip-grad 0")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise AvemoError("--stacked trains on one device: start it without torchrun (one process)")
    if settings.head.temporal != "lstm":
        raise AvemoError("--stacked trains the approaches' LSTM heads: give a head with temporal lstm")


@dataclass(frozen=True)
class Pending:
    """One model the stacked pass trains: its kind and seed, its settings as the trainer builds them, its folder."""

    kind: Kind
    seed: int
    settings: TrainSettings
    out: Path


def train_pending(run: Path, split: Split, settings: TrainSettings, order: list[str], sweep: Sweep) -> None:
    """Train at once every model of settings.target not yet in RUN (one stack per LSTM size); write each one's
    model.pt, log.csv and last.pt."""
    for size in sweep.sizes:
        todo = pending(run, split, settings, order, sweep, size)
        if not todo:
            continue
        print(f"stacked: training {len(todo)} models at once (LSTM {size}, {settings.target})")
        head = replace(settings.head, lstm_hidden=size)
        result = train_models(
            split.data, replace(settings, head=head), [(m.kind, m.seed) for m in todo], split.fitting, split.validation
        )
        for number, model in enumerate(todo):
            write_model(run, split, model, result, number)


def pending(run: Path, split: Split, settings: TrainSettings, order: list[str], sweep: Sweep, size: int) -> list[Pending]:
    """The models of this size to train, in the stack's order (KINDS, then seeds); models the trainer would
    refuse (an audio head without a sounding clip to fit) are left to it, to report."""
    sounding = bool(split.data.has_audio[split.fitting].any())
    out = []
    for plan_size, seed, approach, _, path in plan(order, settings, sweep.seeds, sweep.sizes):
        if plan_size != size or (approach == "late" and settings.late_from == "lstm"):
            continue
        model_settings = replace(settings, head=replace(settings.head, approach=approach, lstm_hidden=size), seed=seed)
        for kind, part in _parts(approach, settings.late_from):
            head = replace(model_settings.head, approach=kind.approach, temporal=kind.temporal)
            folder = run / path / part
            if not _holds_model(folder) and (sounding or kind.approach != "audio"):
                out.append(Pending(kind, seed, replace(model_settings, head=head), folder))
    return sorted(out, key=lambda m: (KINDS.index(m.kind), m.seed))


def _parts(approach: str, late_from: str) -> list[tuple[Kind, str]]:
    """The heads one approach of the plan trains, with their folders under its own."""
    if approach == "late":
        return [(next(k for k in KINDS if k.name == f"late/{m}"), m) for m in ("visual", "audio")]
    return [(next(k for k in KINDS if k.name == approach), "")]


def _holds_model(folder: Path) -> bool:
    return any((folder / name).exists() or (folder / name).is_symlink() for name in ("last.pt", "model.pt"))


def write_model(run: Path, split: Split, model: Pending, result: StackedRun, number: int) -> None:
    """OUT/model.pt, log.csv and last.pt of one stacked model, as engine.fit leaves them after its last epoch."""
    trained = result.models[number]
    selected, last, momenta = result.states(number)
    out = ensure_dir(model.out, under=run)
    checkpoints = head_checkpoints(model.settings, out, split.data, split.norm, trained.examples, split.validation)
    save_torch({"model": selected, "epoch": trained.best_epoch} | checkpoints.extras, out / checkpoints.best)
    write_log(out / "log.csv", trained.log)
    progress = engine.Progress(trained.log[-1]["epoch"], trained.log, trained.best, trained.best_epoch, trained.stale, True)
    state = {"model": last, "optimizer": _optimizer_state(model.settings, last, momenta), "record": checkpoints.record}
    save_torch(state | {"progress": asdict(progress)}, out / "last.pt")


def _optimizer_state(settings: TrainSettings, last: dict, momenta: dict) -> dict:
    """The state dict of the trainer's optimizer (make_optimizer) for this head, holding the stack's momentum."""
    model = EmotionHead(settings.head)
    model.load_state_dict(last)
    optimizer = make_optimizer(model, settings)
    for name, param in model.named_parameters():
        if name in momenta:
            optimizer.state[param]["momentum_buffer"] = momenta[name].clone()
    return optimizer.state_dict()
