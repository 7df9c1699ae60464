"""Scoring a run: every predictions.csv of RUN (read through avemo.runfolder) scored on the test split, per task
(arousal; valence when the files hold it), as typed results that avemo.evaluate.report renders.

- `Entry`: one predictions file: its metrics (avemo.evaluate.metrics.Scores), its difference to the majority
  class, McNemar's test against the majority class and against modal fusion (same seed where there is one),
  and the α of its model (avemo.evaluate.training: modal fusion's learned α_a, α_v; late fusion's fixed α).
- `Group`: one approach[-variant]: the single seed's values, or mean ± sample std (ddof 1) over its seeds.
- `Pair`: McNemar between two approaches (default variants, same seed where both have it).
- `TaskScores`: one task: test and train class counts, the majority baseline, entries, groups, pairs, and
  whether its test split is MediaEval 2015's (`is_mediaeval2015`: only then is the paper's Table 1 comparable).
- `Evaluation`: the run: its tasks and the configurations run.json lists without predictions.

`as_dict()` gives each one's part of results.json (a published format: its keys never change).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from avemo.approaches import TITLES, UNKNOWN_LABEL
from avemo.datasets.labels import CLASS_NAMES, to_index
from avemo.errors import AvemoError
from avemo.evaluate.metrics import LABELS, McNemar, Scores, majority_class, mcnemar, score
from avemo.evaluate.training import Alpha, read_alpha
from avemo.runfolder import TASKS, Predictions, find_predictions, missing_predictions

ALPHA = 0.05  # significance level of the McNemar columns
METRIC = "global accuracy Nc/Nt on the test split (paper eq. 13, MediaEval 2015)"
SUMMARY_KEYS = ("test_clips", "test_counts", "majority_class", "majority_accuracy")  # arousal's, at the top of results.json
MCNEMAR = "chi-square with continuity correction; exact binomial p-value when fewer than 25 clips differ"
MEDIAEVAL_TEST_CLIPS = 4756  # paper, "Dataset": "the test set includes 4,756 videos" (MediaEval 2015)
# MediaEval 2015 clip names: LIRIS-ACCEDE's and the test set's new clips (file names), or its shot ids (list files)
MEDIAEVAL_NAME = re.compile(r"^(ACCEDE|MEDIAEVAL)\d{5}$|^SHOT_\d+$", re.IGNORECASE)
UNITS = {  # results.json keeps fractions; report.md, the terminal and results.csv show percentages
    "fraction (0-1)": "accuracy, ci95, balanced_accuracy, macro_f1, precision, recall, f1, majority_accuracy, "
    "accuracy_a, accuracy_b (and each one's _std)",
    "percentage points": "vs_majority_pts, difference_pts (and each one's _std)",
    "probability (0-1)": "p_value, p_vs_majority, p_vs_modal; alpha (top level): the significance level",
    "weight (no unit)": "entries[].alpha (audio, visual, start) and groups' alpha_audio, alpha_visual: the modality "
    "weights of paper eq. 3 (modal fusion) or eq. 14 (late fusion)",
}


@dataclass(frozen=True)
class Entry:
    """One predictions file, scored on the test clips."""

    name: str  # approach[-variant]
    approach: str
    variant: str
    seed: int | None
    lstm_hidden: int | None
    predictions: str  # the file, relative to RUN
    scores: Scores
    vs_majority_pts: float  # accuracy − majority-class accuracy, in points
    vs_majority: McNemar
    vs_modal: McNemar | None  # None for modal fusion itself, or a run without it
    modal_seed: int | None  # the seed of the modal-fusion file it was tested against
    predicted: np.ndarray = field(repr=False)  # its class per test clip, in TaskScores.test_ids order
    folder: Path  # the model folder (of the predictions file)
    alpha: Alpha | None = None  # its model's audio and visual weights; None: no α (or no model.pt to read it)

    def as_dict(self) -> dict:
        modal = None if self.vs_modal is None else {**self.vs_modal.as_dict(), "modal_seed": self.modal_seed}
        return {
            "name": self.name,
            "approach": self.approach,
            "variant": self.variant,
            "seed": self.seed,
            "lstm_hidden": self.lstm_hidden,
            "predictions": self.predictions,
            **self.scores.as_dict(),
            "vs_majority_pts": self.vs_majority_pts,
            "mcnemar_vs_majority": self.vs_majority.as_dict(),
            "mcnemar_vs_modal": modal,
            "alpha": None if self.alpha is None else self.alpha.as_dict(),
        }


@dataclass(frozen=True)
class Spread:
    """A value over the seeds of one configuration: mean, and sample std (ddof 1) when there are several."""

    mean: float
    std: float | None

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        array = np.array(values, np.float64)
        return cls(float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else None)


@dataclass(frozen=True)
class Significance:
    """McNemar's tests of a group's seeds against one reference (the majority class, or modal fusion)."""

    count: int | None  # seeds with p < ALPHA; None: not tested
    p_value: float | None  # the p-value when exactly one seed was tested

    @classmethod
    def of(cls, tests: list[McNemar]) -> Significance:
        count = sum(t.p_value < ALPHA for t in tests) if tests else None
        return cls(count, tests[0].p_value if len(tests) == 1 else None)


@dataclass(frozen=True)
class Group:
    """One approach[-variant] (a row of Table 1): one seed's values, or mean ± std over its seeds."""

    approach: str
    variant: str
    title: str
    lstm_hidden: int | None
    seeds: list[int | None]
    ci95: tuple[float, float] | None  # one seed only
    accuracy: Spread
    balanced_accuracy: Spread
    macro_f1: Spread
    vs_majority_pts: Spread
    vs_majority: Significance
    vs_modal: Significance
    alpha_audio: Spread | None = None  # over the seeds whose α is known; None: no α
    alpha_visual: Spread | None = None
    alpha_seeds: int = 0  # how many of its seeds have a known α
    alpha_learned: bool | None = None  # None: no α, or learned in some seeds and fixed in others

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def as_dict(self) -> dict:
        out = {
            "approach": self.approach,
            "variant": self.variant,
            "title": self.title,
            "lstm_hidden": self.lstm_hidden,
            "seeds": list(self.seeds),
            "n_seeds": self.n_seeds,
            "ci95": None if self.ci95 is None else list(self.ci95),
        }
        for key in ("accuracy", "balanced_accuracy", "macro_f1", "vs_majority_pts"):
            spread = getattr(self, key)
            out |= {key: spread.mean, f"{key}_std": spread.std}
        for against in ("majority", "modal"):
            tests = getattr(self, f"vs_{against}")
            out |= {f"significant_vs_{against}": tests.count, f"p_vs_{against}": tests.p_value}
        for key in ("alpha_audio", "alpha_visual"):
            spread = getattr(self, key)
            out |= {key: None if spread is None else spread.mean, f"{key}_std": None if spread is None else spread.std}
        return out | {"alpha_seeds": self.alpha_seeds, "alpha_learned": self.alpha_learned}


