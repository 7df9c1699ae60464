"""The run folder: the one owner of its layout and of the files it names (docs/run-format.md). train and the
joint pass write through it; evaluate and predict read through it. No torch at import.

    RUN/run.json                          what the run holds and which cache it was trained on
    RUN/log.txt                           what every `avemo train` into RUN did (settings, phases, times)
    RUN/<model>/                          one trained model: settings.json, log.csv, model.pt, last.pt while
                                          training, predictions.csv
    <model> = <approach>[-lstm<N>][/seed-<s>]   -lstm<N>: a Fig. 2 sweep size other than the paper's 256;
                                          seed-<s>: one of several seeds
    RUN/late/{visual,audio}/              late fusion's two per-second MLP classifiers (paper eq. 14)
    RUN/joint/                            the joint pass: as a model, plus visual.pt and audio.pt

predictions.csv (written by `write_predictions`, read by `read_predictions`): `clip_id,split,arousal,predicted`
(classes -1/0/1), then `p_calm,p_neutral,p_active`; one row per clip. Readers ignore further columns but score
valence when `valence,predicted_valence` are there (empty or -128: unknown).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avemo.approaches import ROWS, TUNABLE, UNKNOWN_LABEL
from avemo.atomic import read_json, write_json, write_text
from avemo.datasets.labels import AROUSAL_NAMES, to_label
from avemo.errors import AvemoError

RUN_JSON = "run.json"
LOG = "log.txt"
SETTINGS = "settings.json"
PREDICTIONS = "predictions.csv"
PAPER_LSTM = 256  # the LSTM size whose folder carries no -lstm<N> suffix (Fig. 2's best, the default)
JOINT = "joint"
FOLDER = re.compile(rf"^({'|'.join(ROWS)})(?:-([A-Za-z0-9_.+-]+))?$")  # <approach>[-<variant>]
SEED = re.compile(r"^seed-(-?\d+)$")
RUN_JSON_REMEDY = (
    "delete it and run `avemo train` again into this folder with the cache it was trained on (finished models are "
    "kept: each checkpoint records its cache, and another cache is refused)"
)


# -- names --------------------------------------------------------------------------------------------
def model_folder(approach: str, size: int, sizes: list[int]) -> str:
    """<approach>, or <approach>-lstm<N> in a sweep of LSTM sizes for every size but the paper's."""
    return approach if len(sizes) == 1 or size == PAPER_LSTM else f"{approach}-lstm{size}"


def model_path(approach: str, size: int, seed: int, sizes: list[int], seeds: list[int]) -> str:
    """The folder of one model, relative to RUN: <folder>, or <folder>/seed-<s> with several seeds."""
    return model_folder(approach, size, sizes) + (f"/seed-{seed}" if len(seeds) > 1 else "")


def parse_folder(name: str) -> tuple[str, str] | None:
    """(approach, variant) of a model folder's name, None for any other folder."""
    match = FOLDER.match(name)
    return (match.group(1), match.group(2) or "") if match else None


def seed_of(name: str) -> int | None:
    """The seed of a `seed-<s>` folder name, None for any other name."""
    match = SEED.match(name)
    return int(match.group(1)) if match else None


def expected_names(approaches: list[str], seeds: list[int], sizes: list[int]) -> list[str]:
    """The predictions files (relative to RUN) that training these approaches, seeds and sizes writes;
    late fusion's MLP classifiers have no LSTM: one size is enough."""
    names = []
    for size in sizes:
        for approach in approaches:
            folder = model_folder(approach, size, sizes)
            if approach == "late" and folder != approach:
                continue
            names += [f"{model_path(approach, size, s, sizes, seeds)}/predictions.csv" for s in seeds]
    return names


# -- run.json ------------------------------------------------------------------------------------------
def read_info(run: Path) -> dict:
    """RUN/run.json, checked: a JSON object naming the cache (one clear line when it is not)."""
    path = Path(run) / RUN_JSON
    if not path.is_file():
        raise AvemoError(f"{path}: not found; is {run} a run directory of `avemo train`?")
    info = read_json(path, RUN_JSON_REMEDY)
    if not isinstance(info.get("cache"), str) or not info["cache"]:
        raise AvemoError(f'{path}: names no cache (no "cache" entry); {RUN_JSON_REMEDY}')
    return info


def write_info(run: Path, info: dict) -> None:
    write_json(Path(run) / RUN_JSON, info)


def cache_of(run: Path) -> Path:
    """The cache a run directory was trained on (RUN/run.json)."""
    return Path(read_info(run)["cache"])


