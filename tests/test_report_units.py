"""`avemo evaluate`: one unit per quantity in results.csv, and the paper's column only on MediaEval 2015's test set."""

import csv
import json

import pytest

from avemo.errors import AvemoError
from avemo.evaluate.report import evaluate
from avemo.evaluate.score import is_mediaeval2015

TRUE = [-1, -1, -1, -1, 0, 0, 0, 1, 1, 1]
PRED = [-1, -1, -1, 0, 0, 0, -1, 1, 0, -1]  # 0.6; the majority class (calm, from train) scores 0.4
TRAIN = [-1, -1, -1, -1, -1, -1, 0, 0, 1, 1]


def write_predictions(folder, rows, seed=0):
    """predictions.csv as `avemo train` writes it: (clip_id, split, arousal, predicted) per clip."""
    folder.mkdir(parents=True)
    with open(folder / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "split", "arousal", "predicted", "p_calm", "p_neutral", "p_active"])
        writer.writerows([*row, 0.2, 0.3, 0.5] for row in rows)
    (folder / "settings.json").write_text(json.dumps({"seed": seed, "head": {"lstm_hidden": 256}}))


def clips(ids, split, true, predicted):
    return [(c, split, t, p) for c, t, p in zip(ids, true, predicted)]


def small_run(run):
    train = clips([f"data/ACCEDE{i:05d}.mp4" for i in range(10)], "train", TRAIN, TRAIN)
    test_ids = [f"data/ACCEDE{10 + i:05d}.mp4" for i in range(10)]
    write_predictions(run / "visual", train + clips(test_ids, "test", TRUE, PRED))
    write_predictions(run / "modal", train + clips(test_ids, "test", TRUE, TRUE[:8] + [0, 0]))
    return run


def test_results_csv_gives_every_score_in_percent_and_differences_in_points(tmp_path):
    run = small_run(tmp_path / "run")
    results = evaluate(run, resamples=100, plots=False, quiet=True)
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert not {"accuracy", "ci95_low", "balanced_accuracy", "macro_f1"} & set(rows[0])  # no unit-less names left
    assert [c for c in rows[0] if c.endswith("_pct")][:6] == [
        "accuracy_pct", "ci95_low_pct", "ci95_high_pct", "balanced_accuracy_pct", "macro_f1_pct", "precision_calm_pct"
    ]  # fmt: skip
    majority = rows[-1]
    assert majority["approach"] == "majority (calm)" and float(majority["accuracy_pct"]) == 40.0
    for row, entry in zip(rows, results["tasks"]["arousal"]["entries"]):
        accuracy = float(row["accuracy_pct"])
        assert accuracy == pytest.approx(100 * entry["accuracy"], abs=1e-4)
        assert accuracy - float(majority["accuracy_pct"]) == pytest.approx(float(row["vs_majority_pts"]), abs=1e-3)
        assert float(row["ci95_low_pct"]) <= accuracy <= float(row["ci95_high_pct"])
        values = [float(v) for c, v in row.items() if c.endswith("_pct") and v != ""]
        assert all(0 <= v <= 100 for v in values) and max(values) > 1  # percent, not fractions
    assert rows[0]["accuracy_pct"] == "60.0000" and rows[0]["vs_majority_pts"] == "20.0000"
    assert "fraction (0-1)" in results["units"] and "vs_majority_pts" in results["units"]["percentage points"]


def test_no_paper_column_for_the_sample_corpus(tmp_path, sample_corpus):
    """The sample corpus names its clips as MediaEval does (ACCEDE00000.mp4), but it is not MediaEval's test set."""
    with open(sample_corpus, newline="") as f:
        rows = [(r["path"], r["split"], r["arousal"], r["arousal"]) for r in csv.DictReader(f)]
    assert any(r[1] == "test" for r in rows) and all(r[0].startswith("data/ACCEDE") for r in rows)
    write_predictions(tmp_path / "run" / "modal", rows)
    results = evaluate(tmp_path / "run", resamples=20, plots=False)
    assert results["tasks"]["arousal"]["mediaeval2015"] is False
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Paper" not in report and "55.89" not in report and "55.55" not in report


