"""Valence as a training target (`avemo train --target arousal|valence|both`): real feature caches whose
valence and arousal are independent, real tiny training runs, evaluate on them, and the run folder's readers."""

import csv
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from avemo import api
from avemo.cache import ShardStore
from avemo.cli import main
from avemo.datasets.manifest import read_manifest
from avemo.errors import AvemoError
from avemo.runfolder import find_predictions, head_paths, read_predictions, targets
from avemo.train.trainer import train

from helpers import DIM, SETTINGS, torch_threads, write_feature_cache

FAST = replace(SETTINGS, epochs=15, patience=0)
UNKNOWN = -128


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def write_valence_cache(folder: Path, n_clips: int = 90, seed: int = 0, unknown: tuple = (), shifted: float = 0.0) -> Path:
    """Features whose valence is in the visual rows and whose arousal is in the audio rows, drawn independently.

    unknown: clip numbers whose valence is unknown (-128); their visual features get `shifted` added (what a
    model of valence must never see). Three shards, clip ids s<shard>/c<i>.mp4, every third one a test clip."""
    rng = np.random.default_rng(seed)
    store = ShardStore(folder / "features", "features")
    store.check_settings({"synthetic": True})
    per_shard = n_clips // 3
    for shard in range(3):
        valence, arousal = rng.integers(0, 3, per_shard), rng.integers(0, 3, per_shard)
        lengths = rng.integers(3, 7, size=per_shard)
        number = shard * per_shard + np.arange(per_shard)
        hidden = np.isin(number, list(unknown))
        seconds = {"visual": [], "audio": []}
        for v, a, n, off in zip(valence, arousal, lengths, hidden):
            for name, level in (("visual", v), ("audio", a)):
                x = rng.normal(0, 1, size=(n, DIM))
                x[:, level] += 5
                x += shifted * (off and name == "visual")
                seconds[name].append(x.astype(np.float16))
        index = {
            "clip_id": np.array([f"s{shard}/c{i}.mp4" for i in range(per_shard)]),
            "offset": np.concatenate([[0], np.cumsum(lengths)[:-1]]),
            "n_seconds": lengths,
            "arousal": (arousal - 1).astype(np.int8),
            "valence": np.where(hidden, UNKNOWN, valence - 1).astype(np.int8),
            "split": np.array(["test" if i % 3 == 0 else "train" for i in range(per_shard)]),
            "has_audio": np.ones(per_shard, np.uint8),
        }
        store.add_shard(index, {k: np.concatenate(v) for k, v in seconds.items()})
    return folder


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """`--target both`, visual and late fusion (two per-second MLPs), on a cache where 6 clips have no valence."""
    cache = write_valence_cache(tmp_path_factory.mktemp("cache"), unknown=(1, 2, 4, 32, 35, 60), shifted=100.0)
    run = tmp_path_factory.mktemp("run")
    api.train(cache, run, ["visual", "late"], FAST, targets="both")
    return cache, run


def test_both_targets_write_both_layouts_and_valence_predictions(both):
    _, run = both
    for root in (run, run / "valence"):
        assert {p.name for p in (root / "visual").iterdir()} >= {"settings.json", "model.pt", "predictions.csv"}
        assert (root / "late" / "visual" / "model.pt").is_file() and (root / "late" / "predictions.csv").is_file()
    valence = rows(run / "valence" / "visual" / "predictions.csv")
    assert list(valence[0]) == ["clip_id", "split", "valence", "predicted_valence", "p_negative", "p_neutral", "p_positive"]
    assert list(rows(run / "visual" / "predictions.csv")[0])[:4] == ["clip_id", "split", "arousal", "predicted"]
    assert torch.load(run / "valence" / "visual" / "model.pt", weights_only=True)["settings"]["target"] == "valence"
    assert torch.load(run / "visual" / "model.pt", weights_only=True)["settings"]["target"] == "arousal"
    assert json.loads((run / "valence" / "visual" / "settings.json").read_text())["target"] == "valence"
    info = json.loads((run / "run.json").read_text())
    assert info["targets"] == ["arousal", "valence"]
    listed = {"valence/visual/predictions.csv", "valence/late/predictions.csv", "visual/predictions.csv"}
    assert listed <= set(info["predictions"])
    assert sum(info["valence_train_counts"].values()) == 60 - 5  # train clips 1, 2, 4, 32, 35 have no valence
    assert targets(run, "visual") == ["arousal", "valence"] and targets(run, "late") == ["arousal", "valence"]
    assert targets(run, "modal") == []


def test_a_valence_model_learns_valence_not_arousal(both):
    """Visual features carry valence only: the valence model scores high on valence, the arousal model of the same
    features stays near chance, and their predictions differ."""
    _, run = both
    valence = [r for r in rows(run / "valence" / "visual" / "predictions.csv") if r["split"] == "test" and r["valence"]]
    arousal = {r["clip_id"]: r for r in rows(run / "visual" / "predictions.csv")}
    right = np.mean([r["valence"] == r["predicted_valence"] for r in valence])
    assert right >= 0.9
    assert np.mean([r["predicted_valence"] == arousal[r["clip_id"]]["predicted"] for r in valence]) < 0.7


