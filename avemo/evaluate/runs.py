"""Find and read the prediction files of a run directory.

Layout read (all optional except at least one predictions.csv):

    RUN/run.json                                   written by `avemo train`
    RUN/<approach>[-<variant>]/predictions.csv     one seed; the seed is `seed` of settings.json beside it
    RUN/<approach>[-<variant>]/seed-<n>/predictions.csv   several seeds of one configuration

`<approach>` is one of visual, audio, early, late, modal (the rows of the paper's Table 1), or joint (the
end-to-end pass of `avemo train --joint`). `<variant>` is
any name for another configuration of the same approach, e.g. `modal-lstm64` for the Fig. 2 sweep; its
LSTM size is read from `head.lstm_hidden` of settings.json. A seed folder's settings.json wins over its
parent's; without one the seed is the folder's number.

A predictions.csv has the columns `clip_id,split,arousal,predicted` (labels -1/0/1; further columns such as
`p_calm` are ignored here), one row per clip (a repeated clip id is refused: it would count twice). Valence is
scored when the file also has `valence` and `predicted_valence` (rows with an empty or unknown valence, -128,
are left out of the valence scores).

Nothing unequal is averaged: two files of one configuration with the same seed are refused, and so is a
configuration whose seeds are half written (some seed folders have their predictions.csv, others, listed in
RUN/run.json or present as folders, do not): a mean over the seeds that happen to be finished would read as the
configuration's. A configuration with no predictions at all is left out and named (`missing_predictions`).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avemo.atomic import read_json
from avemo.errors import AvemoError

APPROACHES = ("visual", "audio", "early", "late", "modal")  # = avemo.train.heads.APPROACHES (tested), without torch
ROWS = (*APPROACHES, "joint")  # joint: `avemo train --joint`, the head and AlexNets tuned end to end (RUN/joint/)
TASKS = {"arousal": ("arousal", "predicted"), "valence": ("valence", "predicted_valence")}  # true, predicted column
_FOLDER = re.compile(rf"^({'|'.join(ROWS)})(?:-([A-Za-z0-9_.+-]+))?$")
_SEED = re.compile(r"^seed-(-?\d+)$")


@dataclass
class Predictions:
    """One predictions.csv: one approach, variant and seed."""

    approach: str
    variant: str  # "" for the approach as trained by default
    seed: int | None
    path: Path
    clip_ids: np.ndarray  # str [clips]
    split: np.ndarray  # str [clips]
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # task → true labels (-1/0/1; -128 unknown)
    predicted: dict[str, np.ndarray] = field(default_factory=dict)  # task → predicted labels
    lstm_hidden: int | None = None

    @property
    def name(self) -> str:
        """approach[-variant]: the row of the report."""
        return f"{self.approach}-{self.variant}" if self.variant else self.approach


def find_predictions(run: Path) -> list[Predictions]:
    """Every predictions file of the run, in Table 1 order (approach, then variant, then seed)."""
    found = []
    for folder in sorted(p for p in run.iterdir() if p.is_dir()) if run.is_dir() else []:
        match = _FOLDER.match(folder.name)
        if not match:
            continue
        approach, variant = match.group(1), match.group(2) or ""
        settings = _settings(folder)
        if (folder / "predictions.csv").is_file():
            found.append(read_predictions(folder / "predictions.csv", approach, variant, settings))
        for seed_folder in sorted(p for p in folder.iterdir() if p.is_dir() and _SEED.match(p.name)):
            if (seed_folder / "predictions.csv").is_file():
                own = _settings(seed_folder)
                seed_settings = {**settings, **own, "seed": own.get("seed", int(_SEED.match(seed_folder.name).group(1)))}
                found.append(read_predictions(seed_folder / "predictions.csv", approach, variant, seed_settings))
    found.sort(
        key=lambda p: (
            ROWS.index(p.approach),
            p.variant != "",
            p.lstm_hidden or 0,
            p.variant,
            -1 if p.seed is None else p.seed,
        )
    )
    seen: dict[tuple, Path] = {}
    for p in found:
        key = (p.approach, p.variant, p.seed)
        if key in seen:
            raise AvemoError(
                f"{p.path}: seed {p.seed} of {p.name} is also in {seen[key]}; one of them would count twice (a folder "
                "trained first with one seed, then with several, holds both layouts): delete one"
            )
        seen[key] = p.path
    return found


RUN_JSON_REMEDY = "it is written by `avemo train`: delete it and train again into this folder, or give another --run"


def missing_predictions(run: Path, found: list[Predictions]) -> list[str]:
    """Configurations the run should hold (RUN/run.json `predictions`; for an older run, its `approaches`,
    `seeds` and `lstm_hidden`) of which no predictions.csv exists (not trained yet, or failed); refuses a
    configuration with some but not all of its seeds."""
    expected = set(_expected(run))
    present = {p.path.relative_to(run).as_posix() for p in found}
    for folder in sorted(p for p in run.iterdir() if p.is_dir() and _FOLDER.match(p.name)) if run.is_dir() else []:
        for seed_folder in folder.iterdir():
            if seed_folder.is_dir() and _SEED.match(seed_folder.name):
                expected.add(f"{folder.name}/{seed_folder.name}/predictions.csv")
    by_folder: dict[str, set[str]] = {}
    for name in expected | present:
        by_folder.setdefault(name.split("/")[0], set()).add(name)
    missing = []
    for folder, names in sorted(by_folder.items()):
        absent, have = sorted(names - present), names & present
        if absent and have:
            raise AvemoError(
                f"{run / folder}: half written: {', '.join(absent)} missing while {len(have)} other seed(s) of it are "
                "there (RUN/run.json lists what was started); a mean over the finished seeds would pass for all of "
                f"them. Finish it (run the same `avemo train` command again: it resumes), or delete {run / folder}"
            )
        if absent:
            missing.append(folder)
    return missing


def _expected(run: Path) -> list[str]:
    """The predictions files RUN/run.json says the run holds (relative paths), [] without run.json."""
    path = run / "run.json"
    if not path.exists():
        return []
    info = read_json(path, RUN_JSON_REMEDY)
    listed = info.get("predictions")
    if isinstance(listed, list) and all(isinstance(n, str) for n in listed):
        return listed
    seeds, approaches, sizes = info.get("seeds"), info.get("approaches"), info.get("lstm_hidden") or [256]
    if not isinstance(seeds, list) or not isinstance(approaches, list) or not isinstance(sizes, list):
        return []  # hand-written, or older than these records: only the folders on disk are checked
    names = []
    for size in sizes:
        for approach in approaches:
            folder = approach if len(sizes) == 1 or size == 256 else f"{approach}-lstm{size}"
            if approach == "late" and folder != approach:
                continue
            names += [f"{folder}/seed-{s}/predictions.csv" for s in seeds] if len(seeds) > 1 else [f"{folder}/predictions.csv"]
    return names


def _settings(folder: Path) -> dict:
    path = folder / "settings.json"
    if not path.is_file():
        return {}
    return read_json(path, "it is written by `avemo train` with predictions.csv beside it: train that folder again")


def read_predictions(path: Path, approach: str, variant: str = "", settings: dict | None = None) -> Predictions:
    """Read one predictions.csv; a missing column or a bad label is one clear error naming the file."""
    settings = settings or {}
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = set(reader.fieldnames or [])
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise AvemoError(f"{path}: not a predictions CSV ({str(e).splitlines()[0][:100]})") from None
    missing = {"clip_id", "split", "arousal", "predicted"} - columns
    if missing:
        raise AvemoError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    first: dict[str, int] = {}
    for i, row in enumerate(rows):
        clip = row["clip_id"]
        if clip in first:
            raise AvemoError(
                f"{path}:{i + 2}: clip {clip} is listed twice (also on line {first[clip] + 2}); it would count twice: "
                "a predictions file has one row per clip (write it again with `avemo train`)"
            )
        first[clip] = i
    out = Predictions(
        approach=approach,
        variant=variant,
        seed=settings.get("seed"),
        path=path,
        clip_ids=np.array([r["clip_id"] for r in rows], dtype=str),
        split=np.array([r["split"] for r in rows], dtype=str),
        lstm_hidden=(settings.get("head") or {}).get("lstm_hidden"),
    )
    for task, (true_column, predicted_column) in TASKS.items():
        if true_column in columns and predicted_column in columns:
            out.labels[task] = _labels(rows, true_column, path, allow_unknown=task != "arousal")
            out.predicted[task] = _labels(rows, predicted_column, path, allow_unknown=task != "arousal")
    return out


def _labels(rows: list[dict], column: str, path: Path, allow_unknown: bool) -> np.ndarray:
    values = np.empty(len(rows), np.int64)
    for i, row in enumerate(rows):
        text = (row[column] or "").strip()
        if allow_unknown and text in ("", "-128"):
            values[i] = -128
            continue
        if text not in ("-1", "0", "1"):
            raise AvemoError(f"{path}:{i + 2}: {column} must be -1, 0 or 1, got {text!r}")
        values[i] = int(text)
    return values
