"""What the model files beside a predictions.csv say about how it was trained: the modality weights α and
the learning curves. Read by avemo.evaluate (score.py puts α into the results, report.py draws the curves).

- `read_alpha`: α_a, α_v of a modal-fusion head (paper eq. 3), read from its model.pt (the selected epoch's
  state dict: `alpha_audio`, `alpha_visual`, a parameter when learned, a buffer when fixed); late fusion's
  fixed α = 0.56 (paper eq. 14). torch is imported only when such a model.pt is read.
- `read_curves`: the train and validation loss per epoch of every model of a folder (its log.csv, written by
  avemo/train/engine.py; late fusion: its `visual/` and `audio/` MLP classifiers), and the epoch its model.pt
  holds (`epoch`, the selected one).

The model folder is the folder of the predictions.csv: RUN/<model>[/seed-<s>], RUN/valence/<model>[/seed-<s>].
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from avemo.approaches import ALPHA_LATE
from avemo.atomic import load_torch
from avemo.errors import AvemoError
from avemo.runfolder import SETTINGS, read_settings

MODEL = "model.pt"
LOG = "log.csv"
LATE_PARTS = ("visual", "audio")  # late fusion's two MLP classifiers, RUN/late/[seed-<s>/]{visual,audio}/


@dataclass(frozen=True)
class Alpha:
    """The weights of the audio and visual terms: modal fusion's α_a, α_v (eq. 3), late fusion's α, 1 − α (eq. 14)."""

    audio: float
    visual: float
    learned: bool  # trained with the head (False: fixed at its start value, or late fusion's constant)
    start: tuple[float, float] | None  # (α_a, α_v) before training; None for late fusion and the joint pass (it
    # starts from the trained modal head's α, not from the start values its settings.json repeats)
    source: str  # the model.pt it was read from (relative to RUN), or "paper eq. 14"

    def as_dict(self) -> dict:
        start = None if self.start is None else list(self.start)
        return {"audio": self.audio, "visual": self.visual, "learned": self.learned, "start": start, "source": self.source}


@dataclass(frozen=True)
class Curve:
    """One model's log.csv: losses per epoch (None where the row has none, e.g. epoch 0 of the joint pass)."""

    label: str  # "" for the folder's own model, "visual" / "audio" for late fusion's classifiers
    log: Path
    epochs: list[int]
    train_loss: list[float | None]
    validation_loss: list[float | None]
    selected: int | None  # the epoch model.pt holds; None without a model.pt


def head_approach(folder: Path, approach: str) -> str:
    """The head type of a model folder: its approach, or for the joint pass the head it tuned (settings.json
    `head.approach`, of the folder or, for a seed folder without one, of its parent)."""
    if approach != "joint":
        return approach
    settings = read_settings(folder) if (folder / SETTINGS).is_file() else read_settings(folder.parent)
    head = settings.get("head")
    return head.get("approach", "") if isinstance(head, dict) else ""


def read_alpha(folder: Path, approach: str, run: Path) -> Alpha | None:
    """α of the model in `folder`: late fusion's constant, a modal head's from its model.pt; None for heads
    without α and for a modal head whose model.pt is absent (the report says so)."""
    if approach == "late":
        return Alpha(ALPHA_LATE, round(1 - ALPHA_LATE, 6), False, None, "paper eq. 14")
    path = folder / MODEL
    if head_approach(folder, approach) != "modal" or not path.is_file():
        return None
    saved = load_torch(path, f"delete {folder} and train it again with `avemo train`")
    state, head = saved.get("model"), (saved.get("settings") or {}).get("head") or {}
    if not isinstance(state, dict) or "alpha_audio" not in state or "alpha_visual" not in state:
        raise AvemoError(f"{path}: no alpha_audio / alpha_visual in its model; delete {folder} and train it again")
    start = (float(head.get("alpha_audio", math.nan)), float(head.get("alpha_visual", math.nan))) if approach != "joint" else None
    values = float(state["alpha_audio"]), float(state["alpha_visual"])
    return Alpha(*values, bool(head.get("learn_alpha", True)), start, _relative(path, run))


def read_curves(folder: Path, approach: str) -> list[Curve]:
    """The learning curve of every model of `folder` that has a log.csv (late fusion: of its two classifiers)."""
    parts = [(p, folder / p) for p in LATE_PARTS] if approach == "late" else [("", folder)]
    return [_curve(label, where) for label, where in parts if (where / LOG).is_file()]


def _curve(label: str, folder: Path) -> Curve:
    path = folder / LOG
    remedy = "delete it (evaluate then draws no learning curve for this model) or train the model again"
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise AvemoError(f"{path}: not a log.csv of `avemo train` ({str(e).splitlines()[0][:80]}); {remedy}") from None
    if not rows or "epoch" not in rows[0] or "train_loss" not in rows[0]:
        raise AvemoError(f"{path}: no epoch and train_loss columns (not a log.csv of `avemo train`); {remedy}")
    epochs, train, validation = [], [], []
    for line, row in enumerate(rows, start=2):
        try:
            epochs.append(int(row["epoch"]))
            train.append(_number(row.get("train_loss")))
            validation.append(_number(row.get("validation_loss")))
        except ValueError:
            raise AvemoError(f"{path}:{line}: epoch or loss is not a number; {remedy}") from None
    return Curve(label, path, epochs, train, validation, _selected_epoch(folder))


def _number(text: str | None) -> float | None:
    return None if text is None or text.strip() == "" else float(text)


def _selected_epoch(folder: Path) -> int | None:
    """The epoch the model.pt of `folder` holds (the one kept by selection), None without a model.pt."""
    path = folder / MODEL
    if not path.is_file():
        return None
    epoch = load_torch(path, f"delete {folder} and train it again with `avemo train`").get("epoch")
    return int(epoch) if isinstance(epoch, int) else None


def model_files(folder: Path, run: Path) -> dict[str, str]:
    """The files of one model that report.md links to (relative to RUN): settings.json (the folder's, else a seed
    folder's parent's), log.csv, model.pt."""
    out = {}
    settings = folder / SETTINGS if (folder / SETTINGS).is_file() else folder.parent / SETTINGS
    if settings.is_file() and _inside(settings, run):
        out["settings.json"] = _relative(settings, run)
    for name in (LOG, MODEL):
        if (folder / name).is_file():
            out[name] = _relative(folder / name, run)
    return out


def _inside(path: Path, run: Path) -> bool:
    return path.resolve().is_relative_to(Path(run).resolve())


def _relative(path: Path, run: Path) -> str:
    try:
        return Path(path).relative_to(run).as_posix()
    except ValueError:
        return str(path)