@dataclass(frozen=True)
class Pair:
    """McNemar's test between two approaches on the same test clips."""

    approach_a: str
    approach_b: str
    accuracy_a: float
    accuracy_b: float
    test: McNemar

    @property
    def difference_pts(self) -> float:
        return 100 * (self.accuracy_a - self.accuracy_b)

    def as_dict(self) -> dict:
        names = {"approach_a": self.approach_a, "approach_b": self.approach_b}
        values = {"accuracy_a": self.accuracy_a, "accuracy_b": self.accuracy_b, "difference_pts": self.difference_pts}
        return names | values | self.test.as_dict()


@dataclass(frozen=True)
class TaskScores:
    """One task (arousal or valence) on the test split."""

    task: str
    classes: tuple[str, ...]  # names of the classes -1, 0, 1
    test_ids: list[str]  # the test clips scored (those with a known label), in the first file's order
    test_counts: dict[str, int]
    train_counts: dict[str, int]
    majority_label: int  # the train split's most frequent class
    majority_accuracy: float
    majority: Scores  # always answering the majority class
    entries: list[Entry]
    groups: dict[str, Group]  # by approach[-variant], in Table 1 order
    pairwise: list[Pair]
    mediaeval2015: bool = False  # the test split is MediaEval 2015's (is_mediaeval2015): the paper's numbers apply

    @property
    def majority_class(self) -> str:
        return self.classes[to_index(self.majority_label)]

    @property
    def test_clips(self) -> int:
        return len(self.test_ids)

    def as_dict(self) -> dict:
        return {
            "classes": list(self.classes),
            "labels": list(LABELS),
            "test_clips": self.test_clips,
            "test_counts": self.test_counts,
            "train_counts": self.train_counts,
            "majority_class": self.majority_class,
            "majority_label": self.majority_label,
            "majority_accuracy": self.majority_accuracy,
            "majority": self.majority.as_dict(),
            "entries": [e.as_dict() for e in self.entries],
            "groups": {name: g.as_dict() for name, g in self.groups.items()},
            "pairwise": [p.as_dict() for p in self.pairwise],
            "mediaeval2015": self.mediaeval2015,
        }


