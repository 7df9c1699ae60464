"""`avemo predict` on real mp4 files with a real (tiny) extraction, fine-tuning and training."""

import csv
import io
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from avemo.cli import main
from avemo.datasets.manifest import read_manifest, write_manifest
from avemo.extract.alexnet import TINY_WIDTH
from avemo.extract.finetune import FinetuneSettings
from avemo.extract.pipeline import ExtractSettings, extract
from avemo.predict import Predictor
from avemo.train.trainer import TrainSettings, train

from helpers import make_clip

CLIPS = [("a", 2.2, -1, "train"), ("b", 3.1, 1, "train"), ("c", 2.0, 0, "train"), ("d", 2.4, -1, "train"), ("t", 2.3, 1, "test")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Extract (fine-tuning fc, 1 epoch), then train visual, audio, late and modal for 2 epochs, on five tiny clips,
    with the tiny AlexNet-shaped network: the plumbing is the same (full-size AlexNets: test_cli.py)."""
    root = tmp_path_factory.mktemp("predict")
    (root / "v").mkdir()
    for i, (name, seconds, _, _) in enumerate(CLIPS):
        make_clip(root / f"v/{name}.mp4", seconds=seconds, seed=i, audio_hz=300 + 200 * i)
    rows = [{"path": f"v/{n}.mp4", "arousal": a, "valence": "", "split": s} for n, _, a, s in CLIPS]
    write_manifest(root / "clips.csv", rows)
    settings = ExtractSettings(
        weights="tiny", workers=1, clips_per_shard=4, batch_size=8, finetune=FinetuneSettings(mode="fc", epochs=1)
    )
    extract(read_manifest(root / "clips.csv"), root / "cache", settings)
    train(root / "cache", root / "run", ["visual", "audio", "late", "modal"], TrainSettings(epochs=2, batch_size=2))
    make_clip(root / "new.mp4", seconds=3.6, seed=42, audio_hz=900)  # not in the cache: 3 whole seconds
    make_clip(root / "mute.mp4", seconds=2.0, seed=43, audio_hz=None)
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    make_clip(root / "short.mp4", seconds=0.5, seed=44)
    return root


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_cached_clip_gets_the_probabilities_train_wrote(run):
    """Decoding, codec round trip, AlexNets and head reproduce predictions.csv for a clip of the cache."""
    written = {r["clip_id"]: r for r in csv.DictReader(open(run / "run" / "modal" / "predictions.csv"))}
    predictor = Predictor(run / "run", "modal", batch_size=8)
    for clip in ("v/b.mp4", "v/t.mp4"):
        got = predictor.predict(run / clip)
        expected = [float(written[clip][f"p_{n}"]) for n in ("calm", "neutral", "active")]
        np.testing.assert_allclose(got.clip, expected, atol=5e-4)
        assert len(got.per_second) == {"v/b.mp4": 3, "v/t.mp4": 2}[clip]


def test_new_videos_json_per_second_and_clip_and_bad_files_one_line_each(run):
    result = invoke(
        "predict", "--run", run / "run", run / "new.mp4", run / "corrupt.mp4", run / "mute.mp4",
        run / "short.mp4", run / "missing.mp4", "-o", run / "out.json",
    )  # fmt: skip
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 3, result.stderr
    assert any("corrupt.mp4: cannot read video" in e for e in errors)
    assert any("short.mp4: shorter than one second" in e for e in errors)
    assert any("missing.mp4: file not found" in e for e in errors)
    assert "Traceback" not in result.output + result.stderr
    document = json.loads((run / "out.json").read_text())
    assert document["approach"] == "modal" and document["classes"] == ["calm", "neutral", "active"]
    new, mute = document["videos"]
    assert new["path"].endswith("new.mp4") and new["seconds"] == 3 and len(new["per_second"]) == 3
    assert mute["has_audio"] is False and mute["seconds"] == 2
    for video in (new, mute):
        for step in [*video["per_second"], video["clip"]]:
            assert abs(sum(step["probabilities"].values()) - 1) < 1e-4
            assert step["class"] == max(step["probabilities"], key=step["probabilities"].get)
        assert video["clip"]["probabilities"] == video["per_second"][-1]["probabilities"]
    assert {f["path"].split("/")[-1] for f in document["failed"]} == {"corrupt.mp4", "short.mp4", "missing.mp4"}


def test_csv_and_late_fusion_of_the_two_mlp_classifiers(run):
    for approach in ("visual", "audio", "late"):
        result = invoke("predict", "--run", run / "run", "--approach", approach, "--format", "csv", run / "new.mp4")
        assert result.exit_code == 0, result.output
        assert [r["second"] for r in csv.DictReader(io.StringIO(result.stdout))] == ["0", "1", "2", "clip"]
    # late fusion reads its own MLP classifiers (RUN/late/visual, RUN/late/audio) and reproduces predictions.csv
    result = invoke("predict", "--run", run / "run", "--approach", "late", "--format", "csv", run / "v/b.mp4")
    clip = [r for r in csv.DictReader(io.StringIO(result.stdout)) if r["second"] == "clip"][0]
    written = {r["clip_id"]: r for r in csv.DictReader(open(run / "run" / "late" / "predictions.csv"))}["v/b.mp4"]
    for name in ("p_calm", "p_neutral", "p_active"):
        assert float(clip[name]) == pytest.approx(float(written[name]), abs=5e-4)


def test_a_run_without_the_head_is_one_clear_error(run):
    result = invoke("predict", "--run", run / "run", "--approach", "modal-lstm64", run / "new.mp4")
    assert result.exit_code == 1 and "no trained head here" in result.output
    result = invoke("predict", "--run", run / "nowhere", run / "new.mp4")
    assert result.exit_code == 1 and "run.json: not found" in result.output


def test_a_tiny_backbone_run_predicts_its_cached_clips_as_train_did(run, tmp_path):
    """The Embedder of a `--weights tiny --finetune none` cache rebuilds its AlexNets from the seed: predict
    embeds a cached clip as extract did (fc7 of the tiny width) and reproduces predictions.csv."""
    shutil.copytree(run / "cache" / "media", tmp_path / "cache" / "media")  # the same clips decoded: only fc7 is new
    settings = ExtractSettings(weights="tiny", seed=5, workers=1, clips_per_shard=4, finetune=FinetuneSettings(mode="none"))
    extract(read_manifest(run / "clips.csv"), tmp_path / "cache", settings)
    train(tmp_path / "cache", tmp_path / "run", ["modal"], TrainSettings(epochs=2, batch_size=2))
    written = {r["clip_id"]: r for r in csv.DictReader(open(tmp_path / "run" / "modal" / "predictions.csv"))}
    predictor = Predictor(tmp_path / "run", "modal", batch_size=8)
    assert predictor.embedder.width("visual") == predictor.embedder.width("audio") == TINY_WIDTH
    for clip in ("v/b.mp4", "v/t.mp4"):
        expected = [float(written[clip][f"p_{n}"]) for n in ("calm", "neutral", "active")]
        np.testing.assert_allclose(predictor.predict(run / clip).clip, expected, atol=5e-4)
