"""The model folder (`avemo export`, avemo.modelfolder): a real tiny run exported, its cache and run deleted, then
`avemo predict --model` and `avemo.load_model` on new videos give the run's predictions: exactly, though the
AlexNets are stored in fp16 (every AlexNet avemo computes with holds fp16 values)."""

import csv
import io
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_predict import AROUSAL, QUICK, build_run, written

import avemo
from avemo import api, modelfolder
from avemo.cli import main
from avemo.errors import AvemoError
from avemo.train.joint import JointSettings, joint_train
from avemo.train.trainer import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """test_predict's tiny run (visual, audio, late, modal), evaluated, with a valence modal head beside it."""
    root = build_run(tmp_path_factory.mktemp("modelfolder"))
    api.evaluate(root / "run", resamples=100, plots=False, quiet=True)
    return root


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def moved(run, tmp_path):
    """A copy of the run and its cache, to delete once exported."""
    shutil.copytree(run / "cache", tmp_path / "copy" / "cache")
    shutil.copytree(run / "run", tmp_path / "copy" / "run")
    return tmp_path / "copy" / "run"


def clip_probabilities(document):
    return {v["path"]: [v["clip"]["arousal"]["probabilities"][n] for n in AROUSAL] for v in document["videos"]}


def per_second(document):
    return {v["path"]: [[s["arousal"]["probabilities"][n] for n in AROUSAL] for s in v["per_second"]] for v in document["videos"]}


# fp16 AlexNets are the run's weights: the run's computation exactly (the same operations, so to float rounding);
# predictions.csv holds 6 decimals, and the run's cache went through the image codec as the new videos do
SAME_RUN, SAME_CSV = 1e-6, 5e-4  # against `predict --run`, against predictions.csv


def by_the_run(run, approach, *videos):
    """Per-second arousal probabilities of `avemo predict --run RUN --approach APPROACH`, per video."""
    result = invoke("predict", "--run", run, "--approach", approach, *videos)
    assert result.exit_code == 0, result.output
    return per_second(json.loads(result.stdout))


def test_a_model_folder_predicts_as_the_run_without_the_run_or_its_cache(run, tmp_path):
    """The round trip of the issue: export, delete the cache and the run, predict a folder of videos with
    --model: per-second probabilities equal `predict --run` and the clips' equal predictions.csv, with timeline
    PNGs; load_model gives the same."""
    copy = moved(run, tmp_path)
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("new.mp4", "mute.mp4", "v/b.mp4", "v/t.mp4"):
        shutil.copy(run / name, videos / name.replace("/", "-"))
    by_run = invoke("predict", "--run", copy, videos)
    assert by_run.exit_code == 0, by_run.output
    result = invoke("export", "--run", copy, "--out", tmp_path / "model")
    assert result.exit_code == 0 and "MB)" in result.output, result.output
    shutil.rmtree(tmp_path / "copy")  # the run and the cache are gone
    result = invoke("predict", "--model", tmp_path / "model", videos, "--plot", tmp_path / "plots")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["model"] == str(tmp_path / "model") and document["approach"] == "modal"
    ours, theirs = per_second(document), per_second(json.loads(by_run.stdout))
    assert list(ours) == list(theirs) and len(ours) == 4
    for path in ours:
        np.testing.assert_allclose(ours[path], theirs[path], atol=SAME_RUN)
    expected = written(run / "run" / "modal" / "predictions.csv")
    clips = clip_probabilities(document)
    for clip in ("v/b.mp4", "v/t.mp4"):
        np.testing.assert_allclose(clips[str(videos / clip.replace("/", "-"))], expected[clip], atol=SAME_CSV)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["mute.png", "new.png", "v-b.png", "v-t.png"]
    model = avemo.load_model(tmp_path / "model")
    got = model.predict(videos / "v-b.mp4")
    np.testing.assert_allclose(got.clip["arousal"], expected["v/b.mp4"], atol=SAME_CSV)
    assert got.n_seconds == 3 and list(got.end) == [1, 2, 3]