@dataclass(frozen=True)
class Evaluation:
    """What a run's predictions are worth, task by task (arousal first)."""

    run: Path
    resamples: int  # bootstrap resamples
    seed: int  # bootstrap seed
    missing: list[str]  # model folders RUN/run.json lists without any predictions.csv
    tasks: dict[str, TaskScores]

    def as_dict(self, files: dict[str, list[Path]]) -> dict:
        """results.json: everything, and the arousal summary at the top level as before (scripts read it)."""
        tasks = {task: scored.as_dict() for task, scored in self.tasks.items()}
        arousal = tasks.get("arousal")  # None: a run of valence models only
        return {
            "run": str(self.run.resolve()),
            "metric": METRIC,
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "interval": "95% percentile, test clips resampled"},
            "mcnemar": MCNEMAR,
            "alpha": ALPHA,
            "units": UNITS,
            "missing_predictions": self.missing,
            "tasks": tasks,
            "approaches": None if arousal is None else arousal["groups"],
            **{key: None if arousal is None else arousal[key] for key in SUMMARY_KEYS},
            "files": {kind: [str(p) for p in paths] for kind, paths in files.items()},
        }


def score_run(run: str | Path, resamples: int = 1000, seed: int = 0) -> Evaluation:
    """Score every predictions file of `run` (refusing half-written seeds and files of other clips)."""
    run = Path(run)
    found = find_predictions(run)
    missing = missing_predictions(run, found)  # refuses half-written seeds
    if not found:
        raise AvemoError(f"{run}: no predictions here; run `avemo train --run {run}` first")
    tasks = {}
    for task in TASKS:
        having = [p for p in found if task in p.labels]
        if having:
            tasks[task] = score_task(task, having, run, resamples, seed)
    return Evaluation(run, resamples, seed, missing, tasks)


def score_task(task: str, files: list[Predictions], run: Path, resamples: int, seed: int) -> TaskScores:
    """Metrics, groups (mean ± std over seeds) and paired tests of one task; the first file is the reference
    every other must match (same clips, splits and labels)."""
    ref = files[0]
    test, train = _test_and_train(task, ref)
    test_ids, true, train_labels = ref.clip_ids[test], ref.labels[task][test], ref.labels[task][train]
    majority_label = majority_class(train_labels)
    constant = np.full(len(true), majority_label)
    predicted = [_aligned(p, task, test_ids, true, ref) for p in files]
    modal = {p.seed: pred for p, pred in zip(files, predicted) if p.approach == "modal" and not p.variant}
    entries = [_entry(p, pred, true, constant, modal, run, (resamples, seed)) for p, pred in zip(files, predicted)]
    names = CLASS_NAMES[task]
    return TaskScores(
        task=task,
        classes=names,
        test_ids=test_ids.tolist(),
        test_counts=_counts(true, names),
        train_counts=_counts(train_labels, names),
        majority_label=majority_label,
        majority_accuracy=float((true == majority_label).mean()),
        majority=score(true, constant, resamples, seed),
        entries=entries,
        groups=_groups(entries),
        pairwise=_pairwise(files, predicted, true),
        mediaeval2015=is_mediaeval2015(test_ids.tolist()),
    )


def is_mediaeval2015(test_ids: list[str]) -> bool:
    """Whether the scored test clips are MediaEval 2015's test set, the data of the paper's Table 1: its 4,756
    clips, every one named as MediaEval names them (ACCEDE00000, MEDIAEVAL00000; SHOT_006144 from list files).
    The sample corpus uses ACCEDE names too, so the count decides; a cache that lost clips is not that test set."""
    if len(test_ids) != MEDIAEVAL_TEST_CLIPS:
        return False
    return all(MEDIAEVAL_NAME.match(PurePosixPath(c.replace("\\", "/")).stem) for c in test_ids)


