"""Stacked training (avemo.train.stacked) equals training the models one by one (avemo.train.trainer.train)."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest
import torch

from avemo.approaches import APPROACHES
from avemo.errors import AvemoError
from avemo.train.stacked import Kind, Stack, kinds_for, train_table
from avemo.train.trainer import train

from helpers import SETTINGS, write_feature_cache

TOLERANCE = 1e-4  # absolute, on losses and probabilities (the files keep 6 decimals)
SEEDS = [0, 1]
SILENT = tuple(range(0, 90, 7))  # clips without sound: the audio models fit fewer clips, so take fewer steps


def _read(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _compare_logs(stacked: list[dict], path) -> None:
    one_by_one = _read(path)
    assert len(stacked) == len(one_by_one), path
    for mine, theirs in zip(stacked, one_by_one):
        assert mine["epoch"] == int(theirs["epoch"])
        for column in ("train_loss", "validation_loss", "validation_accuracy"):
            assert abs(mine[column] - float(theirs[column])) <= TOLERANCE, (path, mine, theirs)


def _probabilities(path) -> np.ndarray:
    return np.array([[float(r[f"p_{n}"]) for n in ("calm", "neutral", "active")] for r in _read(path)])


def _folder(run, name: str, seed: int, seeds: list[int]):
    """A model's folder in a run (runfolder.model_path): late/visual → RUN/late[/seed-<s>]/visual."""
    approach, _, part = name.partition("/")
    folder = run / approach / (f"seed-{seed}" if len(seeds) > 1 else "")
    return folder / part if part else folder


def _check_run(run, stacked, approaches, seeds) -> None:
    for model in stacked.models:
        _compare_logs(model.log, _folder(run, model.kind.name, model.seed, seeds) / "log.csv")
    for seed in seeds:
        for approach in approaches:
            expected = _probabilities(_folder(run, approach, seed, seeds) / "predictions.csv")
            np.testing.assert_allclose(stacked.probabilities(approach, seed), expected, atol=TOLERANCE)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_feature_cache(tmp_path_factory.mktemp("cache"), n_clips=90, silent=SILENT)


def test_stacked_table_equals_one_by_one(cache, tmp_path):
    """Table 1 × 2 seeds, dropout 0, 2 epochs: per-epoch losses, accuracies and final probabilities agree."""
    settings = replace(SETTINGS, head=replace(SETTINGS.head, dropout=0.0), epochs=2, patience=0, device="cpu")
    train(cache, tmp_path / "run", list(APPROACHES), settings, seeds=SEEDS)
    stacked = train_table(cache, list(APPROACHES), settings, SEEDS)
    assert len(stacked.models) == 6 * len(SEEDS)
    audio = stacked.model("audio", 0)
    assert len(audio.examples) < len(stacked.model("visual", 0).examples)  # fewer steps per epoch: masked
    _check_run(tmp_path / "run", stacked, list(APPROACHES), SEEDS)


def test_stacked_early_stop_class_weights_weight_decay(cache, tmp_path):
    """Patience 1 (the models stop at different epochs: a stopped model is masked while the others go on),
    balanced class weights, weight decay, fixed α."""
    head = replace(SETTINGS.head, dropout=0.0, learn_alpha=False)
    settings = replace(
        SETTINGS, head=head, epochs=6, patience=1, lr=0.1, class_weights="balanced", weight_decay=1e-3, device="cpu"
    )
    approaches, seeds = ["audio", "modal"], [3, 4]
    train(cache, tmp_path / "run", approaches, settings, seeds=seeds)
    stacked = train_table(cache, approaches, settings, seeds)
    assert len({len(m.log) for m in stacked.models}) > 1
    _check_run(tmp_path / "run", stacked, approaches, seeds)


def test_stacked_last_second_loss_and_accuracy_selection(cache, tmp_path):
    """The loss at each clip's last second only, the epoch of the best validation accuracy."""
    head = replace(SETTINGS.head, dropout=0.0)
    settings = replace(SETTINGS, head=head, epochs=2, patience=0, supervise="last", select="accuracy", device="cpu")
    approaches = ["early", "late"]
    train(cache, tmp_path / "run", approaches, settings, seeds=[5])
    stacked = train_table(cache, approaches, settings, [5])
    _check_run(tmp_path / "run", stacked, approaches, [5])


def test_stacked_initial_weights_are_the_heads():
    """Every model's initial state is EmotionHead's under torch.manual_seed(seed)."""
    from avemo.train.heads import EmotionHead

    head = replace(SETTINGS.head, dropout=0.0)
    kinds = kinds_for(list(APPROACHES))
    stack = Stack(kinds, [5, 6], head, "cpu")
    for m, (kind, seed) in enumerate(stack.models):
        torch.manual_seed(seed)
        expected = EmotionHead(replace(head, approach=kind.approach, temporal=kind.temporal)).state_dict()
        got = stack.head_state(m)
        assert got.keys() == expected.keys()
        for name in expected:
            assert torch.equal(got[name], expected[name]), (kind, seed, name)
    assert kinds_for(["late"], "lstm") == [Kind("visual", "visual", "lstm"), Kind("audio", "audio", "lstm")]
    with pytest.raises(AvemoError, match="joint"):
        kinds_for(["joint"])