def test_the_folder_holds_what_predict_needs_and_nothing_else(run, tmp_path):
    out = api.export(run / "run", tmp_path / "model")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "arousal.pt", "audio.pt", "model.json", "visual.pt"]
    document = json.loads((out / "model.json").read_text())
    assert (document["format"], document["version"], document["avemo"]) == ("avemo-model", 1, avemo.__version__)
    assert document["targets"]["arousal"]["classes"] == list(AROUSAL)
    assert list(document["targets"]["arousal"]["heads"]) == ["arousal.pt"]
    embedder = document["embedder"]
    assert (embedder["mode"], embedder["spectrogram_input"], embedder["feature_width"]) == ("fc", "resize", 64)
    assert document["decode"]["image_codec"] == "jpeg" and document["decode"]["spectrogram"]["window_s"] == 0.04
    info = json.loads((run / "run" / "run.json").read_text())
    assert document["source"]["cache_sha256"] == info["cache_sha256"] and document["source"]["seed"] == 0
    for modality in ("visual", "audio"):
        state = torch.load(out / f"{modality}.pt", weights_only=True)
        assert all(v.dtype == torch.float16 for v in state.values())
        assert "classifier.6.weight" not in state and "classifier.4.weight" in state  # fc7, no fc8
        assert embedder["alexnets"][modality] == {"file": f"{modality}.pt", "sha256": modelfolder.state_sha256(state)}
    head = torch.load(out / "arousal.pt", weights_only=True)
    assert set(head) <= set(modelfolder.HEAD_KEYS) and "optimizer" not in head and "norm" in head
    card = (out / "README.md").read_text()
    assert "## Test metrics" in card and "Majority class" in card and "always '" in card and avemo.__version__ in card
    # a run never evaluated says so (copied alone: its cache named where it is)
    shutil.copytree(run / "run", tmp_path / "fresh")
    (tmp_path / "fresh" / "results.json").unlink()
    card = api.export(tmp_path / "fresh", tmp_path / "m2", cache=run / "cache") / "README.md"  # --cache: moved
    assert "Not evaluated" in card.read_text()


def test_late_fusion_exports_its_two_classifiers(run, tmp_path):
    out = api.export(run / "run", tmp_path / "late", approach="late")
    assert sorted(json.loads((out / "model.json").read_text())["targets"]["arousal"]["heads"]) == [
        "arousal-audio.pt",
        "arousal-visual.pt",
    ]
    result = invoke("predict", "--model", out, "--format", "csv", run / "v/b.mp4")
    clip = [r for r in csv.DictReader(io.StringIO(result.stdout)) if r["second"] == "clip"][0]
    expected = written(run / "run" / "late" / "predictions.csv")["v/b.mp4"]
    np.testing.assert_allclose([float(clip[f"p_{n}"]) for n in AROUSAL], expected, atol=SAME_CSV)
    ours = avemo.load_model(out).predict(run / "v/b.mp4").per_second["arousal"]
    theirs = list(by_the_run(run / "run", "late", run / "v/b.mp4").values())[0]
    np.testing.assert_allclose(ours, theirs, atol=SAME_RUN)


def test_the_joint_approach_exports_the_joint_alexnets(run, tmp_path):
    copy = moved(run, tmp_path)
    joint_train(copy.parent / "cache", copy, JointSettings(epochs=1, batch_size=4, lr=0.01, backbone_lr=1e-3, select="last"))
    out = api.export(copy, tmp_path / "joint", approach="joint")
    tuned = torch.load(copy / "joint" / "visual.pt", weights_only=True)  # fp16 values, saved as fp16
    stored = torch.load(out / "visual.pt", weights_only=True)
    assert tuned["classifier.4.weight"].dtype == torch.float16
    torch.testing.assert_close(stored["classifier.4.weight"], tuned["classifier.4.weight"], atol=0, rtol=0)
    expected = written(copy / "joint" / "predictions.csv")["v/b.mp4"]
    got = avemo.load_model(out).predict(run / "v/b.mp4")
    np.testing.assert_allclose(got.clip["arousal"], expected, atol=SAME_CSV)
    theirs = list(by_the_run(copy, "joint", run / "v/b.mp4").values())[0]
    np.testing.assert_allclose(got.per_second["arousal"], theirs, atol=SAME_RUN)


def _damage_head(model):
    (model / "arousal.pt").write_bytes((model / "arousal.pt").read_bytes() + b"\x00")


def _damage_alexnet(model):
    state = torch.load(model / "audio.pt", weights_only=True)
    state["classifier.4.bias"][0] += 1
    torch.save(state, model / "audio.pt")


