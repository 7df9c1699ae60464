"""The `avemo` command end to end on real files: sample corpus → extract → train → evaluate."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from avemo.cli import main
from avemo.train.data import load_features


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_extract_train_evaluate_on_the_sample_corpus(tmp_path, sample_corpus):
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    result = run("extract", "--manifest", sample_corpus, "--cache", cache, "--weights", "none", "--batch-size", "16")
    assert result.exit_code == 0, result.output
    assert "decode: 18 clips done" in result.output and "fc7: 18 clips done" in result.output
    features = load_features(cache)
    assert all(g.startswith("Sample_Movie_") for g in features.groups)  # movies reach the cache

    result = run("train", "--cache", cache, "--run", run_dir, "--approach", "all", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert all((run_dir / a / "predictions.csv").is_file() for a in ("visual", "audio", "early", "late", "modal"))

    result = run("evaluate", "--run", run_dir)
    assert result.exit_code == 0, result.output
    for title in ("Visual features only", "Audio features only", "Early fusion", "Late fusion", "Modal fusion", "Majority class"):
        assert title in result.output
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["approaches"]) == {"visual", "audio", "early", "late", "modal"}
    assert sum(results["test_counts"].values()) == results["test_clips"] > 0
    assert 0 < results["majority_accuracy"] < 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["extract", "--manifest", "{tmp}/none.csv", "--cache", "{tmp}/c"], "none.csv: file not found"),
        (["extract", "--manifest", "{tmp}/bad.csv", "--cache", "{tmp}/c"], "bad.csv:2: arousal must be -1, 0 or 1"),
        (["extract", "--manifest", "{tmp}/ok.csv", "--cache", "{tmp}/c"], "x.mp4 does not exist"),
        (["extract", "--manifest", "{tmp}/ok.csv", "--cache", "{tmp}/c", "--weights", "{tmp}/w.pt"], "--weights"),
        (["train", "--cache", "{tmp}/c", "--run", "{tmp}/r"], "run `avemo extract` first"),
        (["evaluate", "--run", "{tmp}/r"], "no predictions here"),
        (["train", "--cache", "{tmp}/c", "--run", "{tmp}/r", "--approach", "mixed"], "Invalid value for '--approach'"),
    ],
)
def test_user_errors_are_one_line_without_traceback(tmp_path, args, message):
    (tmp_path / "bad.csv").write_text("path,arousal,valence,split\nx.mp4,2,0,train\n")
    (tmp_path / "ok.csv").write_text("path,arousal,valence,split\nx.mp4,1,0,train\ny.mp4,0,0,test\n")
    if "--weights" in args:
        (tmp_path / "x.mp4").write_bytes(b"")
        (tmp_path / "y.mp4").write_bytes(b"")
    result = run(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)  # click's clean exit


def test_console_script_is_installed():
    avemo = shutil.which("avemo") or str(Path(sys.executable).parent / "avemo")
    out = subprocess.run([avemo, "--version"], capture_output=True, text=True, check=True).stdout
    assert "avemo" in out and "0.1.0" in out
