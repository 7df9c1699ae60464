"""The trainer on a real feature cache (HDF5 shards written by the cache code) with a learnable task."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from avemo.errors import AvemoError
from avemo.evaluate.report import evaluate
from avemo.runfolder import cache_of
from avemo.train.heads import HeadSettings
from avemo.train.trainer import TrainSettings, train

from helpers import SETTINGS, torch_threads, write_feature_cache

SMALL = replace(SETTINGS, epochs=3)  # for equalities: a leak or a difference shows from the first epoch on


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one torch thread (see helpers.torch_threads)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """All five approaches trained to learn (40 epochs on 150 clips): the tests of layout and accuracy."""
    cache = write_feature_cache(tmp_path_factory.mktemp("cache"))
    run = tmp_path_factory.mktemp("run")
    train(cache, run, ["visual", "audio", "early", "late", "modal"], SETTINGS)
    return run


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A run of the visual and modal heads, 3 epochs on 60 clips: what the tests of equality compare against."""
    cache = write_feature_cache(tmp_path_factory.mktemp("small"), n_clips=60)
    run = tmp_path_factory.mktemp("small-run")
    train(cache, run, ["visual", "modal"], SMALL)
    return run


def test_run_directory_holds_settings_logs_models_and_predictions(trained):
    info = json.loads((trained / "run.json").read_text())
    assert sum(info["train_counts"].values()) == 99
    for approach in ("visual", "audio", "early", "modal"):
        files = {p.name for p in (trained / approach).iterdir()}
        assert files == {"settings.json", "log.csv", "model.pt", "last.pt", "predictions.csv"}
        log = list(csv.DictReader(open(trained / approach / "log.csv")))
        assert set(log[0]) == {"epoch", "train_loss", "validation_loss", "validation_accuracy"}
        assert 10 < len(log) <= 40 and float(log[-1]["train_loss"]) < float(log[0]["train_loss"])
        # model.pt is the epoch of the lowest validation loss, with what it takes to resume or audit it
        best = min(log, key=lambda r: float(r["validation_loss"]))
        saved = torch.load(trained / approach / "model.pt", weights_only=True)
        assert saved["epoch"] == int(best["epoch"])
        assert set(saved) == {"model", "epoch", "settings", "norm", "validation", "cache_sha256"}
        assert saved["cache_sha256"] == info["cache_sha256"] and saved["settings"]["head"]["approach"] == approach
        assert saved["validation"] == info["validation_clips"] and 9 <= len(saved["validation"]) <= 11  # 10% of 99
        assert json.loads((trained / approach / "settings.json").read_text())["head"]["approach"] == approach
    # late fusion: its two per-second MLP classifiers (no LSTM) in late/visual and late/audio, then eq. 14
    for modality in ("visual", "audio"):
        files = {p.name for p in (trained / "late" / modality).iterdir()}
        assert files == {"settings.json", "log.csv", "model.pt", "last.pt", "predictions.csv"}
        head = json.loads((trained / "late" / modality / "settings.json").read_text())["head"]
        assert head["approach"] == modality and head["temporal"] == "none"
        assert "lstm.weight_hh_l0" not in torch.load(trained / "late" / modality / "model.pt", weights_only=True)["model"]
    rows = list(csv.DictReader(open(trained / "late" / "predictions.csv")))
    assert len(rows) == 150 and {r["arousal"] for r in rows} <= {"-1", "0", "1"}
    assert all(abs(sum(float(r[f"p_{n}"]) for n in ("calm", "neutral", "active")) - 1) < 1e-4 for r in rows)


def test_fusion_learns_what_one_modality_cannot(trained):
    results = evaluate(trained, quiet=True, plots=False)  # the plots: test_report
    accuracy = {a: r["accuracy"] for a, r in results["approaches"].items()}
    assert accuracy["modal"] >= 0.8 and accuracy["early"] >= 0.8
    assert accuracy["visual"] <= 0.7 and accuracy["audio"] <= 0.7
    assert accuracy["modal"] > results["majority_accuracy"] + 0.3
    assert (trained / "report.md").read_text().count("|") > 20