def mediaeval_run(run, n_test=4756, name="data/ACCEDE{:05d}.mp4"):
    """A run whose test split has MediaEval 2015's shape: 4,756 test clips (3,656 ACCEDE, 1,100 MEDIAEVAL)."""
    ids = [name.format(6144 + i) if i < 3656 else f"data/MEDIAEVAL{i - 3656:05d}.mp4" for i in range(n_test)]
    true = [(-1, 0, 1)[i % 3] for i in range(n_test)]
    train = clips([f"data/ACCEDE{i:05d}.mp4" for i in range(30)], "train", [-1] * 20 + [0] * 5 + [1] * 5, [-1] * 30)
    write_predictions(run / "visual", train + clips(ids, "test", true, [-1] * n_test))
    write_predictions(run / "modal", train + clips(ids, "test", true, true))
    return run


def test_the_paper_column_is_shown_beside_mediaeval_2015s_test_set(tmp_path, capsys):
    run = mediaeval_run(tmp_path / "run")
    results = evaluate(run, resamples=20, plots=False)
    assert results["tasks"]["arousal"]["mediaeval2015"] is True
    report = (run / "report.md").read_text()
    assert "| Paper (%) |" in report and "Paper: its Table 1, on this test set (MediaEval 2015" in report
    assert report.count("| 55.89 |") == 1 and "| 55.51 |" in report and "| 55.55 |" in report
    assert "| Paper (%) |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "ids",
    [
        [f"data/ACCEDE{i:05d}.mp4" for i in range(4755)],  # one clip short: not the same test set
        [f"s0/c{i}.mp4" for i in range(4756)],  # the right count, other names
    ],
)
def test_other_test_sets_are_not_mediaeval_2015(ids):
    assert not is_mediaeval2015(ids)


def test_mediaeval_names_in_every_form_are_recognised():
    ids = [f"data/ACCEDE{i:05d}.mp4" for i in range(3000)] + [f"MEDIAEVAL{i:05d}" for i in range(1000)]
    assert is_mediaeval2015(ids + [f"videos\\SHOT_{i:06d}.mp4" for i in range(756)])


def test_valence_models_get_their_own_table_baseline_csv_run_files_and_curves(tmp_path, capsys):
    """RUN/valence/<model>/ (avemo train --target valence): its own majority class, from valence's train labels."""
    run = small_run(tmp_path / "run")
    folder = run / "valence" / "visual"
    folder.mkdir(parents=True)
    with open(folder / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "split", "valence", "predicted_valence", "p_negative", "p_neutral", "p_positive"])
        writer.writerows((f"data/ACCEDE{i:05d}.mp4", "train", 1 if i < 7 else 0, 1, 0, 0, 1) for i in range(10))
        writer.writerows((f"data/ACCEDE{10 + i:05d}.mp4", "test", v, 1, 0, 0, 1) for i, v in enumerate([1, 1, 1, 0, -1] * 2))
    (folder / "log.csv").write_text("epoch,train_loss,validation_loss,validation_accuracy\n1,1.1,1.0,0.5\n2,0.9,1.05,0.5\n")
    results = evaluate(run, resamples=50)
    out = capsys.readouterr().out
    assert "Arousal:" in out and "Valence:" in out and "| Majority class (always 'positive', from train) | 60.00 |" in out
    valence = results["tasks"]["valence"]
    assert valence["majority_class"] == "positive" and results["tasks"]["arousal"]["majority_class"] == "calm"
    rows = list(csv.DictReader(open(run / "results-valence.csv")))
    assert [r["approach"] for r in rows] == ["visual", "majority (positive)"] and rows[0]["accuracy_pct"] == "60.0000"
    assert (run / "mediaeval" / "valence-visual.txt").read_text().splitlines()[0] == "ACCEDE00010 1"
    assert (run / "plots" / "learning-valence-visual.png").is_file()  # no model.pt: drawn without a selected epoch
    assert not (run / "plots" / "learning-arousal-visual.png").exists()  # RUN/visual has no log.csv
    report = (run / "report.md").read_text()
    assert "## Table 1 — valence, test split" in report and "[log.csv](valence/visual/log.csv)" in report


def test_a_damaged_training_log_names_its_file_and_line(tmp_path):
    run = small_run(tmp_path / "run")
    (run / "modal" / "log.csv").write_text("epoch,train_loss,validation_loss\n1,0.9,1.0\n2,nan?,1.1\n")
    with pytest.raises(AvemoError, match=r"modal/log.csv:3: epoch or loss is not a number; delete it"):
        evaluate(run, resamples=20, quiet=True)
    evaluate(run, resamples=20, plots=False, quiet=True)  # read for the plots only
