"""Every metric against values computed by hand on one small fixed prediction set, and McNemar on textbook cases."""

import math

import numpy as np
import pytest

from avemo.evaluate.metrics import (
    accuracy,
    balanced_accuracy,
    bootstrap_ci,
    confusion_matrix,
    macro_f1,
    majority_accuracy,
    majority_class,
    mcnemar,
    mcnemar_from_counts,
    per_class,
    scores,
)

# Ten test clips. Rows of the confusion matrix (true calm, neutral, active) by predicted calm, neutral, active:
#   calm    [3, 1, 0]   neutral [1, 2, 0]   active [1, 1, 1]
TRUE = np.array([-1, -1, -1, -1, 0, 0, 0, 1, 1, 1])
PRED = np.array([-1, -1, -1, 0, 0, 0, -1, 1, 0, -1])
TRAIN = np.array([-1, -1, 0, 1, -1])  # majority: calm


def test_confusion_matrix_rows_are_true_classes():
    assert confusion_matrix(TRUE, PRED).tolist() == [[3, 1, 0], [1, 2, 0], [1, 1, 1]]


def test_accuracy_is_nc_over_nt():
    assert accuracy(TRUE, PRED) == 6 / 10
    with pytest.raises(ValueError):
        accuracy([], [])


def test_precision_recall_f1_per_class():
    c = per_class(confusion_matrix(TRUE, PRED))
    np.testing.assert_allclose(c["precision"], [3 / 5, 2 / 4, 1 / 1])
    np.testing.assert_allclose(c["recall"], [3 / 4, 2 / 3, 1 / 3])
    # F1 = 2PR / (P + R): calm 0.9 / 1.35, neutral (2/3) / (7/6), active (2/3) / (4/3)
    np.testing.assert_allclose(c["f1"], [2 / 3, 4 / 7, 1 / 2])
    assert c["support"].tolist() == [4, 3, 3]


def test_balanced_accuracy_and_macro_f1():
    matrix = confusion_matrix(TRUE, PRED)
    assert balanced_accuracy(matrix) == pytest.approx((3 / 4 + 2 / 3 + 1 / 3) / 3)  # 7/12
    assert macro_f1(matrix) == pytest.approx((2 / 3 + 4 / 7 + 1 / 2) / 3)  # 73/126


def test_majority_baseline_from_the_train_split():
    assert majority_class(TRAIN) == -1
    assert majority_class(np.array([0, 1, 0, 1])) == 0  # a tie goes to the lower label
    assert majority_accuracy(TRAIN, TRUE) == 4 / 10
    matrix = confusion_matrix(TRUE, np.full(10, -1))
    assert balanced_accuracy(matrix) == pytest.approx(1 / 3)
    # calm: P = 0.4, R = 1, F1 = 0.8 / 1.4 = 4/7; neutral and active never predicted: F1 = 0, precision undefined
    assert macro_f1(matrix) == pytest.approx((4 / 7) / 3)
    assert np.isnan(per_class(matrix)["precision"][1])


def test_a_class_absent_from_truth_and_predictions_is_left_out():
    true, pred = np.array([-1, -1, 0, 0]), np.array([-1, 0, 0, 0])  # no active clip, none predicted
    matrix = confusion_matrix(true, pred)
    assert balanced_accuracy(matrix) == pytest.approx((1 / 2 + 1) / 2)
    assert macro_f1(matrix) == pytest.approx((2 / 3 + 4 / 5) / 2)  # calm P=1 R=.5; neutral P=2/3 R=1


def test_bootstrap_interval_is_deterministic_and_brackets_the_accuracy():
    low, high = bootstrap_ci(TRUE, PRED, resamples=1000, seed=0)
    assert (low, high) == bootstrap_ci(TRUE, PRED, resamples=1000, seed=0)
    assert low < 0.6 < high and 0.2 <= low and high <= 1.0
    assert bootstrap_ci(TRUE, TRUE) == (1.0, 1.0)
    assert bootstrap_ci(TRUE, -TRUE - 5) == (0.0, 0.0)
    # 1000 clips at 60%: the interval is about ±1.96·sqrt(.6·.4/1000) = ±3.0 points
    true = np.zeros(1000, int)
    low, high = bootstrap_ci(true, np.where(np.arange(1000) < 600, 0, 1))
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.6 * 0.4 / 1000), abs=0.01)


def test_mcnemar_textbook_example_chi_square_with_continuity_correction():
    # 314 pairs: both right 101, A right and B wrong 121, A wrong and B right 59, both wrong 33
    # (the example of Wikipedia's "McNemar's test"). Corrected: (|121 - 59| - 1)^2 / (121 + 59) = 3721 / 180.
    result = mcnemar_from_counts(121, 59)
    assert result.method == "chi-square, continuity corrected"
    assert result.statistic == pytest.approx(3721 / 180)  # 20.672
    # chi-square, 1 df: P(X > 19.51) = 1e-5 (tables), so p < 1e-5; p = erfc(sqrt(20.672 / 2)) = 5.45e-6
    assert result.p_value < 1e-5 and result.p_value == pytest.approx(5.45e-6, rel=1e-3)


def test_mcnemar_exact_binomial_for_few_discordant_clips():
    # b = 1, c = 6: p = 2 · P[Bin(7, 1/2) <= 1] = 2 · (1 + 7) / 128 = 0.125
    result = mcnemar_from_counts(1, 6)
    assert result.method == "exact binomial" and result.p_value == pytest.approx(0.125)
    assert result.statistic == pytest.approx(16 / 7)  # (|1 - 6| - 1)^2 / 7
    assert mcnemar_from_counts(5, 5).p_value == 1.0
    assert mcnemar_from_counts(0, 0).p_value == 1.0


def test_mcnemar_counts_from_predictions():
    # B is right everywhere but clip 0 (where A is right): b = 1; A is wrong on clips 3, 6, 8, 9: c = 4.
    b = TRUE.copy()
    b[0] = 0
    result = mcnemar(TRUE, PRED, b)
    assert (result.b, result.c) == (1, 4)
    assert result.p_value == pytest.approx(2 * (1 + 5) / 32)


def test_scores_is_json_ready():
    s = scores(TRUE, PRED, resamples=200)
    assert s["accuracy"] == 0.6 and s["n"] == 10 and s["confusion"] == [[3, 1, 0], [1, 2, 0], [1, 1, 1]]
    assert s["precision"] == pytest.approx({"-1": 0.6, "0": 0.5, "1": 1.0})
    assert s["recall"]["1"] == pytest.approx(1 / 3)
    constant = scores(TRUE, np.full(10, -1), resamples=200)
    assert constant["precision"]["0"] is None
