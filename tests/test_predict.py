"""`avemo predict` on real mp4 files with a real (tiny) extraction, fine-tuning and training."""

import csv
import io
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from avemo import runfolder
from avemo.cli import main
from avemo.datasets.manifest import read_manifest, write_manifest
from avemo.extract.alexnet import TINY_WIDTH
from avemo.extract.finetune import FinetuneSettings
from avemo.extract.pipeline import ExtractSettings, extract
from avemo.predict import Predictor
from avemo.train.trainer import TrainSettings, train

from helpers import make_clip

CLIPS = [  # name, seconds, arousal, split, valence
    ("a", 2.2, -1, "train", 1), ("b", 3.1, 1, "train", -1), ("c", 2.0, 0, "train", 0), ("d", 2.4, -1, "train", -1),
    ("t", 2.3, 1, "test", 0),
]  # fmt: skip
AROUSAL = ("calm", "neutral", "active")
QUICK = TrainSettings(epochs=2, batch_size=2)


def build_run(root):
    """Extract (fine-tuning fc, 1 epoch), then train visual, audio, late and modal for 2 epochs, on five tiny clips,
    with the tiny AlexNet-shaped network: the plumbing is the same (full-size AlexNets: test_cli.py). Also writes
    new videos: new.mp4 (3 whole seconds), mute.mp4 (no audio), corrupt.mp4, short.mp4 (half a second)."""
    (root / "v").mkdir()
    for i, (name, seconds, *_) in enumerate(CLIPS):
        make_clip(root / f"v/{name}.mp4", seconds=seconds, seed=i, audio_hz=300 + 200 * i)
    rows = [{"path": f"v/{n}.mp4", "arousal": a, "valence": v, "split": s} for n, _, a, s, v in CLIPS]
    write_manifest(root / "clips.csv", rows)
    settings = ExtractSettings(
        weights="tiny", workers=1, clips_per_shard=4, batch_size=8, finetune=FinetuneSettings(mode="fc", epochs=1)
    )
    extract(read_manifest(root / "clips.csv"), root / "cache", settings)
    train(root / "cache", root / "run", ["visual", "audio", "late", "modal"], QUICK)
    make_clip(root / "new.mp4", seconds=3.6, seed=42, audio_hz=900)  # not in the cache: 3 whole seconds
    make_clip(root / "mute.mp4", seconds=2.0, seed=43, audio_hz=None)
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    make_clip(root / "short.mp4", seconds=0.5, seed=44)
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("predict"))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def written(path):
    """clip id → the probabilities a predictions.csv holds for it."""
    return {r["clip_id"]: [float(r[f"p_{n}"]) for n in AROUSAL] for r in csv.DictReader(open(path))}


def test_a_cached_clip_gets_the_probabilities_train_wrote(run):
    """Decoding, codec round trip, AlexNets and head reproduce predictions.csv for a clip of the cache."""
    expected = written(run / "run" / "modal" / "predictions.csv")
    predictor = Predictor(run / "run", "modal", batch_size=8)
    for clip in ("v/b.mp4", "v/t.mp4"):
        got = predictor.predict(run / clip)
        np.testing.assert_allclose(got.clip["arousal"], expected[clip], atol=5e-4)
        assert got.n_seconds == {"v/b.mp4": 3, "v/t.mp4": 2}[clip] == len(got.per_second["arousal"])
        assert list(got.start) == list(range(got.n_seconds)) and list(got.end) == list(range(1, got.n_seconds + 1))


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
    assert document["approach"] == "modal" and document["targets"] == {"arousal": list(AROUSAL)}
    assert document["run"] == str(run / "run")
    new, mute = document["videos"]
    assert new["path"].endswith("new.mp4") and new["seconds"] == 3 and len(new["per_second"]) == 3
    assert mute["has_audio"] is False and mute["seconds"] == 2
    for video in (new, mute):
        for t, step in enumerate(video["per_second"]):
            assert (step["second"], step["start"], step["end"]) == (t, t, t + 1)
        assert (video["clip"]["start"], video["clip"]["end"]) == (0, video["seconds"])
        for step in [*video["per_second"], video["clip"]]:
            arousal = step["arousal"]
            assert abs(sum(arousal["probabilities"].values()) - 1) < 1e-4
            assert arousal["class"] == max(arousal["probabilities"], key=arousal["probabilities"].get)
            assert arousal["label"] == AROUSAL.index(arousal["class"]) - 1
        assert video["clip"]["arousal"] == video["per_second"][-1]["arousal"]
    assert {f["path"].split("/")[-1] for f in document["failed"]} == {"corrupt.mp4", "short.mp4", "missing.mp4"}