def probabilities(folder: Path) -> np.ndarray:
    rows = list(csv.DictReader(open(folder / "predictions.csv")))
    return np.array([[float(r[f"p_{n}"]) for n in ("calm", "neutral", "active")] for r in rows])


def accuracy_on_test(folder: Path) -> float:
    rows = [r for r in csv.DictReader(open(folder / "predictions.csv")) if r["split"] == "test"]
    return float(np.mean([r["predicted"] == r["arousal"] for r in rows]))


def test_a_head_learns_classes_its_features_separate(tmp_path):
    """Classes given by the visual features alone: the visual head, trained, is far above the majority class."""
    cache = write_feature_cache(tmp_path / "cache", n_clips=90, visual_only=True)
    train(cache, tmp_path / "run", ["visual"], replace(SETTINGS, epochs=15))
    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "visual" / "predictions.csv")) if r["split"] == "test"]
    majority = max(np.mean([r["arousal"] == c for r in rows]) for c in ("-1", "0", "1"))
    assert accuracy_on_test(tmp_path / "run" / "visual") >= majority + 0.3  # 0.93 against 0.47 (1e-6 lr: 0.33)


def test_late_fusion_is_eq_14_over_two_mlp_classifiers_or_the_lstm_heads(tmp_path, trained):
    late = trained / "late"
    expected = 0.56 * probabilities(late / "audio") + 0.44 * probabilities(late / "visual")
    np.testing.assert_allclose(probabilities(late), expected, atol=2e-6)
    # --late-from lstm: the visual-only and audio-only heads of the run, reused, not trained again
    cache = cache_of(trained)
    for approach in ("visual", "audio"):
        shutil.copytree(trained / approach, tmp_path / approach)
    train(cache, tmp_path, ["late"], replace(SETTINGS, late_from="lstm"))
    assert (tmp_path / "visual" / "model.pt").read_bytes() == (trained / "visual" / "model.pt").read_bytes()
    expected = 0.56 * probabilities(trained / "audio") + 0.44 * probabilities(trained / "visual")
    np.testing.assert_allclose(probabilities(tmp_path / "late"), expected, atol=2e-6)
    assert not (tmp_path / "late" / "visual").exists()


