"""Metrics over predicted and true class labels (-1/0/1)."""

from __future__ import annotations

import numpy as np


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