def _in_fp32(model):
    state = torch.load(model / "visual.pt", weights_only=True)
    torch.save({k: v.float() for k, v in state.items()}, model / "visual.pt")


def _edit(change):
    def damage(model):
        document = json.loads((model / "model.json").read_text())
        change(document)
        (model / "model.json").write_text(json.dumps(document))

    return damage


DAMAGES = {
    "head changed": (_damage_head, "arousal.pt: its sha256 differs"),
    "alexnet changed": (_damage_alexnet, "audio.pt: its tensors' sha256 differs"),
    "file missing": (lambda m: (m / "visual.pt").unlink(), "visual.pt: missing from the model folder"),
    "newer format": (_edit(lambda d: d.update(version=2)), "version 2, this avemo reads version 1; upgrade avemo"),
    "not ours": (_edit(lambda d: d.update(format="other")), "not an avemo model folder"),
    "decode incomplete": (_edit(lambda d: d["decode"].pop("hist_bins")), "decode settings incomplete (no hist_bins)"),
    "outside": (_edit(lambda d: d["embedder"]["alexnets"]["visual"].update(file="../visual.pt")), "outside the folder"),
    "mode": (_edit(lambda d: d["embedder"].update(mode="fast")), "mode 'fast' is not one of fc, all, none"),
    "width": (_edit(lambda d: d["embedder"].update(feature_width=4096)), "fc7 is 64 wide, model.json says 4096"),
    "fp32 tensors": (_in_fp32, "visual.pt: not fp16 tensors"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_model_folder_is_one_line_naming_the_fix(run, tmp_path, damage):
    model = api.export(run / "run", tmp_path / "model")
    change, message = DAMAGES[damage]
    change(model)
    result = invoke("predict", "--model", model, run / "new.mp4")
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_export_and_model_options_are_checked(run, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(AvemoError, match="not an empty folder"):
        api.export(run / "run", tmp_path / "full")
    model = api.export(run / "run", tmp_path / "model")
    for option, message in ((("--seed", 1), "--seed and --cache are for a run"), (("--approach", "late"), "holds the modal")):
        result = invoke("predict", "--model", model, *option, run / "new.mp4")
        assert result.exit_code == 1 and message in result.output, result.output
    result = invoke("predict", "--model", model, "--run", run / "run", run / "new.mp4")
    assert result.exit_code == 1 and "one of them" in result.output
    result = invoke("predict", "--model", tmp_path / "full", run / "new.mp4")
    assert result.exit_code == 1 and "model.json: not found; is" in result.output and "(a run folder: --run)" in result.output


def test_every_target_the_run_holds_is_predicted_and_exported(run, tmp_path):
    """A run with arousal and valence heads: predict gives both, per second and per clip; the model folder
    holds a head per target and predicts the same."""
    train(run / "cache", tmp_path / "run", ["modal"], QUICK, targets=["arousal", "valence"])
    result = invoke("predict", "--run", tmp_path / "run", "--format", "csv", run / "v/b.mp4")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0])[4:] == [
        "arousal", "arousal_class", "p_calm", "p_neutral", "p_active",
        "valence", "valence_class", "p_valence_negative", "p_valence_neutral", "p_valence_positive",
    ]  # fmt: skip
    clip = [r for r in rows if r["second"] == "clip"][0]
    expected = {r["clip_id"]: r for r in csv.DictReader(open(tmp_path / "run" / "valence" / "modal" / "predictions.csv"))}
    for name in ("negative", "neutral", "positive"):
        assert float(clip[f"p_valence_{name}"]) == pytest.approx(float(expected["v/b.mp4"][f"p_{name}"]), abs=5e-4)
    out = api.export(tmp_path / "run", tmp_path / "model")
    document = json.loads((out / "model.json").read_text())
    assert {t: list(v["heads"]) for t, v in document["targets"].items()} == {
        "arousal": ["arousal.pt"],
        "valence": ["valence.pt"],
    }
    got = avemo.load_model(out).predict(run / "v/b.mp4")
    assert set(got.per_second) == {"arousal", "valence"}
    p = [float(clip[f"p_valence_{n}"]) for n in ("negative", "neutral", "positive")]
    np.testing.assert_allclose(got.clip["valence"], p, atol=1e-5)