def test_csv_and_late_fusion_of_the_two_mlp_classifiers(run):
    for approach in ("visual", "audio", "late"):
        result = invoke("predict", "--run", run / "run", "--approach", approach, "--format", "csv", run / "new.mp4")
        assert result.exit_code == 0, result.output
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        assert list(rows[0]) == ["path", "second", "start", "end", "arousal", "arousal_class", "p_calm", "p_neutral", "p_active"]
        assert [(r["second"], r["start"], r["end"]) for r in rows] == [
            ("0", "0.0", "1.0"), ("1", "1.0", "2.0"), ("2", "2.0", "3.0"), ("clip", "0.0", "3.0")
        ]  # fmt: skip
    # late fusion reads its own MLP classifiers (RUN/late/visual, RUN/late/audio) and reproduces predictions.csv
    result = invoke("predict", "--run", run / "run", "--approach", "late", "--format", "csv", run / "v/b.mp4")
    clip = [r for r in csv.DictReader(io.StringIO(result.stdout)) if r["second"] == "clip"][0]
    expected = written(run / "run" / "late" / "predictions.csv")["v/b.mp4"]
    np.testing.assert_allclose([float(clip[f"p_{n}"]) for n in AROUSAL], expected, atol=5e-4)


def test_folders_and_list_files_as_input_with_a_timeline_per_video(run, tmp_path):
    """A folder (recursively) and a list file name the videos; --plot writes one PNG per video, unique names."""
    (tmp_path / "in" / "sub").mkdir(parents=True)
    shutil.copy(run / "new.mp4", tmp_path / "in" / "new.mp4")
    shutil.copy(run / "mute.mp4", tmp_path / "in" / "sub" / "new.mp4")  # the same file name twice
    (tmp_path / "videos.txt").write_text(f"# one per line\n{run / 'v/t.mp4'}\n")
    out = tmp_path / "plots"
    result = invoke("predict", "--run", run / "run", "--plot", out, tmp_path / "in", tmp_path / "videos.txt")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [v["path"] for v in document["videos"]] == [
        str(tmp_path / "in" / "new.mp4"), str(tmp_path / "in" / "sub" / "new.mp4"), str(run / "v/t.mp4")
    ]  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["new-2.png", "new.png", "t.png"]
    assert [v["plot"] for v in document["videos"]] == [str(out / n) for n in ("new.png", "new-2.png", "t.png")]
    assert all((out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in ("new.png", "new-2.png", "t.png"))
    result = invoke("predict", "--run", run / "run", tmp_path / "empty.list")
    assert result.exit_code == 1 and "empty.list: list file not found" in result.output


def test_a_missing_head_names_the_command_that_trains_it(run):
    result = invoke("predict", "--run", run / "run", "--approach", "modal-lstm64", run / "new.mp4")
    assert result.exit_code == 1 and "avemo train" in result.output and "modal-lstm64" in result.output
    result = invoke("predict", "--run", run / "run", "--approach", "joint", run / "new.mp4")
    assert result.exit_code == 1 and "--joint" in result.output, result.output
    result = invoke("predict", "--run", run / "nowhere", run / "new.mp4")
    assert result.exit_code == 1 and "run.json: not found" in result.output
    result = invoke("predict", run / "new.mp4")
    assert result.exit_code == 1 and "--run RUN" in result.output and "--model MODEL" in result.output


def test_a_multi_seed_run_predicts_the_seed_asked_for(run, tmp_path):
    train(run / "cache", tmp_path / "run", ["modal"], QUICK, seeds=[0, 1])
    result = invoke("predict", "--run", tmp_path / "run", run / "v/b.mp4")
    assert result.exit_code == 1 and "--seed" in result.output
    for seed in (0, 1):
        result = invoke("predict", "--run", tmp_path / "run", "--seed", seed, "--format", "csv", run / "v/b.mp4")
        assert result.exit_code == 0, result.output
        clip = [r for r in csv.DictReader(io.StringIO(result.stdout)) if r["second"] == "clip"][0]
        expected = written(tmp_path / "run" / "modal" / f"seed-{seed}" / "predictions.csv")["v/b.mp4"]
        np.testing.assert_allclose([float(clip[f"p_{n}"]) for n in AROUSAL], expected, atol=5e-4)
    result = invoke("predict", "--run", tmp_path / "run", "--seed", 7, run / "v/b.mp4")
    assert result.exit_code == 1 and "seed" in result.output


def test_a_run_moved_with_its_cache_works_and_cache_names_a_moved_cache(run, tmp_path):
    """run.json holds the cache relative to the run: both moved together keep working; a cache moved alone is
    named with --cache (its identity still checked)."""
    shutil.copytree(run / "cache", tmp_path / "a" / "cache")
    shutil.copytree(run / "run", tmp_path / "a" / "run")
    info = runfolder.read_info(tmp_path / "a" / "run")
    runfolder.write_info(tmp_path / "a" / "run", {**info, "cache": str(tmp_path / "a" / "cache")})  # as if trained there
    assert json.loads((tmp_path / "a" / "run" / "run.json").read_text())["cache"] == "../cache"
    shutil.move(tmp_path / "a", tmp_path / "b")
    assert runfolder.cache_of(tmp_path / "b" / "run") == (tmp_path / "b" / "cache").resolve()
    expected = written(run / "run" / "modal" / "predictions.csv")["v/b.mp4"]
    np.testing.assert_allclose(Predictor(tmp_path / "b" / "run").predict(run / "v/b.mp4").clip["arousal"], expected, atol=5e-4)
    shutil.move(tmp_path / "b" / "cache", tmp_path / "elsewhere")
    result = invoke("predict", "--run", tmp_path / "b" / "run", run / "v/b.mp4")
    assert result.exit_code == 1 and "--cache" in result.output and "avemo export" in result.output
    result = invoke("predict", "--run", tmp_path / "b" / "run", "--cache", tmp_path / "elsewhere", run / "v/b.mp4")
    assert result.exit_code == 0, result.output
    # another cache (the same clips extracted with other settings) is refused by its identity
    other = ExtractSettings(weights="tiny", seed=3, workers=1, clips_per_shard=4, finetune=FinetuneSettings(mode="none"))
    shutil.copytree(run / "cache" / "media", tmp_path / "other" / "media")
    extract(read_manifest(run / "clips.csv"), tmp_path / "other", other)
    result = invoke("predict", "--run", tmp_path / "b" / "run", "--cache", tmp_path / "other", run / "v/b.mp4")
    assert result.exit_code == 1 and "trained on features" in result.output


def test_a_run_copied_alone_finds_its_cache_where_it_was_trained(run, tmp_path):
    shutil.copytree(run / "run", tmp_path / "deep" / "run")  # ../cache from here does not exist
    info = json.loads((tmp_path / "deep" / "run" / "run.json").read_text())
    assert info["cache_absolute"] == str((run / "cache").resolve())
    assert runfolder.cache_of(tmp_path / "deep" / "run") == (run / "cache").resolve()


def test_an_older_run_json_with_an_absolute_cache_path_still_works(run, tmp_path):
    shutil.copytree(run / "run", tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    del info["cache_absolute"]
    (tmp_path / "run" / "run.json").write_text(json.dumps({**info, "cache": str((run / "cache").resolve())}))
    assert runfolder.cache_of(tmp_path / "run") == (run / "cache").resolve()
    assert Predictor(tmp_path / "run").predict(run / "new.mp4").n_seconds == 3


def test_a_tiny_backbone_run_predicts_its_cached_clips_as_train_did(run, tmp_path):
    """The Embedder of a `--weights tiny --finetune none` cache rebuilds its AlexNets from the seed: predict
    embeds a cached clip as extract did (fc7 of the tiny width) and reproduces predictions.csv."""
    shutil.copytree(run / "cache" / "media", tmp_path / "cache" / "media")  # the same clips decoded: only fc7 is new
    settings = ExtractSettings(weights="tiny", seed=5, workers=1, clips_per_shard=4, finetune=FinetuneSettings(mode="none"))
    extract(read_manifest(run / "clips.csv"), tmp_path / "cache", settings)
    train(tmp_path / "cache", tmp_path / "run", ["modal"], QUICK)
    expected = written(tmp_path / "run" / "modal" / "predictions.csv")
    predictor = Predictor(tmp_path / "run", "modal", batch_size=8)
    assert predictor.embedder.width("visual") == predictor.embedder.width("audio") == TINY_WIDTH
    for clip in ("v/b.mp4", "v/t.mp4"):
        np.testing.assert_allclose(predictor.predict(run / clip).clip["arousal"], expected[clip], atol=5e-4)