def check_cache(run: Path, cache: str | Path) -> dict | None:
    """Refuse RUN for `cache` when RUN/run.json records another cache (by the identity of its features, not
    its path: a cache extracted again at the same path is another cache). Returns run.json (None if absent)."""
    from avemo.train.data import cache_identity  # torch: only when training

    path = Path(run) / RUN_JSON
    if not path.exists() and not path.is_symlink():
        return None
    info = read_info(run)
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


def union(before: list | None, now: list) -> list:
    """`before` (a run.json list) then what `now` adds, in order, without repeats."""
    kept = list(before) if isinstance(before, list) else []
    return kept + [x for x in now if x not in kept]


# -- finding trained models ----------------------------------------------------------------------------
def head_checkpoint(run: Path, approach: str, seed: int | None) -> Path:
    """RUN/<approach>/model.pt, or RUN/<approach>/seed-<seed>/model.pt: the head the joint pass starts from;
    one clear line when there is none."""
    if approach not in TUNABLE:
        raise AvemoError(f"approach {approach}: no single head to tune jointly; use {', '.join(TUNABLE)}")
    folder = Path(run) / approach
    seeds = sorted(s for p in folder.glob("seed-*/model.pt") if (s := seed_of(p.parent.name)) is not None)
    if seed is not None:
        path = folder / f"seed-{seed}" / "model.pt"
        if path.is_file():
            return path
        if (folder / "model.pt").is_file() and read_settings(folder).get("seed") == seed:
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


def has_head(run: Path, approach: str) -> bool:
    """Whether RUN/<approach> holds a trained head (of any seed)."""
    return any((Path(run) / approach).glob("**/model.pt"))


def head_paths(run: Path, approach: str) -> list[Path]:
    """The model.pt files predict reads for an approach; late fusion: its visual and audio models (the
    per-second MLP classifiers in RUN/late/, or the visual and audio heads when trained `--late-from lstm`)."""
    run = Path(run)
    if approach != "late":
        return [run / approach / "model.pt"]
    path = run / "late" / "settings.json"
    remedy = "train late fusion again with `avemo train --approach late`"
    late_from = read_json(path, remedy).get("late_from", "lstm") if path.is_file() else "mlp"
    return [(run / "late" / m if late_from == "mlp" else run / m) / "model.pt" for m in ("visual", "audio")]