def test_an_approach_that_cannot_be_trained_does_not_stop_the_others(tmp_path):
    from click.testing import CliRunner

    from avemo.cli import main

    cache = write_feature_cache(tmp_path / "cache", n_clips=30, silent=range(30))  # no clip has sound
    run = tmp_path / "run"
    args = ["train", "--cache", cache, "--run", run, "--approach", "all", "--epochs", "2"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1
    assert "2 model(s) could not be trained, the others finished" in result.output
    assert "audio: no train clip has an audio stream" in result.output and "late: no train clip" in result.output
    for approach in ("visual", "early", "modal"):
        assert (run / approach / "predictions.csv").is_file()
    assert not (run / "audio" / "predictions.csv").exists() and not (run / "late" / "predictions.csv").exists()


def test_the_test_split_never_changes_the_model(tmp_path, small):
    """Other test features and labels: the same weights, epochs and validation scores (test is only predicted)."""
    cache = write_feature_cache(tmp_path / "cache", n_clips=60, test_shift=3.0)
    train(cache, tmp_path / "run", ["modal"], SMALL)
    ours, theirs = (torch.load(r / "modal" / "model.pt", weights_only=True) for r in (tmp_path / "run", small))
    assert ours["epoch"] == theirs["epoch"]
    for name, value in theirs["model"].items():
        torch.testing.assert_close(ours["model"][name], value, rtol=0, atol=0)
    assert (tmp_path / "run" / "modal" / "log.csv").read_text() == (small / "modal" / "log.csv").read_text()
    # the train clips are predicted alike; the test clips from their own, shifted features
    ours, theirs = (list(csv.DictReader(open(r / "modal" / "predictions.csv"))) for r in (tmp_path / "run", small))
    assert [r for r in ours if r["split"] == "train"] == [r for r in theirs if r["split"] == "train"]
    assert [r["p_calm"] for r in ours if r["split"] == "test"] != [r["p_calm"] for r in theirs if r["split"] == "test"]


def test_training_is_reproducible_for_a_seed(tmp_path, small):
    train(cache_of(small), tmp_path, ["modal"], SMALL)
    assert (tmp_path / "modal" / "predictions.csv").read_text() == (small / "modal" / "predictions.csv").read_text()
    ours, theirs = (torch.load(r / "modal" / "model.pt", weights_only=True)["model"] for r in (tmp_path, small))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_empty_cache_is_one_clear_error(tmp_path):
    with pytest.raises(AvemoError, match="no features shards here; run `avemo extract` first"):
        train(tmp_path, tmp_path / "run", ["modal"])


def test_seeds_and_lstm_sweep_write_the_layout_evaluate_reads(tmp_path):
    from click.testing import CliRunner

    from avemo.cli import main

    cache = write_feature_cache(tmp_path / "cache", n_clips=30)
    run = tmp_path / "run"
    args = ["train", "--cache", cache, "--run", run, "--approach", "modal", "--epochs", "2", "--seeds", "2", "--seed", "3"]
    result = CliRunner().invoke(main, [str(a) for a in args + ["--lstm-hidden", "64,256"]])
    assert result.exit_code == 0, result.output
    for folder in ("modal", "modal-lstm64"):
        for seed in (3, 4):
            settings = json.loads((run / folder / f"seed-{seed}" / "settings.json").read_text())
            assert settings["seed"] == seed and settings["head"]["lstm_hidden"] == (64 if "64" in folder else 256)
            assert (run / folder / f"seed-{seed}" / "predictions.csv").is_file()
    results = evaluate(run)
    assert (run / "plots" / "fig2-lstm-hidden-arousal.png").is_file()  # the paper's Fig. 2
    assert "±" in (run / "report.md").read_text()  # mean ± std over the seeds
    # the reported accuracy is the mean over both seeds' predictions files (the paper-size folder)
    per_seed = [accuracy_on_test(run / "modal" / f"seed-{seed}") for seed in (3, 4)]
    assert results["approaches"]["modal"]["seeds"] == [3, 4]
    assert results["approaches"]["modal"]["accuracy"] == pytest.approx(np.mean(per_seed), abs=1e-9)
    bad = CliRunner().invoke(main, [str(a) for a in args + ["--lstm-hidden", "64,x"]])
    assert bad.exit_code == 2 and "comma list of integers" in bad.output


def test_validation_takes_whole_movies_and_silent_clips_teach_no_audio(tmp_path):
    silent = {1, 2, 4, 5, 7}  # train clips (every third clip is a test clip)
    cache = write_feature_cache(tmp_path / "cache", n_clips=60, movies=True, silent=silent)
    run = tmp_path / "run"
    settings = replace(SETTINGS, epochs=3, validation=0.25)
    train(cache, run, ["late"], settings)
    info = json.loads((run / "run.json").read_text())
    movie = {f"s{n // 20}/c{n % 20}.mp4": f"movie{n // 10}" for n in range(60)}
    held_out = {movie[c] for c in info["validation_clips"]}
    fitted = torch.load(run / "late" / "visual" / "last.pt", weights_only=True)["record"]["fitting"]
    assert held_out and not held_out & {movie[c] for c in fitted}  # no movie on both sides
    assert len(fitted) + len(info["validation_clips"]) == 39  # 13 train clips per shard
    audio_fitted = torch.load(run / "late" / "audio" / "last.pt", weights_only=True)["record"]["fitting"]
    silent_ids = {f"s{n // 20}/c{n % 20}.mp4" for n in silent}
    assert set(audio_fitted) == set(fitted) - silent_ids  # blank spectrograms never train the audio model

    def probs(approach):
        return {
            r["clip_id"]: np.array([float(r[f"p_{n}"]) for n in ("calm", "neutral", "active")])
            for r in csv.DictReader(open(run / approach / "predictions.csv"))
        }

    late, visual = probs("late"), probs("late/visual")
    for clip in silent_ids:
        np.testing.assert_allclose(late[clip], visual[clip], atol=2e-6)  # late fusion without sound: visual only


def test_options_per_step_supervision_class_weights_fixed_alpha_clipping(tmp_path):
    cache = write_feature_cache(tmp_path / "cache", n_clips=90)
    head = replace(SETTINGS.head, alpha_audio=0.56, alpha_visual=0.44, learn_alpha=False)
    settings = replace(
        SETTINGS, head=head, supervise="every", class_weights="balanced", clip_grad=1.0, epochs=45, deterministic=True
    )
    train(cache, tmp_path / "run", ["modal"], settings)
    saved = torch.load(tmp_path / "run" / "modal" / "model.pt", weights_only=True)
    assert float(saved["model"]["alpha_audio"]) == pytest.approx(0.56)  # fixed, not learned
    assert saved["settings"]["supervise"] == "every" and saved["settings"]["class_weights"] == "balanced"
    assert not torch.are_deterministic_algorithms_enabled()  # the global switch is restored after the run
    results = evaluate(tmp_path / "run", quiet=True, plots=False)
    assert results["approaches"]["modal"]["accuracy"] >= results["majority_accuracy"] + 0.25
    with pytest.raises(AvemoError, match="supervise 'all': must be one of last, every"):
        replace(settings, supervise="all")


def test_a_batch_is_its_clips_seconds_packed_and_only_the_modalities_asked(small):
    from avemo.train.data import load_features

    data = load_features(cache_of(small))
    clips = torch.tensor([5, 0, 17])
    visual, audio, lengths, has_audio = data.batch(clips)
    by_hand = [(int(data.offsets[c]), int(data.lengths[c])) for c in clips]
    for got, features in ((visual, data.visual), (audio, data.audio)):
        expected = torch.cat([features[start : start + n] for start, n in by_hand]).float()
        assert got.dtype == torch.float32 and torch.equal(got, expected)
    assert lengths.tolist() == [n for _, n in by_hand] and torch.equal(has_audio, data.has_audio[clips])
    only_visual = data.batch(clips, modalities=("visual",))
    assert only_visual[1] is None and torch.equal(only_visual[0], visual)


def test_memory_mapped_features_train_the_same_model(tmp_path, small):
    cache = cache_of(small)
    train(cache, tmp_path / "run", ["visual"], SMALL, memory="mmap")
    assert (tmp_path / "run" / "visual" / "predictions.csv").read_text() == (small / "visual" / "predictions.csv").read_text()
    assert not list((tmp_path / "run").glob(".features*"))  # the mapped copy is removed at the end


RESUME = """
import json, sys
from avemo.train.settings import TrainSettings
from avemo.train.trainer import train
train(sys.argv[1], sys.argv[2], ["modal"], TrainSettings.from_json(json.loads(sys.argv[3])))
"""


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    """A real process killed by SIGKILL after epoch 3 (in epoch 4 or while writing), then `train` into its run
    again: the same log, predictions and weights, bit for bit, as a run never interrupted (30 epochs of 3 batches;
    test_engine resumes in the middle of an epoch)."""
    cache = write_feature_cache(tmp_path / "cache", n_clips=60)
    settings = replace(SETTINGS, epochs=30, patience=0, validation=0.1, device="cpu", checkpoint_share=0.0)  # every epoch
    command = [sys.executable, "-c", RESUME, str(cache), str(tmp_path / "killed"), json.dumps(settings.to_json())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one torch thread, as in this module

    killed = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    last = tmp_path / "killed" / "modal" / "last.pt"
    while killed.poll() is None:
        try:
            if torch.load(last, weights_only=True)["progress"]["epoch"] >= 3:
                killed.send_signal(signal.SIGKILL)
                break
        except (FileNotFoundError, RuntimeError, EOFError):
            pass
        time.sleep(0.01)
    assert killed.wait(timeout=600) == -signal.SIGKILL
    epoch = torch.load(last, weights_only=True)["progress"]["epoch"]
    assert 3 <= epoch < 30
    capsys.readouterr()
    train(cache, tmp_path / "killed", ["modal"], settings)  # what the same command runs again: it resumes
    assert f"modal: resuming after epoch {epoch}" in capsys.readouterr().out
    train(cache, tmp_path / "whole", ["modal"], settings)  # never interrupted
    for name in ("log.csv", "predictions.csv"):
        assert (tmp_path / "killed" / "modal" / name).read_text() == (tmp_path / "whole" / "modal" / name).read_text()
    assert len((tmp_path / "whole" / "modal" / "log.csv").read_text().splitlines()) == 1 + 30
    resumed, whole = (torch.load(tmp_path / r / "modal" / "model.pt", weights_only=True) for r in ("killed", "whole"))
    assert resumed["epoch"] == whole["epoch"]
    for name, value in whole["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, rtol=0, atol=0)


def test_two_process_torchrun_training_equals_one_process(tmp_path):
    """Each rank takes half of every batch; the averaged gradients are the whole batch's (dropout off, so the
    two runs draw nothing differently): the same losses and predictions as one process, up to rounding."""
    cache = write_feature_cache(tmp_path / "cache", n_clips=60)
    avemo = Path(sys.executable).parent / "avemo"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(avemo), "train"]
    command += ["--cache", str(cache), "--run-dir", str(tmp_path / "two"), "--approach", "late", "--epochs", "3"]
    result = subprocess.run(command + ["--dropout", "0"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rank 0/2] late:" in result.stdout and "[rank 1/2] late:" in result.stdout
    one = TrainSettings(head=HeadSettings(dropout=0), epochs=3, device="cpu")
    train(cache, tmp_path / "one", ["late"], one)
    for approach in ("late/visual", "late/audio", "late"):
        rows = {n: list(csv.DictReader(open(tmp_path / n / approach / "predictions.csv"))) for n in ("one", "two")}
        assert len(rows["one"]) == len(rows["two"]) == 60
        for a, b in zip(rows["one"], rows["two"]):
            assert a["clip_id"] == b["clip_id"]
            for name in ("p_calm", "p_neutral", "p_active"):
                assert float(a[name]) == pytest.approx(float(b[name]), abs=1e-4)
    logs = {n: list(csv.DictReader(open(tmp_path / n / "late" / "visual" / "log.csv"))) for n in ("one", "two")}
    assert [int(r["epoch"]) for r in logs["two"]] == [int(r["epoch"]) for r in logs["one"]] == [1, 2, 3]
    for a, b in zip(logs["one"], logs["two"]):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), abs=1e-4)


def test_a_run_trained_with_other_settings_is_never_overwritten(tmp_path, small):
    cache = cache_of(small)
    shutil.copytree(small / "visual", tmp_path / "run" / "visual")
    with pytest.raises(AvemoError, match=r"other settings \(epochs: 3 → 7\).*delete that folder"):
        train(cache, tmp_path / "run", ["visual"], replace(SMALL, epochs=7))
    for name in ("model.pt", "settings.json", "predictions.csv", "last.pt", "log.csv"):
        assert (tmp_path / "run" / "visual" / name).read_bytes() == (small / "visual" / name).read_bytes()
    # how often last.pt is written is no setting of the model: the finished one is reused, not refused
    train(cache, tmp_path / "run", ["visual"], replace(SMALL, checkpoint_share=0.0))
    assert (tmp_path / "run" / "visual" / "model.pt").read_bytes() == (small / "visual" / "model.pt").read_bytes()
