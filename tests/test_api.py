"""avemo.api: the policy of `train` (which heads to train before a joint pass), its log, the exports of
`avemo`, and the settings' settings.json round trip."""

import json
import subprocess
import sys

import pytest

from avemo import api
from avemo.errors import AvemoError
from avemo.train.heads import HeadSettings
from avemo.train.settings import JointSettings, TrainSettings

SETTINGS = TrainSettings(head=HeadSettings(hidden=16), epochs=2, device="cpu")
JOINT = JointSettings(epochs=1, device="cpu")


@pytest.fixture
def calls(monkeypatch):
    """The trainer and the joint pass replaced by recorders (the policy is what is tested here)."""
    made = []

    def fake_train(cache, run, approaches, settings, seeds, lstm_sizes, memory, targets=None, stacked=False):
        made.append(("train", approaches, settings, seeds, lstm_sizes, memory))
        run.mkdir(parents=True, exist_ok=True)
        print("train: fitted")
        return run

    def fake_joint(cache, run, settings, approach, export, seed):
        made.append(("joint", approach, settings, export, seed))
        if export is not None:
            export.mkdir(parents=True)
            print("joint: exported")
        return run / "joint"

    monkeypatch.setattr("avemo.train.trainer.train", fake_train)
    monkeypatch.setattr("avemo.train.joint.joint_train", fake_joint)
    return made


def test_train_without_joint_trains_the_approaches(tmp_path, calls):
    api.train(tmp_path / "cache", tmp_path / "run", "all", SETTINGS, lstm_sizes=[8])
    assert calls == [("train", ["visual", "audio", "early", "late", "modal"], SETTINGS, [0], [8], "auto")]


def test_joint_trains_its_head_first_when_the_run_has_none(tmp_path, calls):
    api.train(tmp_path / "cache", tmp_path / "run", ["visual"], SETTINGS, joint=JOINT, joint_from="early", joint_seed=3)
    assert [c[:2] for c in calls] == [("train", ["visual", "early"]), ("joint", "early")]
    assert calls[1][2:] == (JOINT, None, 3)


def test_joint_tunes_the_head_the_run_holds(tmp_path, calls, capsys):
    run = tmp_path / "run"
    (run / "modal" / "seed-1").mkdir(parents=True)
    (run / "modal" / "seed-1" / "model.pt").write_bytes(b"")
    api.train(tmp_path / "cache", run, "visual", SETTINGS, joint=JOINT)
    assert [c[:2] for c in calls] == [("joint", "modal")]
    assert f"joint: tuning the trained head in {run / 'modal'}" in capsys.readouterr().out


def test_export_needs_the_joint_pass(tmp_path, calls):
    with pytest.raises(AvemoError, match="joint"):
        api.train(tmp_path / "cache", tmp_path / "run", "modal", SETTINGS, export=tmp_path / "out")
    assert calls == []


def test_train_logs_into_the_run_and_the_export(tmp_path, calls):
    run, out = tmp_path / "run", tmp_path / "exported"
    api.train(tmp_path / "cache", run, "modal", SETTINGS, joint=JOINT, export=out)
    text = (run / "log.txt").read_text()
    for line in ("avemo 0.1.0: train", "   epochs: 2", "   head.hidden: 16", "   joint.epochs: 1", "train: fitted"):
        assert line in text
    assert text.splitlines()[-1].startswith("== finished after ")
    exported = (out / "log.txt").read_text()  # the export folder is a cache: it keeps its log too (the whole command)
    assert "train --joint: features exported here" in exported and "joint: exported" in exported


def test_a_failing_train_logs_its_error(tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        (tmp_path / "run").mkdir()
        raise AvemoError("2 model(s) could not be trained")

    monkeypatch.setattr("avemo.train.trainer.train", failing)
    with pytest.raises(AvemoError):
        api.train(tmp_path / "cache", tmp_path / "run", "modal", SETTINGS)
    lines = (tmp_path / "run" / "log.txt").read_text().splitlines()
    assert lines[-2].endswith("Error: 2 model(s) could not be trained") and lines[-1].startswith("== failed after ")


def test_import_avemo_does_not_import_torch_and_exports_the_api():
    code = "import sys, avemo; from avemo import api; print(api.train.__module__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)  # a fresh process
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["avemo.api", "False"]
    import avemo  # the settings it exports import torch: checked here, where torch is loaded anyway
    from avemo.extract.pipeline import ExtractSettings

    assert (avemo.TrainSettings, avemo.JointSettings, avemo.HeadSettings) == (TrainSettings, JointSettings, HeadSettings)
    assert avemo.ExtractSettings is ExtractSettings and avemo.api is api


def test_settings_json_round_trip(tmp_path):
    settings = TrainSettings(head=HeadSettings(hidden=16, learn_alpha=False), epochs=3, late_from="lstm", validation=0.2)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings.to_json()))
    assert TrainSettings.from_json(path) == settings
    assert TrainSettings.from_json({"epochs": 5}) == TrainSettings(epochs=5)  # the others keep their defaults
    assert JointSettings().to_json()["layers"] == "fc"


@pytest.mark.parametrize(
    "contents, message",
    [
        ({"epochs": 2, "bogus": 1}, "unknown setting bogus"),
        ({"head": {"hiden": 3}}, "head: unknown setting hiden"),
        ({"epochs": "40"}, 'epochs "40": must be an integer'),
        ({"deterministic": 1}, "deterministic 1: must be true or false"),
        ({"epochs": 0}, "epochs 0: must be ≥ 1"),
        ({"supervise": "all"}, "supervise 'all': must be one of last, every"),
        ({"layers": "fc", "source": {}, "epochs": 3}, "the settings of a joint pass"),
    ],
)
def test_a_settings_file_is_checked(tmp_path, contents, message):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(contents))
    with pytest.raises(AvemoError, match=message) as caught:
        TrainSettings.from_json(path)
    assert str(caught.value).startswith(str(path))


def test_settings_refuse_values_out_of_bounds():
    with pytest.raises(AvemoError, match="lr 0.0: must be > 0"):
        TrainSettings(lr=0.0, device="cpu")
    with pytest.raises(AvemoError, match="joint backbone_weight_decay -1: must be ≥ 0"):
        JointSettings(backbone_weight_decay=-1, device="cpu")