def test_clips_without_valence_are_left_out_of_fitting_validation_and_statistics(both):
    _, run = both
    unknown = {"s0/c1.mp4", "s0/c2.mp4", "s0/c4.mp4", "s1/c2.mp4", "s1/c5.mp4", "s2/c0.mp4"}
    last = torch.load(run / "valence" / "visual" / "last.pt", weights_only=True)
    assert not unknown & set(last["record"]["fitting"])
    saved = torch.load(run / "valence" / "visual" / "model.pt", weights_only=True)
    assert not unknown & set(saved["validation"])
    assert float(saved["norm"]["visual_mean"].abs().max()) < 5  # the +100 shifted clips would pull it far up
    arousal_fit = torch.load(run / "visual" / "last.pt", weights_only=True)["record"]["fitting"]
    arousal_validation = torch.load(run / "visual" / "model.pt", weights_only=True)["validation"]
    assert unknown - {"s2/c0.mp4"} <= set(arousal_fit) | set(arousal_validation)  # s2/c0 is a test clip
    assert set(saved["validation"]) == set(arousal_validation) - unknown < set(arousal_validation)  # the same, known
    assert set(last["record"]["fitting"]) == set(arousal_fit) - unknown
    listed = {r["clip_id"]: r["valence"] for r in rows(run / "valence" / "visual" / "predictions.csv")}
    assert len(listed) == 90 and all(listed[c] == "" for c in unknown)


def test_evaluate_scores_valence_beside_its_train_majority(both, capsys):
    cache, run = both
    results = api.evaluate(run, resamples=100, plots=False)
    out = capsys.readouterr().out
    assert "Arousal:" in out and "Valence:" in out
    index = ShardStore(cache / "features", "features").read_index()
    known = index["valence"] != UNKNOWN
    train = Counter(index["valence"][(index["split"] == "train") & known].tolist())
    majority = max(sorted(train), key=lambda k: train[k])  # ties: the lower class
    test = index["valence"][(index["split"] == "test") & known]
    valence = results["tasks"]["valence"]
    assert valence["majority_accuracy"] == pytest.approx(float((test == majority).mean()))
    assert valence["test_clips"] == int(known[index["split"] == "test"].sum()) == 29
    assert {e["predictions"] for e in valence["entries"]} == {"valence/visual/predictions.csv", "valence/late/predictions.csv"}
    assert len(results["tasks"]["arousal"]["entries"]) == 2
    assert (run / "mediaeval" / "valence-visual.txt").is_file() and (run / "mediaeval" / "arousal-visual.txt").is_file()
    assert len((run / "mediaeval" / "valence-late.txt").read_text().splitlines()) == 29


def test_target_valence_on_a_cache_without_valence_is_refused(tmp_path):
    cache = write_feature_cache(tmp_path / "cache", n_clips=30)  # every valence unknown
    with pytest.raises(AvemoError, match="no train clip has a valence label") as error:
        train(cache, tmp_path / "run", ["visual"], replace(FAST, target="valence"))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run" / "valence").exists()
    result = CliRunner().invoke(main, ["train", "--cache", str(cache), "--run", str(tmp_path / "r2"), "--target", "both"])
    assert result.exit_code != 0 and "Error:" in result.output and "no train clip has a valence label" in result.output
    assert not (tmp_path / "r2" / "visual").exists()  # refused before arousal trains


def test_joint_pass_with_target_valence_is_refused(tmp_path):
    from avemo.train.settings import JointSettings

    with pytest.raises(AvemoError, match="joint pass is arousal-only"):
        api.train(tmp_path / "cache", tmp_path / "run", "modal", FAST, joint=JointSettings(), targets="valence")


def test_manifest_without_a_valence_column_loads(tmp_path):
    (tmp_path / "clips.csv").write_text("path,arousal,split,movie\na.mp4,0,train,M1\nb.mp4,-1,test,M2\n")
    clips = read_manifest(tmp_path / "clips.csv")
    assert [(c.arousal, c.valence, c.meta) for c in clips] == [(0, None, {"movie": "M1"}), (-1, None, {"movie": "M2"})]
    (tmp_path / "bad.csv").write_text("path,arousal,valance,split\na.mp4,0,0,train\n")
    with pytest.raises(AvemoError, match="misspelt 'valence'"):  # a column written wrong is not silently metadata
        read_manifest(tmp_path / "bad.csv")


def test_config_of_a_valence_model_trains_valence_again(tmp_path, both):
    cache, run = both
    config = run / "valence" / "visual" / "settings.json"
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--run", str(tmp_path / "again"), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again" / "valence" / "visual" / "predictions.csv").is_file()
    assert not (tmp_path / "again" / "visual").exists()