def _test_and_train(task: str, ref: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """The test and train clips of the reference file with a known label (refused when there are none)."""
    known = ref.labels[task] != UNKNOWN_LABEL
    test, train = (ref.split == "test") & known, (ref.split == "train") & known
    if not test.any():
        raise AvemoError(f"{ref.path}: no test clips with a {task} label to score")
    if not train.any():
        raise AvemoError(f"{ref.path}: no train clips with a {task} label, so no majority class")
    return test, train


def _counts(labels: np.ndarray, names: tuple[str, ...]) -> dict[str, int]:
    return {n: int((labels == label).sum()) for n, label in zip(names, LABELS)}


def _aligned(p: Predictions, task: str, test_ids: np.ndarray, true: np.ndarray, ref: Predictions) -> np.ndarray:
    """p's predictions in the order of the reference's test clips; refuse files scored on other clips (or the
    same test clips among other train clips: another cache)."""
    mask = (p.split == "test") & (p.labels[task] != UNKNOWN_LABEL)
    rows = {c: i for i, c in enumerate(p.clip_ids[mask])}
    if set(rows) != set(test_ids.tolist()):
        raise AvemoError(f"{p.path}: its test clips differ from those of {ref.path}; evaluate predictions of one cache")
    if p is not ref and dict(zip(p.clip_ids.tolist(), p.split.tolist())) != dict(zip(ref.clip_ids.tolist(), ref.split.tolist())):
        raise AvemoError(
            f"{p.path}: its clips (or their splits) differ from those of {ref.path}; evaluate predictions of one cache"
        )
    index = np.array([rows[c] for c in test_ids.tolist()], np.int64)
    if not np.array_equal(p.labels[task][mask][index], true):
        raise AvemoError(f"{p.path}: its true {task} labels differ from those of {ref.path}")
    return p.predicted[task][mask][index]


def _entry(
    p: Predictions,
    predicted: np.ndarray,
    true: np.ndarray,
    constant: np.ndarray,
    modal: dict[int | None, np.ndarray],
    run: Path,
    bootstrap: tuple[int, int],
) -> Entry:
    """One file's scores and tests (against the majority class, and modal fusion of its seed, else the first)."""
    scores = score(true, predicted, *bootstrap)
    vs_modal, modal_seed = None, None
    if modal and not (p.approach == "modal" and not p.variant):
        modal_seed = p.seed if p.seed in modal else next(iter(modal))
        vs_modal = mcnemar(true, predicted, modal[modal_seed])
    return Entry(
        name=p.name,
        approach=p.approach,
        variant=p.variant,
        seed=p.seed,
        lstm_hidden=p.lstm_hidden,
        predictions=relative(p.path, run),
        scores=scores,
        vs_majority_pts=100 * (scores.accuracy - float((true == constant).mean())),
        vs_majority=mcnemar(true, predicted, constant),
        vs_modal=vs_modal,
        modal_seed=modal_seed,
        predicted=predicted,
        folder=p.path.parent,
        alpha=read_alpha(p.path.parent, p.approach, run),
    )


def _groups(entries: list[Entry]) -> dict[str, Group]:
    """One group per approach[-variant], in the entries' order."""
    by_name: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_name[e.name].append(e)
    return {name: _group(members) for name, members in by_name.items()}


def _group(members: list[Entry]) -> Group:
    first = members[0]
    return Group(
        approach=first.approach,
        variant=first.variant,
        title=TITLES[first.approach] + (f" ({first.variant})" if first.variant else ""),
        lstm_hidden=first.lstm_hidden,
        seeds=[m.seed for m in members],
        ci95=first.scores.ci95 if len(members) == 1 else None,
        accuracy=Spread.of([m.scores.accuracy for m in members]),
        balanced_accuracy=Spread.of([m.scores.balanced_accuracy for m in members]),
        macro_f1=Spread.of([m.scores.macro_f1 for m in members]),
        vs_majority_pts=Spread.of([m.vs_majority_pts for m in members]),
        vs_majority=Significance.of([m.vs_majority for m in members]),
        vs_modal=Significance.of([m.vs_modal for m in members if m.vs_modal is not None]),
        **_alpha_over_seeds([m.alpha for m in members if m.alpha is not None]),
    )


def _alpha_over_seeds(alphas: list[Alpha]) -> dict:
    """Group's α fields: mean ± std of α_a and α_v over the seeds that have one."""
    if not alphas:
        return {}
    learned = {a.learned for a in alphas}
    return {
        "alpha_audio": Spread.of([a.audio for a in alphas]),
        "alpha_visual": Spread.of([a.visual for a in alphas]),
        "alpha_seeds": len(alphas),
        "alpha_learned": learned.pop() if len(learned) == 1 else None,
    }


def _pairwise(files: list[Predictions], predicted: list[np.ndarray], true: np.ndarray) -> list[Pair]:
    """McNemar between every two default-variant approaches: the first file of A against B's file of the same
    seed where B has it, else B's first."""
    first: dict[str, tuple[Predictions, np.ndarray]] = {}
    by_seed: dict[tuple[str, int | None], np.ndarray] = {}
    for p, pred in zip(files, predicted):
        if not p.variant:
            first.setdefault(p.approach, (p, pred))
            by_seed[(p.approach, p.seed)] = pred
    names = list(first)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            file_a, pa = first[a]
            pb = by_seed.get((b, file_a.seed), first[b][1])
            accuracy_a, accuracy_b = float((pa == true).mean()), float((pb == true).mean())
            out.append(Pair(a, b, accuracy_a, accuracy_b, mcnemar(true, pa, pb)))
    return out


def relative(path: Path, run: Path) -> str:
    """path relative to RUN where it is inside it, else as it is."""
    try:
        return str(path.relative_to(run))
    except ValueError:
        return str(path)