# -- files of one model --------------------------------------------------------------------------------
def write_predictions(path: Path, clip_ids: np.ndarray, split: np.ndarray, labels: list[int], probs: np.ndarray) -> None:
    """predictions.csv: every clip with its split, true class, predicted class and class probabilities."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["clip_id", "split", "arousal", "predicted", *(f"p_{n}" for n in AROUSAL_NAMES)])
    for clip_id, part, label, p in zip(clip_ids, split, labels, probs):
        writer.writerow([clip_id, part, to_label(label), to_label(int(p.argmax())), *(f"{v:.6f}" for v in p)])
    write_text(path, text.getvalue())


def write_log(path: Path, rows: list[dict]) -> None:
    """log.csv of one model: one row per epoch (the engine's columns)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["epoch"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


# -- reading predictions back (evaluate) -----------------------------------------------------------------
PREDICTION_COLUMNS = ("clip_id", "split", "arousal", "predicted")  # what a predictions.csv must have
TASKS = {"arousal": ("arousal", "predicted"), "valence": ("valence", "predicted_valence")}  # true, predicted column


@dataclass
class Predictions:
    """One predictions.csv: one approach, variant and seed."""

    approach: str
    variant: str  # "" for the approach as trained by default; e.g. "lstm64" for RUN/modal-lstm64
    seed: int | None
    path: Path
    clip_ids: np.ndarray  # str [clips]
    split: np.ndarray  # str [clips]
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # task → true labels (-1/0/1; UNKNOWN_LABEL)
    predicted: dict[str, np.ndarray] = field(default_factory=dict)  # task → predicted labels
    lstm_hidden: int | None = None

    @property
    def name(self) -> str:
        """approach[-variant]: the row of the report."""
        return f"{self.approach}-{self.variant}" if self.variant else self.approach


def read_settings(folder: Path) -> dict:
    """FOLDER/settings.json, {} when there is none."""
    path = Path(folder) / SETTINGS
    if not path.is_file():
        return {}
    return read_json(path, f"delete {folder} and train it again with `avemo train`")


def model_folders(run: Path) -> list[tuple[Path, str, str]]:
    """(folder, approach, variant) of every model folder of RUN, by name."""
    run = Path(run)
    folders = sorted(p for p in run.iterdir() if p.is_dir()) if run.is_dir() else []
    return [(p, *parsed) for p in folders if (parsed := parse_folder(p.name)) is not None]


def seed_folders(folder: Path) -> list[tuple[Path, int]]:
    """(folder, seed) of every `seed-<s>` folder in a model folder, by name."""
    found = ((p, seed_of(p.name)) for p in sorted(Path(folder).iterdir()) if p.is_dir())
    return [(p, seed) for p, seed in found if seed is not None]


def find_predictions(run: Path) -> list[Predictions]:
    """Every predictions.csv of RUN, in Table 1 order (approach, then variant, then seed). The seed of
    <model>/predictions.csv is `seed` of the settings.json beside it; a seed folder's settings.json wins over its
    parent's, and without one its seed is the folder's number. One seed in two files is refused."""
    found = []
    for folder, approach, variant in model_folders(run):
        settings = read_settings(folder)
        if (folder / PREDICTIONS).is_file():
            found.append(read_predictions(folder / PREDICTIONS, approach, variant, settings))
        for seed_folder, number in seed_folders(folder):
            if (seed_folder / PREDICTIONS).is_file():
                own = read_settings(seed_folder)
                seed_settings = {**settings, **own, "seed": own.get("seed", number)}
                found.append(read_predictions(seed_folder / PREDICTIONS, approach, variant, seed_settings))
    found.sort(key=lambda p: (ROWS.index(p.approach), p.variant != "", p.lstm_hidden or 0, p.variant, _seed_key(p.seed)))
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


def _seed_key(seed: int | None) -> int:
    return -1 if seed is None else seed


def read_listing(run: Path) -> dict | None:
    """RUN/run.json as written, None without one; unlike `read_info` it need not name a cache (a run written by
    hand can be evaluated), but it must be a JSON object."""
    path = Path(run) / RUN_JSON
    return read_json(path, RUN_JSON_REMEDY) if path.exists() else None


def listed_predictions(run: Path) -> list[str]:
    """The predictions files RUN/run.json says the run holds (relative to RUN): its `predictions`, or for a
    run.json older than that list, what its `approaches`, `seeds` and `lstm_hidden` train; [] without them."""
    info = read_listing(run) or {}
    listed = info.get("predictions")
    if isinstance(listed, list) and all(isinstance(n, str) for n in listed):
        return listed
    seeds, approaches, sizes = info.get("seeds"), info.get("approaches"), info.get("lstm_hidden") or [PAPER_LSTM]
    if not isinstance(seeds, list) or not isinstance(approaches, list) or not isinstance(sizes, list):
        return []  # hand-written, or older than these records: only the folders on disk are checked
    return expected_names(approaches, seeds or [0], sizes)  # no seeds recorded: one, without a seed folder


def missing_predictions(run: Path, found: list[Predictions]) -> list[str]:
    """Model folders the run should hold (`listed_predictions`, and every `seed-<s>` folder on disk) of which no
    predictions.csv exists (not trained yet, or failed); refuses a folder with some but not all of its seeds: a
    mean over the finished seeds would pass for all of them."""
    run = Path(run)
    expected = set(listed_predictions(run))
    present = {p.path.relative_to(run).as_posix() for p in found}
    for folder, *_ in model_folders(run):
        expected |= {f"{folder.name}/{s.name}/{PREDICTIONS}" for s, _ in seed_folders(folder)}
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


def read_predictions(path: Path, approach: str, variant: str = "", settings: dict | None = None) -> Predictions:
    """Read one predictions.csv (its seed and LSTM size from `settings`, a settings.json); a missing column, a
    repeated clip or a bad label is one clear error naming the file (and line)."""
    settings = settings or {}
    columns, rows = _read_rows(path)
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


def _read_rows(path: Path) -> tuple[set[str], list[dict]]:
    """The columns and rows of a predictions.csv, checked: the needed columns, one row per clip."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = set(reader.fieldnames or [])
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise AvemoError(f"{path}: not a predictions CSV ({str(e).splitlines()[0][:100]})") from None
    missing = set(PREDICTION_COLUMNS) - columns
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
    return columns, rows


def _labels(rows: list[dict], column: str, path: Path, allow_unknown: bool) -> np.ndarray:
    values = np.empty(len(rows), np.int64)
    for i, row in enumerate(rows):
        text = (row[column] or "").strip()
        if allow_unknown and text in ("", str(UNKNOWN_LABEL)):
            values[i] = UNKNOWN_LABEL
            continue
        if text not in ("-1", "0", "1"):
            raise AvemoError(f"{path}:{i + 2}: {column} must be -1, 0 or 1, got {text!r}")
        values[i] = int(text)
    return values
