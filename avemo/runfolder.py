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
    RUN/valence/                          the valence models (`--target valence|both`), laid out as RUN/ is
                                          (<model>/, late/{visual,audio}/); no joint pass

predictions.csv (written by `write_predictions`, read by `read_predictions`): `clip_id,split,arousal,predicted`
(classes -1/0/1), then `p_calm,p_neutral,p_active`; a valence model's: `clip_id,split,valence,predicted_valence,
p_negative,p_neutral,p_positive` (an unknown valence is empty). One row per clip. Readers score every task whose
pair of columns is there (empty or -128: unknown) and ignore further columns.
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
from avemo.datasets.labels import CLASS_NAMES, TARGETS, to_label
from avemo.errors import AvemoError

RUN_JSON = "run.json"
LOG = "log.txt"
SETTINGS = "settings.json"
PREDICTIONS = "predictions.csv"
PAPER_LSTM = 256  # the LSTM size whose folder carries no -lstm<N> suffix (Fig. 2's best, the default)
JOINT = "joint"
VALENCE = "valence"  # the folder of the valence models: RUN/valence/<model>/
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


def model_path(approach: str, size: int, seed: int, sizes: list[int], seeds: list[int], target: str = "arousal") -> str:
    """The folder of one model, relative to RUN: [valence/]<folder>, or [valence/]<folder>/seed-<s> with several
    seeds."""
    return target_prefix(target) + model_folder(approach, size, sizes) + (f"/seed-{seed}" if len(seeds) > 1 else "")


def target_prefix(target: str) -> str:
    """Where a target's models are, relative to RUN: '' (arousal) or 'valence/'."""
    if target not in TARGETS:
        raise AvemoError(f"target {target!r}: must be one of {', '.join(TARGETS)}")
    return "" if target == "arousal" else f"{VALENCE}/"


def target_root(run: Path, target: str) -> Path:
    """The folder that holds a target's model folders: RUN, or RUN/valence."""
    return Path(run) / target_prefix(target)


def parse_folder(name: str) -> tuple[str, str] | None:
    """(approach, variant) of a model folder's name, None for any other folder."""
    match = FOLDER.match(name)
    return (match.group(1), match.group(2) or "") if match else None


def seed_of(name: str) -> int | None:
    """The seed of a `seed-<s>` folder name, None for any other name."""
    match = SEED.match(name)
    return int(match.group(1)) if match else None


def expected_names(approaches: list[str], seeds: list[int], sizes: list[int], target: str = "arousal") -> list[str]:
    """The predictions files (relative to RUN) that training these approaches, seeds and sizes for `target`
    writes; late fusion's MLP classifiers have no LSTM: one size is enough."""
    names = []
    for size in sizes:
        for approach in approaches:
            folder = model_folder(approach, size, sizes)
            if approach == "late" and folder != approach:
                continue
            names += [f"{model_path(approach, size, s, sizes, seeds, target)}/predictions.csv" for s in seeds]
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
    return {**info, "cache": str(_cache_path(Path(run), info))}


def _cache_path(run: Path, info: dict) -> Path:
    """The cache of run.json, absolute: `cache` relative to RUN (a run moved with its cache), else where it was
    when trained (`cache_absolute`: a run copied alone); an older run.json's absolute `cache` as it is."""
    relative = (run / info["cache"]).resolve()
    absolute = info.get("cache_absolute")
    if relative.is_dir() or not isinstance(absolute, str) or not Path(absolute).is_dir():
        return relative
    return Path(absolute)


def write_info(run: Path, info: dict) -> None:
    """RUN/run.json, its `cache` stored relative to RUN, so that a run moved together with its cache keeps
    working, and `cache_absolute` for a run moved alone (`read_info` gives back the one that exists)."""
    import os

    absolute = Path(info["cache"]).resolve()
    relative = Path(os.path.relpath(absolute, Path(run).resolve())).as_posix()
    write_json(Path(run) / RUN_JSON, {**info, "cache": relative, "cache_absolute": str(absolute)})


def cache_of(run: Path) -> Path:
    """The cache a run directory was trained on (RUN/run.json), as an absolute path."""
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


def add_predictions(run: Path, names: list[str]) -> None:
    """List more predictions files (relative to RUN) in RUN/run.json, before they are made: evaluate then
    names one that is missing (a pass that did not finish) instead of leaving its row out unnoticed. A run
    without run.json (heads copied by hand) lists nothing."""
    if read_listing(run) is None:
        return
    info = read_info(run)
    info["predictions"] = union(listed_predictions(run), names)
    write_info(run, info)


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


def head_paths(run: Path, approach: str, seed: int | None = None, target: str = "arousal") -> list[Path]:
    """The model.pt files predict reads for one approach, seed and target: its head; for late fusion its visual
    and audio models (the per-second MLP classifiers in [valence/]late/[seed-<s>/], or the visual and audio
    heads when trained `--late-from lstm`); for joint, RUN/joint/model.pt (arousal only). `seed` None: the
    one trained (several: refused). One line naming the command that fixes it when a model is missing."""
    run = Path(run)
    root = target_root(run, target)
    if approach == JOINT:
        return [_joint_head(run, target)]
    if approach != "late":
        return [_model_file(run, root / approach, seed, target, "model.pt")]
    late = _model_file(run, root / "late", seed, target, SETTINGS)
    settings = read_json(late, f"train late fusion again with `{_train_command(run, 'late', target)}`")
    if settings.get("late_from", "lstm") == "lstm":  # older runs fused the LSTM heads and did not say so
        return [_model_file(run, root / m, settings.get("seed", seed), target, "model.pt") for m in ("visual", "audio")]
    paths = [late.parent / m / "model.pt" for m in ("visual", "audio")]
    for path in paths:
        if not path.is_file():
            raise AvemoError(f"{path}: missing; train late fusion again with `{_train_command(run, 'late', target)}`")
    return paths


def targets(run: Path, approach: str) -> list[str]:
    """The targets (arousal, valence) RUN holds a trained model of `approach` for, of any seed."""
    marker = SETTINGS if approach == "late" else "model.pt"
    found = []
    for target in TARGETS:
        folder = target_root(run, target) / approach
        if (folder / marker).is_file() or any(folder.glob(f"seed-*/{marker}")):
            found.append(target)
    return found


def _model_file(run: Path, folder: Path, seed: int | None, target: str, marker: str) -> Path:
    """FOLDER/<marker> or FOLDER/seed-<s>/<marker> for `seed` (None: the one trained); one line when absent."""
    seeds = sorted(s for p in folder.glob(f"seed-*/{marker}") if (s := seed_of(p.parent.name)) is not None)
    single = folder / marker
    command = _train_command(run, folder.name, target)
    if seed is None:
        if single.is_file():
            return single
        if len(seeds) > 1:
            raise AvemoError(f"{folder}: trained with seeds {', '.join(map(str, seeds))}: choose one with --seed")
        if seeds:
            return folder / f"seed-{seeds[0]}" / marker
        raise AvemoError(f"{folder}: no trained {_what(folder.name, target)} here; train it with `{command}`")
    path = folder / f"seed-{seed}" / marker
    if path.is_file():
        return path
    if single.is_file() and read_settings(folder).get("seed") == seed:
        return single
    have = (
        f"trained with seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}"
        if seeds
        else f"trained with seed {read_settings(folder).get('seed')}"
        if single.is_file()
        else "not trained"
    )
    raise AvemoError(
        f"{folder}: no {_what(folder.name, target)} of seed {seed} ({have}); train it with `{command} --seed {seed}`"
    )


def _what(approach: str, target: str) -> str:
    return f"{approach} model" + (f" for {target}" if target != "arousal" else "")


def _joint_head(run: Path, target: str) -> Path:
    """RUN/joint/model.pt; the joint pass tunes an arousal head only."""
    if target != "arousal":
        raise AvemoError(f"{run}: the joint pass is arousal-only, there is no joint {target} model; choose another approach")
    path = run / JOINT / "model.pt"
    if not path.is_file():
        raise AvemoError(f"{path}: no joint pass in {run}; run it with `avemo train --run {run} --joint`")
    return path


def _train_command(run: Path, approach: str, target: str) -> str:
    """The `avemo train` command that trains `approach` for `target` into RUN (the cache of its run.json)."""
    try:
        cache = str(cache_of(run))
    except AvemoError:
        cache = "CACHE"
    where = f"--cache {cache} --run {run}"
    return f"avemo train {where} --approach {approach}" + (f" --target {target}" if target != "arousal" else "")


# -- files of one model --------------------------------------------------------------------------------
def write_predictions(
    path: Path, clip_ids: np.ndarray, split: np.ndarray, labels: list[int], probs: np.ndarray, target: str = "arousal"
) -> None:
    """predictions.csv: every clip with its split, true class (`labels`: class indices, negative when unknown:
    written empty), predicted class and class probabilities, in the columns of `target` (TASKS)."""
    true_column, predicted_column = TASKS[target]
    names = CLASS_NAMES[target]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["clip_id", "split", true_column, predicted_column, *(f"p_{n}" for n in names)])
    for clip_id, part, label, p in zip(clip_ids, split, labels, probs):
        true = to_label(label) if label >= 0 else ""
        writer.writerow([clip_id, part, true, to_label(int(p.argmax())), *(f"{v:.6f}" for v in p)])
    write_text(path, text.getvalue())


def write_log(path: Path, rows: list[dict]) -> None:
    """log.csv of one model: one row per epoch (the engine's columns)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["epoch"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


# -- reading predictions back (evaluate) -----------------------------------------------------------------
PREDICTION_COLUMNS = ("clip_id", "split")  # what a predictions.csv must have, and one pair of TASKS
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
    target: str = "arousal"  # the models' folder it is in: RUN/ (arousal) or RUN/valence/ (valence)

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
    """Every predictions.csv of RUN and of RUN/valence, in Table 1 order (target, approach, variant, seed). The
    seed of <model>/predictions.csv is `seed` of the settings.json beside it; a seed folder's settings.json wins
    over its parent's, and without one its seed is the folder's number. One seed in two files is refused."""
    found = []
    for target in TARGETS:
        for folder, approach, variant in model_folders(target_root(run, target)):
            settings = read_settings(folder)
            if (folder / PREDICTIONS).is_file():
                found.append(read_predictions(folder / PREDICTIONS, approach, variant, settings, target))
            for seed_folder, number in seed_folders(folder):
                if (seed_folder / PREDICTIONS).is_file():
                    own = read_settings(seed_folder)
                    seed_settings = {**settings, **own, "seed": own.get("seed", number)}
                    found.append(read_predictions(seed_folder / PREDICTIONS, approach, variant, seed_settings, target))
    found.sort(
        key=lambda p: (
            TARGETS.index(p.target),
            ROWS.index(p.approach),
            p.variant != "",
            p.lstm_hidden or 0,
            p.variant,
            _seed_key(p.seed),
        )
    )
    seen: dict[tuple, Path] = {}
    for p in found:
        key = (p.target, p.approach, p.variant, p.seed)
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
    for target in TARGETS:
        for folder, *_ in model_folders(target_root(run, target)):
            prefix = target_prefix(target) + folder.name
            expected |= {f"{prefix}/{s.name}/{PREDICTIONS}" for s, _ in seed_folders(folder)}
    by_folder: dict[str, set[str]] = {}
    for name in expected | present:
        by_folder.setdefault(_model_of(name), set()).add(name)
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


def _model_of(name: str) -> str:
    """The model folder (relative to RUN) of a predictions file's name: `modal`, `valence/modal`."""
    parts = name.split("/")
    return "/".join(parts[:2]) if parts[0] == VALENCE and len(parts) > 2 else parts[0]


def read_predictions(
    path: Path, approach: str, variant: str = "", settings: dict | None = None, target: str = "arousal"
) -> Predictions:
    """Read one predictions.csv (its seed and LSTM size from `settings`, a settings.json; `target`: the models'
    folder it is in); a missing column, a repeated clip or a bad label is one clear error naming the file
    (and line)."""
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
        target=target,
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
    if not any(set(pair) <= columns for pair in TASKS.values()):
        pairs = " or ".join(",".join(pair) for pair in TASKS.values())
        raise AvemoError(f"{path}: missing columns {pairs} (the true and predicted classes); write it again with `avemo train`")
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
