"""`avemo train --stacked` (avemo.train.stacked_run): the models trained at once, written as one by one, so that
every reader of a run (evaluate, predict, export, the joint pass, a later `avemo train`) works on it unchanged."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_predict import QUICK, build_run, written
from test_valence import write_valence_cache

from avemo import api
from avemo.approaches import APPROACHES
from avemo.cli import main
from avemo.errors import AvemoError
from avemo.train.heads import EmotionHead
from avemo.train.joint import JointSettings

from helpers import SETTINGS, torch_threads, write_feature_cache

TOLERANCE = 1e-4  # on losses, probabilities and weights (the files keep 6 decimals)
QUIET = replace(SETTINGS, head=replace(SETTINGS.head, dropout=0.0), device="cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_feature_cache(tmp_path_factory.mktemp("cache"), n_clips=90, silent=tuple(range(0, 90, 7)))


def _rows(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _files(run) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def _same_csv(mine, theirs) -> None:
    """The same columns and rows; numbers within TOLERANCE, the rest equal (a predicted class may differ only
    where two probabilities tie within it)."""
    a, b = _rows(mine), _rows(theirs)
    assert len(a) == len(b) and list(a[0]) == list(b[0]), mine
    for x, y in zip(a, b):
        for column in x:
            if column.startswith(("p_", "train_", "validation_")):
                assert abs(float(x[column]) - float(y[column])) <= TOLERANCE, (mine, column, x, y)
            elif not column.startswith("predicted"):
                assert x[column] == y[column], (mine, column)


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _same_checkpoint(mine, theirs) -> None:
    a, b = (torch.load(p, weights_only=True) for p in (mine, theirs))
    assert a.keys() == b.keys(), mine
    for key in a:
        if key == "model":
            assert a[key].keys() == b[key].keys()
            for name in a[key]:
                torch.testing.assert_close(a[key][name].cpu(), b[key][name].cpu(), atol=TOLERANCE, rtol=0)
        elif key == "progress":
            same = ("epoch", "best_epoch", "stale", "finished")
            assert [a[key][k] for k in same] == [b[key][k] for k in same] and len(a[key]["log"]) == len(b[key]["log"])
        elif key == "optimizer":
            assert a[key]["param_groups"] == b[key]["param_groups"] and a[key]["state"].keys() == b[key]["state"].keys()
            for i, state in a[key]["state"].items():
                torch.testing.assert_close(state["momentum_buffer"], b[key]["state"][i]["momentum_buffer"], atol=1e-3, rtol=0)
        else:
            assert _equal(a[key], b[key]), (mine, key)  # settings, norm, validation, cache, record, epoch


def assert_same_runs(stacked, one_by_one) -> None:
    """The same files; run.json and settings.json equal; logs, predictions and checkpoints within TOLERANCE."""
    assert _files(stacked) == _files(one_by_one)
    for name in _files(stacked):
        mine, theirs = stacked / name, one_by_one / name
        if name.endswith(".csv"):
            _same_csv(mine, theirs)
        elif name.endswith(".pt"):
            _same_checkpoint(mine, theirs)
        elif name.endswith(".json"):
            assert json.loads(mine.read_text()) == json.loads(theirs.read_text()), name


def _snapshot(run) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in _files(run) if name != "log.txt"}


def test_stacked_writes_the_files_of_one_by_one_training(cache, tmp_path, capsys):
    """Table 1 × 2 seeds, dropout 0, patience 1 (models stop at different epochs): the same files, equal to
    1e-4; then `avemo train` again, stacked or not, reuses every model (nothing changes)."""
    settings = replace(QUIET, epochs=4, patience=1, lr=0.1)
    with torch_threads(1):
        api.train(cache, tmp_path / "one", "all", settings, seeds=[0, 1])
        api.train(cache, tmp_path / "stacked", "all", settings, seeds=[0, 1], stacked=True)
        assert "stacked: training 12 models at once" in capsys.readouterr().out
        assert_same_runs(tmp_path / "stacked", tmp_path / "one")
        steps = {len(_rows(p)) for p in (tmp_path / "stacked").rglob("log.csv")}
        assert len(steps) > 1  # early stops differ: some models were masked while others trained
        before = _snapshot(tmp_path / "stacked")
        api.train(cache, tmp_path / "stacked", "all", settings, seeds=[0, 1], stacked=True)
        api.train(cache, tmp_path / "stacked", "all", settings, seeds=[0, 1])  # one by one: reused, not trained
    assert "stacked: training" not in capsys.readouterr().out
    assert _snapshot(tmp_path / "stacked") == before


def test_stacked_sizes_targets_late_from_lstm_and_partly_trained_runs(tmp_path, capsys):
    """A sweep of LSTM sizes, both targets (valence unknown for some clips), late fusion of the visual and audio
    heads, into a run whose arousal models were trained one by one already: only the valence models are
    stacked (one stack per size), the run the same as one trained one by one."""
    cache = write_valence_cache(tmp_path / "cache", unknown=(1, 2, 4, 32, 35))
    settings = replace(QUIET, epochs=3, patience=0, late_from="lstm")
    options = {"seeds": [0, 1], "lstm_sizes": [16, 32]}
    one, stacked = tmp_path / "one", tmp_path / "stacked"
    with torch_threads(1):
        api.train(cache, one, ["audio", "late", "modal"], settings, targets="both", **options)
        api.train(cache, stacked, ["audio", "late", "modal"], settings, targets="arousal", **options)
        capsys.readouterr()
        api.train(cache, stacked, ["audio", "late", "modal"], settings, targets="both", stacked=True, **options)
    said = capsys.readouterr().out
    assert "stacked: training 6 models at once (LSTM 16, valence)" in said and "arousal)" not in said
    assert not (stacked / "late-lstm16" / "seed-0" / "visual").exists()  # late fusion of the heads
    (stacked / "log.txt").unlink(), (one / "log.txt").unlink()
    assert_same_runs(stacked, one)


def test_a_stacked_model_pt_is_an_emotion_head(cache, tmp_path):
    """model.pt loads into EmotionHead(settings.head), strictly, and holds the epoch selected in log.csv."""
    settings = replace(QUIET, epochs=2)
    with torch_threads(1):
        api.train(cache, tmp_path / "run", ["modal", "late"], settings, stacked=True)
    for folder in ("modal", "late/visual", "late/audio"):
        saved = torch.load(tmp_path / "run" / folder / "model.pt", weights_only=True)
        head = EmotionHead(replace(QUIET.head, **saved["settings"]["head"]))
        head.load_state_dict(saved["model"])  # strict: every parameter and buffer, no other
        log = _rows(tmp_path / "run" / folder / "log.csv")
        best = min(log, key=lambda row: float(row["validation_loss"]))  # select loss: the first of the lowest
        assert len(log) == 2 and saved["epoch"] == int(best["epoch"]) and saved["settings"]["seed"] == 0


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_evaluate_predict_export_and_joint_on_a_stacked_run(tmp_path):
    """A tiny real extraction, trained with `avemo train --stacked` (dropout on): evaluate, predict --run,
    export and --joint read the run as any other."""
    root = build_run(tmp_path)  # also the videos; its one-by-one run is replaced by a stacked one
    (root / "run").rename(root / "one")
    result = invoke("train", "--cache", root / "cache", "--run", root / "run", "--approach", "all", "--stacked",
                    "--epochs", QUICK.epochs, "--batch-size", QUICK.batch_size, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    results = api.evaluate(root / "run", resamples=20, plots=False, quiet=True)
    assert set(APPROACHES) <= set(results["approaches"])
    for approach in ("modal", "late"):
        by_run = invoke("predict", "--run", root / "run", "--approach", approach, root / "v/b.mp4")
        assert by_run.exit_code == 0, by_run.output
        got = json.loads(by_run.stdout)["videos"][0]["clip"]["arousal"]["probabilities"]
        expected = written(root / "run" / approach / "predictions.csv")["v/b.mp4"]
        np.testing.assert_allclose([got[n] for n in ("calm", "neutral", "active")], expected, atol=5e-4)
    assert invoke("export", "--run", root / "run", "--out", tmp_path / "model", "--approach", "late").exit_code == 0
    joint = JointSettings(epochs=1, batch_size=4, lr=0.01, backbone_lr=1e-3, select="last", device="cpu")
    api.train(root / "cache", root / "run", "modal", QUICK, joint=joint)
    assert (root / "run" / "joint" / "predictions.csv").is_file()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"clip_grad": 1.0}, "--stacked: gradient clipping"),
        ({"head": replace(QUIET.head, temporal="none")}, "--stacked trains the approaches' LSTM heads"),
    ],
)
def test_what_stacking_does_not_do_is_refused_before_any_work(cache, tmp_path, change, message):
    with pytest.raises(AvemoError, match=message):
        api.train(cache, tmp_path / "run", "modal", replace(QUIET, **change), stacked=True)
    assert_refused(tmp_path / "run")


def assert_refused(run) -> None:
    """Refused before the run folder is made (so RUN/log.txt, opened once it exists, is not made either)."""
    assert not run.exists()


def test_torchrun_and_the_cli_refusal_are_one_line(cache, tmp_path, monkeypatch):
    result = invoke("train", "--cache", cache, "--run", tmp_path / "run", "--stacked", "--clip-grad", 1, "--device", "cpu")
    assert result.exit_code != 0 and result.output.strip().splitlines() == [
        "Error: --stacked: gradient clipping (--clip-grad) works per model, not in a stack; give --clip-grad 0"
    ]
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(AvemoError, match="without torchrun"):
        api.train(cache, tmp_path / "run", "modal", QUIET, stacked=True)
    assert_refused(tmp_path / "run")
