"""The trainer on a real feature cache (HDF5 shards written by the cache code) with a learnable task."""

import csv
import json

import numpy as np
import pytest

from avemo.cache import ShardStore
from avemo.errors import AvemoError
from avemo.evaluate.report import evaluate
from avemo.train.heads import HeadSettings
from avemo.train.trainer import TrainSettings, train

DIM = 32
# lr 0.05: at 0.1 with momentum 0.9 the LSTM sometimes jumps out of a good minimum on this tiny task
SETTINGS = TrainSettings(
    head=HeadSettings(feature_dim=DIM, hidden=32, lstm_hidden=32, mlp_hidden=32), epochs=40, lr=0.05, batch_size=16
)


def write_feature_cache(folder, n_clips=150, seed=0):
    """Features whose class needs both modalities: level_v in the visual, level_a in the audio rows."""
    rng = np.random.default_rng(seed)
    store = ShardStore(folder / "features", "features")
    store.check_settings({"synthetic": True})
    per_shard = n_clips // 3
    for shard in range(3):
        levels = rng.integers(0, 3, size=(per_shard, 2))
        total = levels.sum(1)
        arousal = np.where(total <= 1, -1, np.where(total == 2, 0, 1))
        lengths = rng.integers(3, 9, size=per_shard)
        seconds = {"visual": [], "audio": []}
        for (lv, la), n in zip(levels, lengths):
            for name, level in (("visual", lv), ("audio", la)):
                x = rng.normal(0, 1, size=(n, DIM))
                x[:, level] += 5  # one-hot level in every second
                seconds[name].append(x.astype(np.float16))
        index = {
            "clip_id": np.array([f"s{shard}/c{i}.mp4" for i in range(per_shard)]),
            "offset": np.concatenate([[0], np.cumsum(lengths)[:-1]]),
            "n_seconds": lengths,
            "arousal": arousal.astype(np.int8),
            "valence": np.full(per_shard, -128, np.int8),
            "split": np.array(["test" if i % 3 == 0 else "train" for i in range(per_shard)]),
            "has_audio": np.ones(per_shard, np.uint8),
        }
        store.add_shard(index, {k: np.concatenate(v) for k, v in seconds.items()})
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache = write_feature_cache(tmp_path_factory.mktemp("cache"))
    run = tmp_path_factory.mktemp("run")
    train(cache, run, ["visual", "audio", "early", "late", "modal"], SETTINGS)
    return run


def test_run_directory_holds_settings_logs_models_and_predictions(trained):
    info = json.loads((trained / "run.json").read_text())
    assert sum(info["train_counts"].values()) == 99
    for approach in ("visual", "audio", "early", "modal"):
        assert {p.name for p in (trained / approach).iterdir()} == {"settings.json", "log.csv", "model.pt", "predictions.csv"}
        losses = [float(r["train_loss"]) for r in csv.DictReader(open(trained / approach / "log.csv"))]
        assert len(losses) == 40 and losses[-1] < losses[0]
        assert json.loads((trained / approach / "settings.json").read_text())["head"]["approach"] == approach
    rows = list(csv.DictReader(open(trained / "late" / "predictions.csv")))
    assert len(rows) == 150 and {r["arousal"] for r in rows} <= {"-1", "0", "1"}
    assert all(abs(sum(float(r[f"p_{n}"]) for n in ("calm", "neutral", "active")) - 1) < 1e-4 for r in rows)


def test_fusion_learns_what_one_modality_cannot(trained):
    results = evaluate(trained)
    accuracy = {a: r["accuracy"] for a, r in results["approaches"].items()}
    assert accuracy["modal"] >= 0.8 and accuracy["early"] >= 0.8
    assert accuracy["visual"] <= 0.7 and accuracy["audio"] <= 0.7
    assert accuracy["modal"] > results["majority_accuracy"] + 0.3
    assert (trained / "report.md").read_text().count("|") > 20


def test_late_fusion_is_eq_14_over_the_single_modality_models(trained):
    def probs(approach):
        rows = list(csv.DictReader(open(trained / approach / "predictions.csv")))
        return np.array([[float(r[f"p_{n}"]) for n in ("calm", "neutral", "active")] for r in rows])

    np.testing.assert_allclose(probs("late"), 0.56 * probs("audio") + 0.44 * probs("visual"), atol=2e-6)


def test_training_is_reproducible_for_a_seed(tmp_path, trained):
    train(json.loads((trained / "run.json").read_text())["cache"], tmp_path, ["modal"], SETTINGS)
    assert (tmp_path / "modal" / "predictions.csv").read_text() == (trained / "modal" / "predictions.csv").read_text()


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
    assert results["approaches"]["modal"]["accuracy"] >= 0
    bad = CliRunner().invoke(main, [str(a) for a in args + ["--lstm-hidden", "64,x"]])
    assert bad.exit_code == 2 and "comma list of integers" in bad.output
