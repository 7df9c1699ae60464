"""`avemo evaluate --run DIR`: score the run's test predictions next to the majority-class baseline.

Writes RUN/results.json and RUN/report.md and prints the table. Only the run directory is read.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from avemo.datasets.labels import AROUSAL_NAMES, to_index
from avemo.errors import AvemoError
from avemo.evaluate.metrics import accuracy, majority_accuracy, majority_class
from avemo.train.heads import APPROACHES

TITLES = {
    "visual": "Visual features only",
    "audio": "Audio features only",
    "early": "Early fusion",
    "late": "Late fusion",
    "modal": "Modal fusion",
}


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "split": np.array([r["split"] for r in rows]),
        "arousal": np.array([int(r["arousal"]) for r in rows]),
        "predicted": np.array([int(r["predicted"]) for r in rows]),
    }


def evaluate(run: str | Path) -> dict:
    run = Path(run)
    found = [a for a in APPROACHES if (run / a / "predictions.csv").is_file()]
    if not found:
        raise AvemoError(f"{run}: no predictions here; run `avemo train --run {run}` first")
    results: dict = {"approaches": {}}
    for approach in found:
        p = read_predictions(run / approach / "predictions.csv")
        train, test = p["split"] == "train", p["split"] == "test"
        if not test.any():
            raise AvemoError(f"{run / approach / 'predictions.csv'}: no test clips to score")
        results["approaches"][approach] = {"accuracy": accuracy(p["arousal"][test], p["predicted"][test])}
        # the split and its labels are the same for every approach of a run
        results["test_clips"] = int(test.sum())
        results["test_counts"] = {n: int((p["arousal"][test] == i - 1).sum()) for i, n in enumerate(AROUSAL_NAMES)}
        majority = majority_class(p["arousal"][train])
        results["majority_class"] = AROUSAL_NAMES[to_index(majority)]
        results["majority_accuracy"] = majority_accuracy(p["arousal"][train], p["arousal"][test])
    table = format_table(results)
    (run / "results.json").write_text(json.dumps(results, indent=1))
    (run / "report.md").write_text(f"# Arousal, test split\n\n{table}\n")
    print(table)
    return results


def format_table(results: dict) -> str:
    counts = ", ".join(f"{n} {c}" for n, c in results["test_counts"].items())
    lines = [
        f"Test split: {results['test_clips']} clips ({counts}). Metric: global accuracy Nc/Nt (paper eq. 13).",
        "",
        "| Approach | Arousal accuracy (%) | vs. majority class (pts) |",
        "|---|---:|---:|",
    ]
    base = results["majority_accuracy"]
    for approach, r in results["approaches"].items():
        lines.append(f"| {TITLES[approach]} | {100 * r['accuracy']:.2f} | {100 * (r['accuracy'] - base):+.2f} |")
    lines.append(f"| Majority class (always '{results['majority_class']}', from train) | {100 * base:.2f} | 0.00 |")
    return "\n".join(lines)
