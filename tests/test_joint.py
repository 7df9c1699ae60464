"""The joint end-to-end pass on a real (tiny) cache: real mp4, real extraction with fine-tuning, a real head.
The AlexNets are `--weights tiny` ones (AlexNet's layers, few channels, 64-d fc7): the pass's plumbing is the
same as with full-size ones, at a fraction of the time (the demo runs it on full-size AlexNets)."""

import csv
import hashlib
import json
import shutil
import signal
import subprocess
import sys
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch

from avemo.cache import ShardStore, models
from avemo.datasets.manifest import read_manifest, write_manifest
from avemo.errors import AvemoError
from avemo.extract.alexnet import Fc7, build_alexnet, fc7_features, weights_sha256
from avemo.extract.finetune import FinetuneSettings
from avemo.extract.pipeline import ExtractSettings, extract
from avemo.train.data import load_features
from avemo.train.heads import HeadSettings
from avemo.train.joint import JointSettings, joint_train
from avemo.train.trainer import TrainSettings, train

from helpers import make_clip

CLIPS = [  # name, seconds, arousal, split
    ("a", 2.2, -1, "train"),
    ("b", 2.3, 1, "train"),
    ("c", 1.4, 0, "train"),
    ("d", 2.1, -1, "train"),
    ("e", 1.3, 1, "train"),
    ("f", 2.2, 0, "train"),
    ("mute", 1.3, 1, "train"),
    ("t1", 2.1, 1, "test"),
    ("t2", 1.2, -1, "test"),
]
HEAD = TrainSettings(head=HeadSettings(hidden=16, lstm_hidden=8, mlp_hidden=8), epochs=3, batch_size=4, lr=0.05, patience=0)
# z-scoring divides fc7 by its tiny std (random-init AlexNets): the backbones' gradients are large, keep their rate small
# select last: the tests below check what training changes (on one validation clip the start often wins)
FAST = JointSettings(epochs=2, batch_size=4, lr=0.01, backbone_lr=1e-4, select="last")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A cache extracted with fine-tuning mode fc (pool5, models, features) and a modal head trained on it."""
    root = tmp_path_factory.mktemp("joint")
    (root / "v").mkdir()
    rows = []
    for i, (name, seconds, arousal, split) in enumerate(CLIPS):
        make_clip(root / f"v/{name}.mp4", seconds=seconds, seed=i, audio_hz=None if name == "mute" else 300 + 250 * i)
        rows.append({"path": f"v/{name}.mp4", "arousal": arousal, "valence": "", "split": split})
    write_manifest(root / "clips.csv", rows)
    tune = FinetuneSettings(epochs=1, batch_size=8)
    extract(
        read_manifest(root / "clips.csv"),
        root / "cache",
        ExtractSettings(weights="tiny", clips_per_shard=4, workers=1, finetune=tune),
    )
    train(root / "cache", root / "run", ["modal"], HEAD)
    return root


@pytest.fixture(scope="module")
def joint(made):
    """One fc-mode pass with export, shared by the tests that read its outputs."""
    joint_train(made / "cache", made / "run", FAST, export=made / "out")
    return made


def probabilities(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["clip_id"] for r in rows], np.array([[float(r[f"p_{n}"]) for n in ("calm", "neutral", "active")] for r in rows])


def test_the_pass_writes_a_run_folder_like_a_heads(joint):
    out = joint / "run" / "joint"
    assert {p.name for p in out.iterdir()} == {"settings.json", "log.csv", "model.pt", "visual.pt", "audio.pt", "predictions.csv"}
    log = list(csv.DictReader(open(out / "log.csv")))
    assert [r["epoch"] for r in log] == ["1", "2"] and all(float(r["train_loss"]) > 0 for r in log)
    validation = torch.load(joint / "run" / "modal" / "model.pt", weights_only=True)["validation"]
    assert validation and all(r["validation_accuracy"] != "" for r in log)  # the head's validation clips
    settings = json.loads((out / "settings.json").read_text())
    assert settings["layers"] == "fc" and settings["source"]["train_clips"] == 7 - len(validation)
    saved = torch.load(out / "model.pt", weights_only=True)
    assert {"model", "norm", "settings", "validation"} <= set(saved) and saved["validation"] == sorted(validation)
    # the tuned AlexNets: rounded to fp16 values, saved in fp16 (exactly), each recorded hash that of its file
    for modality in ("visual", "audio"):
        assert {v.dtype for v in torch.load(out / f"{modality}.pt", weights_only=True).values()} == {torch.float16}
        assert saved["alexnets"][modality]["sha256"] == weights_sha256(build_alexnet(str(out / f"{modality}.pt")))
    # predictions.csv: the trainer's format, every clip
    head_rows = open(joint / "run" / "modal" / "predictions.csv").read().splitlines()
    rows = open(out / "predictions.csv").read().splitlines()
    assert rows[0] == head_rows[0] and len(rows) == len(CLIPS) + 1
    assert [r.split(",")[:3] for r in rows] == [r.split(",")[:3] for r in head_rows]
    _, p = probabilities(out / "predictions.csv")
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    # run.json lists it (from the start of the pass: evaluate names it missing when the pass did not finish)
    assert "joint/predictions.csv" in json.loads((joint / "run" / "run.json").read_text())["predictions"]


def test_fc_mode_tunes_fc6_fc7_and_the_head_never_the_convolutions(joint):
    out = joint / "run" / "joint"
    for modality in ("visual", "audio"):
        before = build_alexnet(str(joint / "cache" / "models" / f"{modality}.pt"))
        after = build_alexnet(str(out / f"{modality}.pt"))
        for i in (0, 3, 6, 8, 10):  # the five convolutions
            assert torch.equal(after.features[i].weight, before.features[i].weight)
        for i in (1, 4):  # fc6, fc7
            assert not torch.equal(after.classifier[i].weight, before.classifier[i].weight)
        assert torch.equal(after.classifier[6].weight, before.classifier[6].weight)  # fc8 is not used
    head_before = torch.load(joint / "run" / "modal" / "model.pt", weights_only=True)["model"]
    head_after = torch.load(out / "model.pt", weights_only=True)["model"]
    assert any(not torch.equal(head_before[k], head_after[k]) for k in head_before)


def test_export_is_a_feature_cache_of_the_tuned_backbones(joint):
    out = joint / "out"
    data = load_features(out)
    source = ShardStore(joint / "cache" / "features", "features")
    assert list(data.clip_ids) == list(source.read_index()["clip_id"])
    assert data.lengths.tolist() == source.read_index()["n_seconds"].tolist()
    settings = ShardStore(out / "features", "features").settings
    tuned = {m: build_alexnet(str(joint / "run" / "joint" / f"{m}.pt")) for m in ("visual", "audio")}
    assert settings["tuned_sha256"] == {m: weights_sha256(a) for m, a in tuned.items()}
    assert settings["joint"]["settings"]["backbone_lr"] == FAST.backbone_lr
    assert settings["weights"] == source.settings["weights"]  # the rest of the provenance is the cache's
    media = ShardStore(joint / "cache" / "media", "media")
    for modality, images in (("visual", "key_frames"), ("audio", "spectrograms")):
        exported = ShardStore(out / "features", "features").read_seconds(modality)
        assert exported.dtype == np.float16
        direct = fc7_features(Fc7(tuned[modality]), media.read_seconds(images))
        np.testing.assert_allclose(exported.astype(np.float32), direct.astype(np.float32), rtol=2e-2, atol=2e-4)
        assert not np.array_equal(exported, source.read_seconds(modality))  # new features, not a copy
        assert weights_sha256(build_alexnet(str(out / "models" / f"{modality}.pt"))) == settings["tuned_sha256"][modality]
    assert (out / "media").resolve() == (joint / "cache" / "media").resolve()
    for modality in ("visual", "audio"):  # the models manifest, read through its owner, vouches for them
        assert models.entry(out / "models", modality, settings)["sha256"] == settings["tuned_sha256"][modality]
        assert models.load(out / "models", modality, settings["tuned_sha256"][modality]) is not None
    # `avemo train --cache OUT` works on it
    train(out, joint / "run-on-export", ["modal"], TrainSettings(head=HEAD.head, epochs=1, batch_size=4, validation=0))
    assert (joint / "run-on-export" / "modal" / "predictions.csv").is_file()


def test_no_epochs_reproduce_the_heads_predictions(made, tmp_path):
    """The pass's pipeline (cached pool5 → fc6/fc7 → fixed z-score → head) is the one the head learned on."""
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    shutil.rmtree(run / "joint", ignore_errors=True)
    joint_train(made / "cache", run, JointSettings(epochs=0))
    ids, p = probabilities(run / "joint" / "predictions.csv")
    head_ids, head_p = probabilities(run / "modal" / "predictions.csv")
    assert ids == head_ids
    np.testing.assert_allclose(p, head_p, atol=3e-3)