def test_read_predictions_takes_either_pair_and_refuses_neither(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("clip_id,split,valence,predicted_valence\na,train,1,0\nb,test,,1\n")
    p = read_predictions(path, "modal", target="valence")
    assert set(p.labels) == {"valence"} and p.labels["valence"][1] == UNKNOWN
    path.write_text("clip_id,split,p_calm\na,train,0.5\n")
    with pytest.raises(AvemoError, match="missing columns arousal,predicted or valence,predicted_valence"):
        read_predictions(path, "modal")


def _model(folder: Path, seed: int, marker: str = "model.pt") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / marker).write_bytes(b"x")
    (folder / "settings.json").write_text(json.dumps({"seed": seed, "late_from": "mlp"}))


def test_head_paths_per_seed_and_target_with_errors_that_name_the_fix(tmp_path):
    run = tmp_path / "run"
    (run).mkdir()
    (run / "run.json").write_text(json.dumps({"cache": "/data/cache"}))
    for s in (0, 1, 2):
        _model(run / "modal" / f"seed-{s}", s)
        _model(run / "late" / f"seed-{s}", s, "predictions.csv")
        for m in ("visual", "audio"):
            _model(run / "late" / f"seed-{s}" / m, s)
    _model(run / "valence" / "modal", 0)
    assert head_paths(run, "modal", seed=1) == [run / "modal" / "seed-1" / "model.pt"]
    assert head_paths(run, "late", seed=2) == [run / "late" / "seed-2" / m / "model.pt" for m in ("visual", "audio")]
    assert head_paths(run, "modal", target="valence") == [run / "valence" / "modal" / "model.pt"]
    assert head_paths(run, "modal", seed=0, target="valence") == [run / "valence" / "modal" / "model.pt"]
    with pytest.raises(AvemoError, match=r"trained with seeds 0, 1, 2: choose one with --seed"):
        head_paths(run, "modal")
    with pytest.raises(AvemoError, match=r"no modal model of seed 5 \(trained with seeds 0, 1, 2\).*--seed 5`"):
        head_paths(run, "modal", seed=5)
    with pytest.raises(AvemoError, match=r"`avemo train --cache /data/cache --run .* --approach early --target valence`"):
        head_paths(run, "early", target="valence")
    with pytest.raises(AvemoError, match=r"--approach audio`$"):
        head_paths(run, "audio")
    with pytest.raises(AvemoError, match=r"no joint pass .*`avemo train --run .* --joint`"):
        head_paths(run, "joint")
    with pytest.raises(AvemoError, match="arousal-only"):
        head_paths(run, "joint", target="valence")
    assert targets(run, "modal") == ["arousal", "valence"] and targets(run, "late") == ["arousal"]


def test_find_predictions_keeps_the_targets_apart(both):
    _, run = both
    found = [(p.target, p.name, tuple(p.labels)) for p in find_predictions(run)]
    assert found == [
        ("arousal", "visual", ("arousal",)),
        ("arousal", "late", ("arousal",)),
        ("valence", "visual", ("valence",)),
        ("valence", "late", ("valence",)),
    ]


def test_summary_shows_valence_baselines_from_train_and_the_test_splits_own(tmp_path):
    from avemo.datasets.dataset import Dataset
    from avemo.datasets.summary import summarize

    text = "path,arousal,valence,split\na.mp4,0,-1,train\nb.mp4,0,-1,train\nc.mp4,0,0,train\n"
    text += "d.mp4,0,-1,test\ne.mp4,0,0,test\nf.mp4,0,0,test\ng.mp4,0,,test\n"
    (tmp_path / "clips.csv").write_text(text)
    out = summarize(Dataset("x", read_manifest(tmp_path / "clips.csv")))
    assert "valence  negative 1 (33.33%), neutral 2 (66.67%), positive 0 (0.00%), unknown 1; majority 'neutral' 66.67%" in out
    assert (
        "baseline valence: always 'negative' (train's majority) scores 33.33% on test "
        "(the test split's own majority, 'neutral', 66.67%)"
    ) in out
    (tmp_path / "arousal.csv").write_text("path,arousal,split\na.mp4,0,train\nb.mp4,1,test\n")
    out = summarize(Dataset("x", read_manifest(tmp_path / "arousal.csv")))
    assert "valence  unknown for all clips" in out and "baseline valence" not in out


def test_seeds_of_both_targets_are_found_and_a_half_written_valence_model_is_named(tmp_path):
    from avemo.runfolder import missing_predictions

    cache = write_valence_cache(tmp_path / "cache", n_clips=30)
    run = tmp_path / "run"
    api.train(cache, run, "visual", replace(FAST, epochs=2), seeds=[0, 1], targets="both")
    found = find_predictions(run)
    assert [(p.target, p.seed) for p in found] == [("arousal", 0), ("arousal", 1), ("valence", 0), ("valence", 1)]
    assert missing_predictions(run, found) == []
    assert head_paths(run, "visual", seed=1, target="valence") == [run / "valence" / "visual" / "seed-1" / "model.pt"]
    (run / "valence" / "visual" / "seed-1" / "predictions.csv").unlink()
    with pytest.raises(AvemoError, match=r"valence/visual: half written: valence/visual/seed-1/predictions.csv missing"):
        missing_predictions(run, find_predictions(run))
