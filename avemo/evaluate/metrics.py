"""Metrics over true and predicted class labels (-1/0/1), and the tests that say what a difference means.

- `accuracy`: global accuracy Nc/Nt, the official MediaEval 2015 metric (paper eq. 13).
- `majority_class` / `majority_accuracy`: the "always answer the train split's most frequent class" baseline.
- `confusion_matrix`, `per_class`, `balanced_accuracy` (mean recall over the classes present in the test
  split), `macro_f1` (mean F1 over the three classes; a class never predicted and never true is left out).
- `bootstrap_ci`: percentile interval of accuracy over test clips resampled with replacement (fixed seed,
  so the same predictions always give the same interval).
- `mcnemar`: paired test of two classifiers on the same clips. It looks only at the discordant clips
  (b = A right and B wrong, c = A wrong and B right). The statistic is the chi-square with continuity
  correction, (|b − c| − 1)² / (b + c), 1 degree of freedom (Edwards, 1948); the p-value is the exact
  two-sided binomial one, min(1, 2·P[X ≤ min(b, c)]) with X ~ Bin(b + c, ½), when b + c < 25, where the
  chi-square approximation is poor, and the chi-square one otherwise. `method` says which was used.
- `score` (a `Scores`; `scores`: the same as a JSON-ready dict): every per-set metric above for one prediction
  set (accuracy, bootstrap interval, balanced accuracy, macro-F1, per-class values, confusion matrix).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

LABELS = (-1, 0, 1)
EXACT_BELOW = 25  # discordant pairs under which McNemar's p-value is the exact binomial one


def accuracy(true: np.ndarray, predicted: np.ndarray) -> float:
    """Global accuracy Nc / Nt, the official MediaEval 2015 metric (paper eq. 13)."""
    true, predicted = np.asarray(true), np.asarray(predicted)
    if len(true) == 0:
        raise ValueError("no clips to score")
    return float((true == predicted).mean())


def majority_class(train_labels: np.ndarray) -> int:
    """The most frequent train class (ties go to the lower label); the 'always answer X' baseline."""
    values, counts = np.unique(np.asarray(train_labels), return_counts=True)
    return int(values[counts.argmax()])


def majority_accuracy(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """Accuracy of always answering the train split's majority class on the test split."""
    return accuracy(test_labels, np.full(len(test_labels), majority_class(train_labels)))


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, labels: tuple[int, ...] = LABELS) -> np.ndarray:
    """Counts [true class, predicted class], rows and columns in the order of `labels`."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), np.int64)
    for t, p in zip(np.asarray(true).tolist(), np.asarray(predicted).tolist()):
        matrix[index[t], index[p]] += 1
    return matrix


def per_class(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 per class from a confusion matrix; NaN where undefined (0/0)."""
    matrix = np.asarray(matrix, np.float64)
    hits = np.diag(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = hits / matrix.sum(0)
        recall = hits / matrix.sum(1)
        f1 = 2 * precision * recall / (precision + recall)
    f1 = np.where((hits == 0) & ((matrix.sum(0) > 0) | (matrix.sum(1) > 0)), 0.0, f1)  # wrong everywhere: F1 = 0
    return {"precision": precision, "recall": recall, "f1": f1, "support": matrix.sum(1).astype(np.int64)}


def balanced_accuracy(matrix: np.ndarray) -> float:
    """Mean recall over the classes that occur in the test split (always answering one class gives 1/k)."""
    recall = per_class(matrix)["recall"]
    return float(np.nanmean(recall))


def macro_f1(matrix: np.ndarray) -> float:
    """Mean F1 over the classes that are true or predicted at least once (F1 = 0 for a class never hit)."""
    return float(np.nanmean(per_class(matrix)["f1"]))


def bootstrap_ci(
    true: np.ndarray, predicted: np.ndarray, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy, resampling test clips with replacement; deterministic."""
    correct = (np.asarray(true) == np.asarray(predicted)).astype(np.float64)
    if len(correct) == 0:
        raise ValueError("no clips to score")
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), size=(resamples, len(correct)))].mean(1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class McNemar:
    b: int  # clips A got right and B wrong
    c: int  # clips A got wrong and B right
    statistic: float  # chi-square with continuity correction, (|b - c| - 1)^2 / (b + c); 0 when b + c = 0
    p_value: float
    method: str  # "exact binomial" (b + c < 25) or "chi-square, continuity corrected"; "no discordant clips"

    def as_dict(self) -> dict:
        return asdict(self)


def mcnemar(true: np.ndarray, predicted_a: np.ndarray, predicted_b: np.ndarray) -> McNemar:
    """McNemar's test of A against B on the same clips (see the module docstring for the version used)."""
    true = np.asarray(true)
    right_a, right_b = np.asarray(predicted_a) == true, np.asarray(predicted_b) == true
    return mcnemar_from_counts(int((right_a & ~right_b).sum()), int((~right_a & right_b).sum()))


def mcnemar_from_counts(b: int, c: int) -> McNemar:
    """McNemar's test from the two discordant counts."""
    n = b + c
    if n == 0:
        return McNemar(b, c, 0.0, 1.0, "no discordant clips")
    statistic = max(abs(b - c) - 1, 0) ** 2 / n
    if n < EXACT_BELOW:
        p = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n)
        return McNemar(b, c, statistic, p, "exact binomial")
    p = math.erfc(math.sqrt(statistic / 2))  # survival function of chi-square with 1 degree of freedom
    return McNemar(b, c, statistic, p, "chi-square, continuity corrected")


@dataclass(frozen=True)
class Scores:
    """Every metric of one prediction set; per-class values keyed by label ("-1", "0", "1"), None where
    undefined (precision of a class never predicted)."""

    n: int
    accuracy: float
    ci95: tuple[float, float]  # percentile bootstrap
    balanced_accuracy: float
    macro_f1: float
    precision: dict[str, float | None]
    recall: dict[str, float | None]
    f1: dict[str, float | None]
    confusion: list[list[int]]  # [true class, predicted class]

    def as_dict(self) -> dict:
        return {**asdict(self), "ci95": list(self.ci95)}


def score(
    true: np.ndarray, predicted: np.ndarray, resamples: int = 1000, seed: int = 0, labels: tuple[int, ...] = LABELS
) -> Scores:
    """Every per-prediction-set metric of `predicted` against `true`."""
    matrix = confusion_matrix(true, predicted, labels)
    classes = per_class(matrix)

    def clean(values: np.ndarray) -> dict[str, float | None]:
        return {str(label): (None if np.isnan(v) else float(v)) for label, v in zip(labels, values)}

    return Scores(
        n=int(len(true)),
        accuracy=accuracy(true, predicted),
        ci95=bootstrap_ci(true, predicted, resamples, seed=seed),
        balanced_accuracy=balanced_accuracy(matrix),
        macro_f1=macro_f1(matrix),
        precision=clean(classes["precision"]),
        recall=clean(classes["recall"]),
        f1=clean(classes["f1"]),
        confusion=matrix.tolist(),
    )


def scores(
    true: np.ndarray, predicted: np.ndarray, resamples: int = 1000, seed: int = 0, labels: tuple[int, ...] = LABELS
) -> dict:
    """`score` as one JSON-ready dict."""
    return score(true, predicted, resamples, seed, labels).as_dict()