def test_backbone_rate_zero_leaves_the_alexnets_bit_for_bit(made, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(made / "run" / "modal", run / "modal")
    joint_train(made / "cache", run, JointSettings(epochs=1, batch_size=4, lr=0.01, backbone_lr=0, select="last"))
    for modality in ("visual", "audio"):
        before = build_alexnet(str(made / "cache" / "models" / f"{modality}.pt"))
        assert weights_sha256(build_alexnet(str(run / "joint" / f"{modality}.pt"))) == weights_sha256(before)
    head_before = torch.load(run / "modal" / "model.pt", weights_only=True)["model"]
    head_after = torch.load(run / "joint" / "model.pt", weights_only=True)["model"]
    assert any(not torch.equal(head_before[k], head_after[k]) for k in head_before)


def test_test_clips_never_influence_the_tuned_weights(joint, tmp_path):
    """Other test labels and other test inputs (pool5) in an otherwise identical cache: the same weights."""
    cache = tmp_path / "cache"
    shutil.copytree(joint / "cache", cache, ignore=shutil.ignore_patterns("models"))
    (cache / "models").symlink_to(joint / "cache" / "models")  # 450 MB we do not change
    for kind in ("pool5", "features", "media"):
        for path in (cache / kind).glob("*.h5"):
            with h5py.File(path, "r+") as f:
                test = np.array([s == b"test" for s in f["index/split"][()]])
                arousal = f["index/arousal"][()]
                f["index/arousal"][...] = np.where(test, (arousal + 2) % 3 - 1, arousal)  # every test label changed
                if kind == "pool5":
                    for modality in ("visual", "audio"):
                        values = f[modality][()]
                        for o, n in zip(f["index/offset"][test], f["index/n_seconds"][test]):
                            values[o : o + n] = values[o : o + n] * 2 + 1
                        f[modality][...] = values
        manifest = json.loads((cache / kind / "manifest.json").read_text())  # a consistent cache: new sha256s
        for entry in manifest["shards"]:
            entry["sha256"] = hashlib.sha256((cache / kind / entry["file"]).read_bytes()).hexdigest()
        (cache / kind / "manifest.json").write_text(json.dumps(manifest))
    run = tmp_path / "run"
    shutil.copytree(joint / "run" / "modal", run / "modal")
    joint_train(cache, run, FAST)
    for name in ("visual.pt", "audio.pt", "model.pt"):
        a = torch.load(run / "joint" / name, weights_only=True)
        b = torch.load(joint / "run" / "joint" / name, weights_only=True)
        a, b = a.get("model", a), b.get("model", b)
        assert all(torch.equal(a[k], b[k]) for k in b), name
    ids, p = probabilities(run / "joint" / "predictions.csv")
    _, reference = probabilities(joint / "run" / "joint" / "predictions.csv")
    test = np.array([i.startswith("v/t") for i in ids])
    np.testing.assert_array_equal(p[~test], reference[~test])
    assert not np.allclose(p[test], reference[test])  # the test inputs did change


KILLED = """import os, signal, sys, traceback
from avemo.train import engine
from avemo.train.joint import JointSettings, joint_train
save_last = engine._save_last


def killed_after(epoch, run):  # SIGKILL right after the checkpoint of epoch `epoch`
    saved = []

    def save_then_die(*args):
        save_last(*args)
        saved.append(1)
        if len(saved) == epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    engine._save_last = save_then_die
    joint_train({cache!r}, run, {settings!r})


for epoch, run in enumerate(sys.argv[1:], 1):  # one child per run, forked before torch ran anything here
    child = os.fork()
    if child == 0:
        try:
            killed_after(epoch, run)
        except BaseException:
            traceback.print_exc()
        os._exit(1)  # not killed
    print("exit code", epoch, os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]), flush=True)
"""


@pytest.fixture(scope="module")
def killed(joint, tmp_path_factory):
    """epoch → (a run whose pass was SIGKILLed after that epoch's checkpoint, the killed process's exit code, the
    stderr of them all). Epoch 1 is in the middle, epoch 2 the last one (killed while predicting). One interpreter
    imports torch once and forks a process per run, each killed for real."""
    root = tmp_path_factory.mktemp("killed")
    runs = {epoch: root / f"run{epoch}" for epoch in (1, 2)}
    for run in runs.values():
        shutil.copytree(joint / "run" / "modal", run / "modal")
    script = root / "joint.py"
    script.write_text(KILLED.format(cache=str(joint / "cache"), settings=FAST))  # the fixture's pass, uninterrupted there
    done = subprocess.run([sys.executable, str(script), *map(str, runs.values())], capture_output=True, text=True, timeout=600)
    codes = dict(map(int, line.split()[2:]) for line in done.stdout.splitlines() if line.startswith("exit code "))
    assert done.returncode == 0 and set(codes) == set(runs), done.stderr[-3000:]
    return {epoch: (run, codes[epoch], done.stderr[-3000:]) for epoch, run in runs.items()}


@pytest.mark.parametrize("epoch", [1, 2])  # killed after epoch 1, or after the last one (while predicting)
def test_a_killed_pass_resumes_and_ends_as_an_uninterrupted_one(joint, killed, capsys, epoch):
    run, code, stderr = killed[epoch]
    assert code == -signal.SIGKILL, stderr
    assert (run / "joint" / "last.pt").is_file() and not (run / "joint" / "predictions.csv").exists()
    capsys.readouterr()
    joint_train(joint / "cache", run, FAST)
    said = capsys.readouterr().out
    if epoch < FAST.epochs:
        assert f"joint: resuming after epoch {epoch}" in said
    else:  # the training was finished: nothing is trained again
        assert "resuming" not in said and "joint epoch" not in said
    assert not (run / "joint" / "last.pt").exists()
    for name in ("visual.pt", "audio.pt", "model.pt"):
        a = torch.load(run / "joint" / name, weights_only=True)
        b = torch.load(joint / "run" / "joint" / name, weights_only=True)
        a, b = a.get("model", a), b.get("model", b)
        assert all(torch.equal(a[k], b[k]) for k in b), name
    log = list(csv.DictReader(open(run / "joint" / "log.csv")))
    reference = list(csv.DictReader(open(joint / "run" / "joint" / "log.csv")))
    assert [r["train_loss"] for r in log] == [r["train_loss"] for r in reference]
    assert (run / "joint" / "predictions.csv").read_text() == (joint / "run" / "joint" / "predictions.csv").read_text()


def test_mode_all_tunes_the_convolutions_from_the_cached_images(made, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(made / "run" / "modal", run / "modal")
    joint_train(made / "cache", run, JointSettings(layers="all", epochs=1, batch_size=8, backbone_lr=1e-4, select="last"))
    before = build_alexnet(str(made / "cache" / "models" / "visual.pt"))
    after = build_alexnet(str(run / "joint" / "visual.pt"))
    assert not torch.equal(after.features[0].weight, before.features[0].weight)
    assert json.loads((run / "joint" / "settings.json").read_text())["layers"] == "all"


def test_two_ranks_under_torchrun_equal_one_process(made, tmp_path):
    """Each rank takes every other clip of each batch and the averaged gradients are the whole batch's (dropout
    off: the head's is 0 here, AlexNet's is always off in the pass): the same losses, weights and predictions as
    one process, up to rounding; a short last batch leaves rank 1 without clips, and it still takes part."""
    head = replace(HEAD, head=replace(HEAD.head, dropout=0))
    train(made / "cache", tmp_path / "one", ["modal"], head)
    shutil.copytree(tmp_path / "one" / "modal", tmp_path / "two" / "modal")
    validation = torch.load(tmp_path / "one" / "modal" / "model.pt", weights_only=True)["validation"]
    tuned = 7 - len(validation)  # train clips
    assert tuned >= 3
    settings = replace(FAST, batch_size=tuned - 1, device="cpu")  # batches of tuned - 1 and 1 clips
    script = tmp_path / "joint.py"
    call = f"joint_train(sys.argv[1], sys.argv[2], {settings!r})"
    script.write_text(f"import sys\nfrom avemo.train.joint import JointSettings, joint_train\n{call}\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    result = subprocess.run([*command, str(made / "cache"), str(tmp_path / "two")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rank 0/2] joint predict" in result.stdout and "[rank 1/2] joint predict" in result.stdout
    joint_train(made / "cache", tmp_path / "one", settings)
    one, two = tmp_path / "one" / "joint", tmp_path / "two" / "joint"
    ids, p = probabilities(two / "predictions.csv")
    assert len(ids) == len(CLIPS) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert ids == probabilities(one / "predictions.csv")[0]
    np.testing.assert_allclose(p, probabilities(one / "predictions.csv")[1], atol=1e-4)
    logs = [list(csv.DictReader(open(folder / "log.csv"))) for folder in (one, two)]
    assert [int(r["epoch"]) for r in logs[1]] == [1, 2]
    for a, b in zip(*logs):
        for column in ("train_loss", "validation_loss", "validation_accuracy"):
            assert float(a[column]) == pytest.approx(float(b[column]), abs=1e-4)
    for name in ("visual.pt", "audio.pt", "model.pt"):
        a, b = (torch.load(folder / name, weights_only=True) for folder in (one, two))
        a, b = a.get("model", a), b.get("model", b)
        for key, value in a.items():
            torch.testing.assert_close(b[key], value, rtol=1e-3, atol=1e-5, msg=f"{name} {key}")
    before = build_alexnet(str(made / "cache" / "models" / "audio.pt"))
    after = build_alexnet(str(two / "audio.pt"))
    assert not torch.equal(after.classifier[1].weight, before.classifier[1].weight)
    assert torch.equal(after.features[0].weight, before.features[0].weight)


def test_user_errors_are_one_clear_line(made, tmp_path):
    with pytest.raises(AvemoError, match="no trained head here; train it first"):
        joint_train(made / "cache", tmp_path / "nothing", approach="early")
    with pytest.raises(AvemoError, match="approach late: no single head to tune jointly"):
        joint_train(made / "cache", made / "run", approach="late")
    seeds = tmp_path / "seeds"
    for seed in (0, 1):
        (seeds / "modal" / f"seed-{seed}").mkdir(parents=True)
        shutil.copy(made / "run" / "modal" / "model.pt", seeds / "modal" / f"seed-{seed}" / "model.pt")
    with pytest.raises(AvemoError, match=r"trained with 2 seeds \(0, 1\); choose"):
        joint_train(made / "cache", seeds)
    with pytest.raises(AvemoError, match="no trained head for seed 5"):
        joint_train(made / "cache", seeds, seed=5)
    bare = tmp_path / "bare"
    shutil.copytree(made / "cache", bare, ignore=shutil.ignore_patterns("models"))
    with pytest.raises(AvemoError, match="the fine-tuned AlexNet is missing"):
        joint_train(bare, made / "run")
    with pytest.raises(AvemoError, match="must not be the cache itself"):
        joint_train(made / "cache", made / "run", export=made / "cache")
    shutil.copytree(made / "cache" / "features", tmp_path / "foreign" / "features")
    with pytest.raises(AvemoError, match="holds features of another cache or joint pass"):
        joint_train(made / "cache", made / "run", export=tmp_path / "foreign")
    with pytest.raises(AvemoError, match="must be one of fc, all"):
        JointSettings(layers="conv")


def test_predict_uses_the_jointly_tuned_alexnets(joint):
    """`avemo predict --approach joint` decodes a cached clip and gets the pass's own predictions for it."""
    from avemo.predict import Predictor

    ids, written = probabilities(joint / "run" / "joint" / "predictions.csv")
    predictor = Predictor(joint / "run", "joint", batch_size=8)
    for clip in ("v/b.mp4", "v/t1.mp4"):
        np.testing.assert_allclose(predictor.predict(joint / clip).clip["arousal"], written[ids.index(clip)], atol=5e-4)


def test_evaluate_reports_the_joint_row(joint):
    from avemo.evaluate.report import evaluate

    results = evaluate(joint / "run")
    assert {"modal", "joint"} <= set(results["approaches"])
    assert "| Joint pass (head and AlexNets tuned end to end) |" in (joint / "run" / "report.md").read_text()


def test_the_epoch_of_lowest_validation_loss_is_kept_and_the_start_is_a_candidate(made, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    joint_train(made / "cache", run, replace(FAST, epochs=3, select="loss"))
    log = list(csv.DictReader(open(run / "joint" / "log.csv")))
    assert [int(r["epoch"]) for r in log] == [0, 1, 2, 3] and log[0]["train_loss"] == ""
    best = min(log, key=lambda r: (float(r["validation_loss"]), int(r["epoch"])))
    saved = torch.load(run / "joint" / "model.pt", weights_only=True)
    assert saved["epoch"] == int(best["epoch"])
    assert not {p.name for p in (run / "joint").iterdir()} & {"best.pt", "last.pt"}
    if saved["epoch"] == 0:  # the start kept: the head and the AlexNets as they were
        start = torch.load(made / "run" / "modal" / "model.pt", weights_only=True)["model"]
        for name, value in start.items():
            torch.testing.assert_close(saved["model"][name], value, rtol=0, atol=0)
        assert weights_sha256(build_alexnet(str(run / "joint" / "visual.pt"))) == weights_sha256(
            build_alexnet(str(made / "cache" / "models" / "visual.pt"))
        )


def test_the_models_store_writes_and_checks_what_it_holds(tmp_path):
    """CACHE/models through its one owner: a model and its manifest entry, reused only for the same settings
    and the same weights; a manifest of other settings is replaced."""
    folder, net = tmp_path / "models", build_alexnet("tiny")
    sha = weights_sha256(net)
    models.save(folder, "visual", net.state_dict(), sha, {"mode": "fc", "epochs": (2,)}, epochs=2)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "models" and manifest["models"]["visual"] == {"file": "visual.pt", "sha256": sha, "epochs": 2}
    assert models.entry(folder, "visual", {"mode": "fc", "epochs": [2]})["sha256"] == sha  # as JSON reads it back
    assert models.entry(folder, "visual", {"mode": "all"}) is None and models.entry(folder, "audio", manifest["settings"]) is None
    assert weights_sha256(models.load(folder, "visual", sha)) == sha
    assert models.load(folder, "visual", "0" * 64) is None and models.load(folder, "audio", sha) is None
    # stored in fp16, exactly: a state dict not of fp16 values is refused rather than rounded on the way
    assert {v.dtype for v in torch.load(folder / "visual.pt", weights_only=True).values()} == {torch.float16}
    unrounded = {k: v + 1e-5 for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="not fp16 values; round the AlexNet first"):
        models.save(folder, "visual", unrounded, sha, {"mode": "fc", "epochs": (2,)})
    models.place(folder, "audio", folder / "visual.pt", sha, {"mode": "all"})  # other settings: a new manifest
    assert set(json.loads((folder / "manifest.json").read_text())["models"]) == {"audio"}
    assert (folder / "audio.pt").stat().st_ino == (folder / "visual.pt").stat().st_ino  # a hard link, not a copy
    (folder / "visual.pt").write_bytes(b"not a model")  # (the hard link shares the damage)
    assert models.load(folder, "audio", sha) is None
