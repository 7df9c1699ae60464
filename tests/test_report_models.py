"""`avemo evaluate` on real tiny training runs: α read from the models, learning curves, links to the run's files."""

import csv
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from avemo.approaches import ALPHA_LATE
from avemo.atomic import load_torch
from avemo.errors import AvemoError
from avemo.evaluate.report import evaluate
from avemo.evaluate.training import read_curves
from avemo.train.heads import load_head
from avemo.train.trainer import train

from helpers import SETTINGS, torch_threads, write_feature_cache

TINY = replace(SETTINGS, epochs=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Late and modal fusion, two seeds each, 3 epochs on 60 clips (α moves away from its start of 0.5)."""
    cache = write_feature_cache(tmp_path_factory.mktemp("cache"), n_clips=60)
    run = tmp_path_factory.mktemp("run")
    with torch_threads(1):
        train(cache, run, ["late", "modal"], TINY, seeds=[0, 1])
    return cache, run


@pytest.fixture(scope="module")
def evaluated(trained):
    _, run = trained
    return run, evaluate(run, resamples=50, quiet=True)


def test_alpha_in_the_results_is_the_trained_heads_parameter(evaluated):
    run, results = evaluated
    entries = {(e["approach"], e["seed"]): e for e in results["tasks"]["arousal"]["entries"]}
    values = []
    for seed in (0, 1):
        head, _ = load_head(run / "modal" / f"seed-{seed}" / "model.pt")
        alpha = entries[("modal", seed)]["alpha"]
        assert (alpha["audio"], alpha["visual"]) == (head.alpha_audio.item(), head.alpha_visual.item())
        assert alpha["learned"] is True and alpha["start"] == [0.5, 0.5]
        assert alpha["source"] == f"modal/seed-{seed}/model.pt" and alpha["audio"] != 0.5  # trained, not the start
        values.append((alpha["audio"], alpha["visual"]))
    group = results["tasks"]["arousal"]["groups"]["modal"]
    assert group["alpha_audio"] == pytest.approx(np.mean([a for a, _ in values]))
    assert group["alpha_visual_std"] == pytest.approx(np.std([v for _, v in values], ddof=1))
    assert group["alpha_seeds"] == 2 and group["alpha_learned"] is True
    late = entries[("late", 0)]["alpha"]  # paper eq. 14: fixed, the value predict uses
    assert (late["audio"], late["learned"]) == (ALPHA_LATE, False)
    rows = {(r["approach"], r["seed"]): r for r in csv.DictReader(open(run / "results.csv"))}
    assert float(rows[("modal", "1")]["alpha_visual"]) == pytest.approx(values[1][1], abs=1e-6)
    assert rows[("late", "0")]["alpha_audio"] == "0.560000" and rows[("majority (calm)", "")]["alpha_audio"] == ""
    report = (run / "report.md").read_text()
    mean, std = group["alpha_audio"], group["alpha_audio_std"]
    assert f"| Modal fusion | {mean:.4f} ± {std:.4f} |" in report
    assert "[seed 0](modal/seed-0/model.pt), [seed 1](modal/seed-1/model.pt)" in report
    assert "| Late fusion | 0.56 | 0.44 | 2 | fixed by the paper (eq. 14" in report


def test_a_fixed_alpha_stays_at_its_start_value(tmp_path, trained):
    cache, _ = trained
    fixed = replace(TINY, epochs=2, head=replace(TINY.head, learn_alpha=False, alpha_audio=0.3, alpha_visual=0.7))
    with torch_threads(1):
        train(cache, tmp_path, ["modal"], fixed)
    results = evaluate(tmp_path, resamples=20, plots=False, quiet=True)
    alpha = results["tasks"]["arousal"]["entries"][0]["alpha"]
    assert alpha["audio"] == pytest.approx(0.3) and alpha["visual"] == pytest.approx(0.7) and alpha["learned"] is False
    assert "not learned: `learn_alpha` false" in (tmp_path / "report.md").read_text()


def test_every_model_gets_a_learning_curve_with_its_selected_epoch(evaluated):
    run, results = evaluated
    for name in ("modal-seed0", "modal-seed1", "late-seed0", "late-seed1"):
        path = run / "plots" / f"learning-arousal-{name}.png"
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 400
        assert str(path) in results["files"]["plots"] and f"({path.relative_to(run)})" in (run / "report.md").read_text()
    curves = read_curves(run / "late" / "seed-1", "late")  # late fusion: its visual and audio classifiers
    assert [c.label for c in curves] == ["visual", "audio"]
    for curve in curves:
        rows = list(csv.DictReader(open(curve.log)))
        assert curve.epochs == [1, 2, 3] and curve.validation_loss == [float(r["validation_loss"]) for r in rows]
        assert curve.selected == load_torch(curve.log.parent / "model.pt", "")["epoch"]
        assert curve.validation_loss[curve.selected - 1] == min(curve.validation_loss)  # selection by validation loss


def test_every_link_of_the_report_is_a_file_of_the_run(evaluated):
    run, _ = evaluated
    report = (run / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert len(links) > 30
    for link in links:
        assert not link.startswith(("/", "..")) and (run / link).exists(), link
    for name in ("settings.json", "log.csv", "model.pt", "predictions.csv"):
        assert f"](modal/seed-1/{name})" in report
    assert "](late/seed-0/audio/log.csv)" in report and "](mediaeval/arousal-late-seed1.txt)" in report
    assert "avemo/" not in report and "docs/" not in report  # points to the run, not to avemo's sources


def test_a_damaged_model_file_is_one_clear_error(tmp_path, trained):
    _, run = trained
    copy = shutil.copytree(run, tmp_path / "run")
    (copy / "modal" / "seed-0" / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AvemoError, match=r"seed-0/model.pt: not a file written by avemo .*train it again"):
        evaluate(copy, resamples=20, plots=False, quiet=True)
