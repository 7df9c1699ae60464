"""The `avemo` command end to end on real files: sample corpus → extract → train → evaluate.

This is the suite's end-to-end run at full size: AlexNets of torchvision's layers (`--weights none`), fine-tuned
(mode fc), 4096-d fc7 features; the other extraction tests use `--weights tiny`."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import pytest
from click.testing import CliRunner

from avemo.cli import main
from avemo.extract.alexnet import FC7_DIM
from avemo.train.data import load_features


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def two_movies(sample_corpus: Path, folder: Path, seconds: int = 3) -> Path:
    """The clips of the sample corpus's first train movie and of its test movie (5 + 3 here), each cut to its first
    `seconds` (a stream copy by the ffmpeg CLI: a clip's levels, hence its label, hold in every second), with
    their rows of clips.csv; returns folder/clips.csv."""
    with open(sample_corpus, newline="") as f:
        rows = list(csv.DictReader(f))
    movies = {next(r["movie"] for r in rows if r["split"] == split) for split in ("train", "test")}
    rows = [r for r in rows if r["movie"] in movies]
    (folder / "data").mkdir()
    for row in rows:
        cut = ["-nostdin", "-loglevel", "error", "-i", str(sample_corpus.parent / row["path"]), "-t", str(seconds)]
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), *cut, "-c", "copy", str(folder / row["path"])], check=True)
    with open(folder / "clips.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "clips.csv"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_corpus):
    """`avemo extract` and `avemo train --approach all` on two movies of the sample corpus (3 s of each clip):
    (cache, run, their outputs)."""
    root = tmp_path_factory.mktemp("cli")
    cache, run_dir = root / "cache", root / "run"
    manifest = two_movies(sample_corpus, root)
    extracted = run("extract", "--manifest", manifest, "--cache", cache, "--weights", "none", "--batch-size", "16")
    assert extracted.exit_code == 0, extracted.output
    result = run("train", "--cache", cache, "--run", run_dir, "--approach", "all", "--epochs", "2")
    assert result.exit_code == 0, result.output
    return cache, run_dir, extracted.output


def test_extract_train_evaluate_on_the_sample_corpus(trained):
    cache, run_dir, extracted = trained
    assert "decode: 8 clips done" in extracted and "fc7: 8 clips done" in extracted
    features = load_features(cache)
    assert all(g.startswith("Sample_Movie_") for g in features.groups)  # movies reach the cache
    assert set(features.split) == {"train", "test"}
    assert features.visual.shape[1] == features.audio.shape[1] == FC7_DIM  # AlexNet's fc7: "4096 neurons" (paper)
    assert features.settings["finetune"]["mode"] == "fc" and set(features.settings["tuned_sha256"]) == {"visual", "audio"}

    assert all((run_dir / a / "predictions.csv").is_file() for a in ("visual", "audio", "early", "late", "modal"))

    result = run("evaluate", "--run", run_dir)
    assert result.exit_code == 0, result.output
    for title in ("Visual features only", "Audio features only", "Early fusion", "Late fusion", "Modal fusion", "Majority class"):
        assert title in result.output
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["approaches"]) == {"visual", "audio", "early", "late", "modal"}
    assert sum(results["test_counts"].values()) == results["test_clips"] > 0
    assert 0 < results["majority_accuracy"] < 1


def test_train_config_reruns_a_recorded_run(tmp_path, trained):
    cache, run_dir, _ = trained
    config = run_dir / "modal" / "settings.json"
    again = tmp_path / "again"
    result = run("train", "--config", config, "--run", again)  # the cache: the one RUN/run.json names
    assert result.exit_code == 0, result.output
    assert (again / "modal" / "predictions.csv").read_text() == (run_dir / "modal" / "predictions.csv").read_text()
    assert json.loads((again / "modal" / "settings.json").read_text()) == json.loads(config.read_text())
    assert not (again / "visual").exists()  # the file's approach

    # options given override the file, the others (here a head size that has no option) are kept
    edited = json.loads(config.read_text())
    edited["head"]["hidden"], edited["seed"], edited["late_from"] = 16, 5, "lstm"
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    args = ["--config", tmp_path / "edited.json", "--cache", cache, "--run", tmp_path / "other", "--epochs", "1"]
    result = run("train", *args, "--approach", "late")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "other" / "late" / "settings.json").read_text())
    assert saved["epochs"] == 1 and saved["seed"] == 5 and saved["late_from"] == "lstm" and saved["head"]["hidden"] == 16
    assert (tmp_path / "other" / "visual" / "model.pt").is_file()  # late from the LSTM heads, as the file says


@pytest.mark.parametrize(
    "contents, message",
    [
        ({"epochs": 2, "bogus": 1}, "unknown setting bogus"),
        ({"epochs": "two"}, 'epochs "two": must be an integer'),
        ({"head": {"approach": "visual", "temporal": "none"}}, "one of late fusion's per-second classifiers"),
    ],
)
def test_a_wrong_config_is_one_error_line(tmp_path, contents, message):
    (tmp_path / "settings.json").write_text(json.dumps(contents))
    result = run("train", "--config", tmp_path / "settings.json", "--cache", tmp_path, "--run", tmp_path / "run")
    assert result.exit_code == 1 and result.output.count("Error:") == 1 and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_cache_and_run_keep_a_log_of_every_command(tmp_path, trained, sample_corpus):
    cache, run_dir, _ = trained
    logs = {"extract": (cache / "log.txt").read_text(), "train": (run_dir / "log.txt").read_text()}
    for command, text in logs.items():
        assert f"avemo 0.1.0: {command}\n" in text and "\n== finished after " in text and "\r" not in text
    assert "   weights: none\n" in logs["extract"] and "   batch_size: 16\n" in logs["extract"]
    assert "decode: 8 clips done" in logs["extract"] and "fc7: 8 clips done" in logs["extract"]
    assert "   epochs: 2\n" in logs["train"] and "   approaches: ['visual', 'audio', 'early', 'late', 'modal']" in logs["train"]
    assert "train: " in logs["train"] and "modal: validation accuracy" in logs["train"]

    # a failing command: its Error line and a failed footer
    result = run("train", "--cache", tmp_path / "none", "--run", run_dir, "--epochs", "2")
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if line.startswith("Error: ")][0]
    lines = (run_dir / "log.txt").read_text().splitlines()
    assert lines[-2].endswith(error) and lines[-1].startswith("== failed after ")


@pytest.mark.parametrize("command", [[], ["train"], ["extract"], ["datasets", "summary"], ["bench", "train"]])
def test_h_is_help(command):
    short, long = run(*command, "-h"), run(*command, "--help")
    assert short.exit_code == 0 and short.output == long.output and "Usage: " in short.output


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
