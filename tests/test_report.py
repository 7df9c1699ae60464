"""`avemo evaluate` on a run directory written by hand: values, every output file, seeds, errors."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from avemo.approaches import APPROACHES
from avemo.cli import main
from avemo.errors import AvemoError
from avemo.evaluate.report import evaluate

# The fixed test set of test_metrics.py (accuracy 0.6), ten train clips (majority: calm).
TRUE = [-1, -1, -1, -1, 0, 0, 0, 1, 1, 1]
PRED = [-1, -1, -1, 0, 0, 0, -1, 1, 0, -1]
TRAIN = [-1, -1, -1, -1, -1, -1, 0, 0, 1, 1]
MODAL = TRUE[:8] + [0, 0]  # 0.8, right wherever PRED is, and on 3, 6


def write_predictions(folder, predicted, seed=0, lstm_hidden=256, valence=None):
    folder.mkdir(parents=True)
    columns = ["clip_id", "split", "arousal", "predicted", "p_calm", "p_neutral", "p_active"]
    if valence:
        columns += ["valence", "predicted_valence"]
    with open(folder / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i, label in enumerate(TRAIN):
            writer.writerow([f"data/ACCEDE{i:05d}.mp4", "train", label, label, 1, 0, 0] + ([label, label] if valence else []))
        for i, (label, p) in enumerate(zip(TRUE, predicted)):
            row = [f"data/ACCEDE{10 + i:05d}.mp4", "test", label, p, 0.2, 0.3, 0.5]
            writer.writerow(row + (list(valence[i]) if valence else []))
    (folder / "settings.json").write_text(json.dumps({"seed": seed, "head": {"approach": "x", "lstm_hidden": lstm_hidden}}))


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    valence = [(1, 1)] * 5 + [(0, 1), (-1, -1), ("", 0), (0, 0), (1, 0)]  # 9 known; 7 right
    write_predictions(run / "visual", PRED, valence=valence)
    write_predictions(run / "modal", MODAL)
    write_predictions(run / "modal-lstm64" / "seed-0", PRED, lstm_hidden=64)  # 0.6
    write_predictions(run / "modal-lstm64" / "seed-1", MODAL, lstm_hidden=64)  # 0.8
    # without its own settings.json, a seed folder's seed is its number; the rest comes from the parent's
    (run / "modal-lstm64" / "seed-1" / "settings.json").rename(run / "modal-lstm64" / "settings.json")
    (run / "run.json").write_text(json.dumps({"cache": "/nowhere", "approaches": ["visual", "modal"]}))
    return run


def test_metrics_in_results_json_equal_the_hand_computed_ones(run, capsys):
    results = evaluate(run)
    arousal = results["tasks"]["arousal"]
    assert arousal["majority_class"] == "calm" and arousal["majority_accuracy"] == 0.4
    visual = arousal["groups"]["visual"]
    assert visual["accuracy"] == 0.6 and visual["vs_majority_pts"] == pytest.approx(20.0)
    assert visual["balanced_accuracy"] == pytest.approx(7 / 12) and visual["macro_f1"] == pytest.approx(73 / 126)
    entry = arousal["entries"][0]
    assert entry["confusion"] == [[3, 1, 0], [1, 2, 0], [1, 1, 1]]
    assert entry["precision"] == pytest.approx({"-1": 0.6, "0": 0.5, "1": 1.0})
    # vs. always calm: visual right & calm wrong on 4, 5, 7 (b = 3); wrong & calm right on 3 (c = 1)
    assert (entry["mcnemar_vs_majority"]["b"], entry["mcnemar_vs_majority"]["c"]) == (3, 1)
    assert entry["mcnemar_vs_majority"]["p_value"] == pytest.approx(2 * 5 / 16)
    # vs. modal fusion: modal right where visual is wrong on 3 and 6, never the other way round
    assert (entry["mcnemar_vs_modal"]["b"], entry["mcnemar_vs_modal"]["c"]) == (0, 2)
    assert results["approaches"]["modal"]["accuracy"] == 0.8  # the older top-level summary stays
    assert arousal["groups"]["modal"]["significant_vs_modal"] is None
    # two seeds of one configuration: mean ± sample std
    seeds = arousal["groups"]["modal-lstm64"]
    assert seeds["seeds"] == [0, 1] and seeds["n_seeds"] == 2 and seeds["lstm_hidden"] == 64
    assert seeds["accuracy"] == pytest.approx(0.7) and seeds["accuracy_std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert [e["name"] for e in arousal["entries"]] == ["visual", "modal", "modal-lstm64", "modal-lstm64"]
    # valence only where the file has it; unknown labels left out
    valence = results["tasks"]["valence"]
    assert valence["test_clips"] == 9 and [e["name"] for e in valence["entries"]] == ["visual"]
    assert valence["entries"][0]["accuracy"] == pytest.approx(7 / 9)
    # the terminal ends with the table and the plot paths
    out = capsys.readouterr().out
    assert "| Visual features only | 60.00 |" in out and "| Majority class (always 'calm', from train) | 40.00 |" in out
    assert out.strip().splitlines()[-1].strip().endswith(".png") and "Plots:" in out


def test_every_output_file_is_written_and_readable(run):
    results = evaluate(run, resamples=200, quiet=True)
    assert json.loads((run / "results.json").read_text())["tasks"]["arousal"]["test_clips"] == 10
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [(r["approach"], r["variant"], r["seed"]) for r in rows] == [
        ("visual", "", "0"), ("modal", "", "0"), ("modal", "lstm64", "0"), ("modal", "lstm64", "1"), ("majority (calm)", "", "")
    ]  # fmt: skip
    assert rows[0]["accuracy_pct"] == "60.0000" and rows[0]["significant_vs_majority"] == "false"
    assert float(rows[0]["recall_active_pct"]) == pytest.approx(100 / 3, abs=1e-4)
    assert list(csv.DictReader(open(run / "results-valence.csv")))[0]["precision_positive_pct"] != ""
    report = (run / "report.md").read_text()
    assert "| Modal fusion | 80.00 |" in report and "Paired tests between approaches" in report
    assert "60.00 ± 14.14" not in report and "70.00 ± 14.14 (n=2 seeds)" in report
    assert all(f"- [{name}]({name})" in report for name in ("results.json", "results.csv", "results-valence.csv", "report.md"))
    plots = [run / p for p in ("plots/confusion-arousal-visual.png", "plots/confusion-arousal-modal-lstm64-seed1.png")]
    plots.append(run / "plots/fig2-lstm-hidden-arousal.png")  # two LSTM sizes of modal fusion: 64 and 256
    for path in plots:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 400
        assert f"({path.relative_to(run)})" in report
    assert {str(p) for p in plots} <= set(results["files"]["plots"])
    lines = (run / "mediaeval/arousal-visual.txt").read_text().splitlines()
    assert lines[:2] == ["ACCEDE00010 -1", "ACCEDE00011 -1"] and len(lines) == 10
    assert (run / "mediaeval/arousal-modal-lstm64-seed1.txt").is_file()
    assert (run / "mediaeval/valence-visual.txt").read_text().count("\n") == 9


def test_evaluate_command_prints_the_table_and_can_skip_plots(run):
    result = CliRunner().invoke(main, ["evaluate", "--run", str(run), "--no-plots", "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    assert "Significant vs. majority?" in result.output and "Plots:" not in result.output
    assert not (run / "plots").exists() and (run / "results.csv").is_file()


def test_predictions_of_other_clips_are_refused(run):
    with open(run / "modal" / "predictions.csv", "a") as f:
        f.write("data/extra.mp4,test,1,1,0,0,1\n")
    with pytest.raises(AvemoError, match="its test clips differ"):
        evaluate(run, quiet=True)


def test_a_bad_label_names_the_file_and_line(run):
    path = run / "visual" / "predictions.csv"
    path.write_text(path.read_text().replace("data/ACCEDE00010.mp4,test,-1,-1", "data/ACCEDE00010.mp4,test,-1,2"))
    with pytest.raises(AvemoError, match=r"visual/predictions.csv:12: predicted must be -1, 0 or 1"):
        evaluate(run, quiet=True)


def test_evaluate_knows_the_trainers_approaches():
    from avemo.runfolder import parse_folder
    from avemo.train.heads import APPROACHES as TRAINED

    assert APPROACHES == TRAINED  # one table (avemo.approaches) for the trainer and the reports
    assert all(parse_folder(a) == (a, "") and parse_folder(f"{a}-lstm64") == (a, "lstm64") for a in (*TRAINED, "joint"))
