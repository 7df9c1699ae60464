"""`avemo evaluate --run DIR`: what the run's test predictions are worth, next to the majority-class baseline.

Reads every RUN/<approach>[-<variant>][/seed-<n>]/predictions.csv (layout: avemo.evaluate.runs) and scores
arousal (and valence, when the files hold it) on the test split:

- global accuracy Nc/Nt (the official MediaEval 2015 metric, paper eq. 13) with a 95% bootstrap interval;
- the majority-class accuracy (class taken from the train split) and each approach's difference to it;
- balanced accuracy, macro-F1, per-class precision and recall, the confusion matrix;
- McNemar's paired test on the same clips against the majority baseline, against modal fusion (same seed),
  and between every two approaches;
- with several seeds of one configuration: mean ± sample std (ddof 1) over the seeds.

Writes, in RUN:

    results.json                  everything, machine-readable ("tasks" → arousal/valence → entries, groups, pairwise)
    results.csv                   arousal: one row per approach × seed, plus the majority baseline
    results-valence.csv           the same for valence, when scored
    report.md                     Table 1 in the paper's layout with the readable columns, per-class scores,
                                  paired tests, the figures
    plots/confusion-<task>-<name>[-seed<n>].png
    plots/fig2-lstm-hidden-<task>.png   only when modal runs with several LSTM sizes are present (paper Fig. 2)
    mediaeval/<task>-<name>[-seed<n>].txt   run files: one test clip per line, `<clip> <class>`, e.g.
                                  `ACCEDE00001 1` (clip = file name without extension, or the whole id
                                  without extension when two test clips share a file name; class -1/0/1)

and prints the table, the file paths and the plot paths. Every file is written atomically and never through a
symbolic link (avemo.atomic): a run folder from someone else cannot make evaluate overwrite another file.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np

from avemo.atomic import ensure_dir, write_json, write_text
from avemo.datasets.labels import AROUSAL_NAMES, VALENCE_NAMES, to_index
from avemo.errors import AvemoError
from avemo.evaluate.metrics import LABELS, majority_class, mcnemar, scores
from avemo.evaluate.runs import TASKS, Predictions, find_predictions, missing_predictions

TITLES = {
    "visual": "Visual features only",
    "audio": "Audio features only",
    "early": "Early fusion",
    "late": "Late fusion",
    "modal": "Modal fusion",
    "joint": "Joint pass (head and AlexNets tuned end to end)",
}
CLASS_NAMES = {"arousal": AROUSAL_NAMES, "valence": VALENCE_NAMES}
PAPER_TABLE1 = {"visual": 55.51, "audio": 55.14, "early": 55.71, "late": 55.70, "modal": 55.89}  # arousal, %
MEDIAEVAL_MAJORITY = 55.55  # always "calm" on the MediaEval 2015 arousal test split (4,756 clips)
ALPHA = 0.05  # significance level of the McNemar columns
UNKNOWN = -128


def evaluate(run: str | Path, resamples: int = 1000, seed: int = 0, plots: bool = True, quiet: bool = False) -> dict:
    """Score every predictions file of `run`, write the outputs listed in the module docstring, print the table."""
    run = Path(run)
    entries = find_predictions(run)
    missing = missing_predictions(run, entries)  # refuses half-written seeds
    if not entries:
        raise AvemoError(f"{run}: no predictions here; run `avemo train --run {run}` first")
    results: dict = {
        "run": str(run.resolve()),
        "metric": "global accuracy Nc/Nt on the test split (paper eq. 13, MediaEval 2015)",
        "bootstrap": {"resamples": resamples, "seed": seed, "interval": "95% percentile, test clips resampled"},
        "mcnemar": "chi-square with continuity correction; exact binomial p-value when fewer than 25 clips differ",
        "alpha": ALPHA,
        "missing_predictions": missing,  # configurations run.json lists without any predictions.csv
        "tasks": {},
    }
    clips: dict[str, tuple[list[str], list[list[int]]]] = {}  # task → test clip ids, predictions per entry
    for task in TASKS:
        having = [e for e in entries if task in e.labels]
        if having:
            results["tasks"][task], clips[task] = score_task(task, having, run, resamples, seed)
    arousal = results["tasks"]["arousal"]
    # the arousal summary at the top level, as before (scripts read these keys)
    results["approaches"] = arousal["groups"]
    for key in ("test_clips", "test_counts", "majority_class", "majority_accuracy"):
        results[key] = arousal[key]
    files = write_outputs(run, results, clips, plots)
    results["files"] = {k: [str(p) for p in v] for k, v in files.items()}
    write_json(run / "results.json", results)
    if not quiet:
        print(terminal_text(results, files))
    return results


def score_task(
    task: str, entries: list[Predictions], run: Path, resamples: int, seed: int
) -> tuple[dict, tuple[list[str], list[list[int]]]]:
    """Metrics, groups (mean ± std over seeds) and paired tests for one task (arousal or valence); also the
    test clip ids and each entry's predictions for them (for the run files)."""
    names = CLASS_NAMES[task]
    ref = entries[0]
    known = ref.labels[task] != UNKNOWN
    test = (ref.split == "test") & known
    if not test.any():
        raise AvemoError(f"{ref.path}: no test clips with a {task} label to score")
    train = (ref.split == "train") & known
    if not train.any():
        raise AvemoError(f"{ref.path}: no train clips with a {task} label, so no majority class")
    test_ids, true = ref.clip_ids[test], ref.labels[task][test]
    majority_label = majority_class(ref.labels[task][train])
    constant = np.full(len(true), majority_label)
    predicted = [_aligned(e, task, test_ids, true, ref) for e in entries]
    modal = {e.seed: p for e, p in zip(entries, predicted) if e.approach == "modal" and not e.variant}

    out_entries = []
    for e, pred in zip(entries, predicted):
        record = {
            "name": e.name,
            "approach": e.approach,
            "variant": e.variant,
            "seed": e.seed,
            "lstm_hidden": e.lstm_hidden,
            "predictions": _relative(e.path, run),
            **scores(true, pred, resamples, seed),
        }
        majority_acc = float((true == majority_label).mean())
        record["vs_majority_pts"] = 100 * (record["accuracy"] - majority_acc)
        record["mcnemar_vs_majority"] = mcnemar(true, pred, constant).as_dict()
        record["mcnemar_vs_modal"] = None
        if modal and not (e.approach == "modal" and not e.variant):
            modal_seed = e.seed if e.seed in modal else next(iter(modal))
            record["mcnemar_vs_modal"] = {**mcnemar(true, pred, modal[modal_seed]).as_dict(), "modal_seed": modal_seed}
        out_entries.append(record)

    train_labels = ref.labels[task][train]
    scored = {
        "classes": list(names),
        "labels": list(LABELS),
        "test_clips": int(len(true)),
        "test_counts": {n: int((true == label).sum()) for n, label in zip(names, LABELS)},
        "train_counts": {n: int((train_labels == label).sum()) for n, label in zip(names, LABELS)},
        "majority_class": names[to_index(majority_label)],
        "majority_label": majority_label,
        "majority_accuracy": float((true == majority_label).mean()),
        "majority": scores(true, constant, resamples, seed),
        "entries": out_entries,
        "groups": _groups(out_entries),
        "pairwise": _pairwise(entries, predicted, true),
    }
    return scored, (test_ids.tolist(), [p.tolist() for p in predicted])


def _aligned(e: Predictions, task: str, test_ids: np.ndarray, true: np.ndarray, ref: Predictions) -> np.ndarray:
    """e's predictions in the order of the reference's test clips; refuse files scored on other clips (or the
    same test clips among other train clips: another cache)."""
    mask = (e.split == "test") & (e.labels[task] != UNKNOWN)
    rows = {c: i for i, c in enumerate(e.clip_ids[mask])}
    if set(rows) != set(test_ids.tolist()):
        raise AvemoError(f"{e.path}: its test clips differ from those of {ref.path}; evaluate predictions of one cache")
    if e is not ref and dict(zip(e.clip_ids.tolist(), e.split.tolist())) != dict(zip(ref.clip_ids.tolist(), ref.split.tolist())):
        raise AvemoError(
            f"{e.path}: its clips (or their splits) differ from those of {ref.path}; evaluate predictions of one cache"
        )
    index = np.array([rows[c] for c in test_ids.tolist()], np.int64)
    if not np.array_equal(e.labels[task][mask][index], true):
        raise AvemoError(f"{e.path}: its true {task} labels differ from those of {ref.path}")
    return e.predicted[task][mask][index]


def _groups(entries: list[dict]) -> dict[str, dict]:
    """One group per approach[-variant]: the single seed's values, or mean ± std over several seeds."""
    by_name: dict[str, list[dict]] = defaultdict(list)
    for e in entries:
        by_name[e["name"]].append(e)
    groups = {}
    for name, members in by_name.items():
        first = members[0]
        group = {
            "approach": first["approach"],
            "variant": first["variant"],
            "title": TITLES[first["approach"]] + (f" ({first['variant']})" if first["variant"] else ""),
            "lstm_hidden": first["lstm_hidden"],
            "seeds": [m["seed"] for m in members],
            "n_seeds": len(members),
            "ci95": first["ci95"] if len(members) == 1 else None,
        }
        for key in ("accuracy", "balanced_accuracy", "macro_f1", "vs_majority_pts"):
            values = np.array([m[key] for m in members], np.float64)
            group[key] = float(values.mean())
            group[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        for against in ("majority", "modal"):
            tests = [m[f"mcnemar_vs_{against}"] for m in members if m[f"mcnemar_vs_{against}"] is not None]
            group[f"significant_vs_{against}"] = sum(t["p_value"] < ALPHA for t in tests) if tests else None
            group[f"p_vs_{against}"] = tests[0]["p_value"] if len(tests) == 1 else None
        groups[name] = group
    return groups


def _pairwise(entries: list[Predictions], predicted: list[np.ndarray], true: np.ndarray) -> list[dict]:
    """McNemar between every two default-variant approaches, on the same seed where both have it."""
    first: dict[str, tuple[Predictions, np.ndarray]] = {}
    by_seed: dict[tuple[str, int | None], np.ndarray] = {}
    for e, p in zip(entries, predicted):
        if not e.variant:
            first.setdefault(e.approach, (e, p))
            by_seed[(e.approach, e.seed)] = p
    names = list(first)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            seed = first[a][0].seed
            pb = by_seed.get((b, seed), first[b][1])
            pa = first[a][1]
            test = mcnemar(true, pa, pb).as_dict()
            accuracy_a, accuracy_b = float((pa == true).mean()), float((pb == true).mean())
            out.append(
                {"approach_a": a, "approach_b": b, "accuracy_a": accuracy_a, "accuracy_b": accuracy_b,
                 "difference_pts": 100 * (accuracy_a - accuracy_b), **test}
            )  # fmt: skip
    return out


def _relative(path: Path, run: Path) -> str:
    try:
        return str(path.relative_to(run))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- outputs


def write_outputs(
    run: Path, results: dict, clips: dict[str, tuple[list[str], list[list[int]]]], plots: bool
) -> dict[str, list[Path]]:
    """results.csv (per task), run files, plots and report.md; returns the paths by kind."""
    files: dict[str, list[Path]] = {"tables": [], "plots": [], "run_files": []}
    for task, scored in results["tasks"].items():
        path = run / ("results.csv" if task == "arousal" else f"results-{task}.csv")
        write_csv(path, task, scored)
        files["tables"].append(path)
        files["run_files"] += write_run_files(run / "mediaeval", task, scored, *clips[task])
        if plots:
            files["plots"] += write_plots(run / "plots", task, scored)
    report = run / "report.md"
    files["tables"] = [run / "results.json", *files["tables"], report]  # results.json is written last, by evaluate
    write_text(report, report_markdown(results, files, run))
    return files


def _file_tag(entry: dict, n_seeds: int) -> str:
    return entry["name"] + (f"-seed{entry['seed']}" if n_seeds > 1 else "")


def write_csv(path: Path, task: str, scored: dict) -> None:
    names = scored["classes"]
    columns = [
        "task", "approach", "variant", "seed", "lstm_hidden", "n_test", "accuracy", "ci95_low", "ci95_high",
        "vs_majority_pts", "balanced_accuracy", "macro_f1",
        *(f"precision_{n}" for n in names), *(f"recall_{n}" for n in names),
        "mcnemar_p_vs_majority", "significant_vs_majority", "mcnemar_p_vs_modal", "significant_vs_modal", "predictions",
    ]  # fmt: skip

    def row(name: str, e: dict, seed, lstm_hidden, vs_majority, predictions: str) -> dict:
        out = {
            "task": task, "approach": name, "variant": e.get("variant", ""), "seed": "" if seed is None else seed,
            "lstm_hidden": "" if lstm_hidden is None else lstm_hidden, "n_test": e["n"],
            "accuracy": f"{e['accuracy']:.6f}", "ci95_low": f"{e['ci95'][0]:.6f}", "ci95_high": f"{e['ci95'][1]:.6f}",
            "vs_majority_pts": f"{vs_majority:.4f}", "balanced_accuracy": f"{e['balanced_accuracy']:.6f}",
            "macro_f1": f"{e['macro_f1']:.6f}", "predictions": predictions,
        }  # fmt: skip
        for n, label in zip(names, LABELS):
            for kind in ("precision", "recall"):
                value = e[kind][str(label)]
                out[f"{kind}_{n}"] = "" if value is None else f"{value:.6f}"
        for against in ("majority", "modal"):
            test = e.get(f"mcnemar_vs_{against}")
            out[f"mcnemar_p_vs_{against}"] = "" if test is None else f"{test['p_value']:.6g}"
            out[f"significant_vs_{against}"] = "" if test is None else str(test["p_value"] < ALPHA).lower()
        return out

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for e in scored["entries"]:
        writer.writerow(row(e["approach"], e, e["seed"], e["lstm_hidden"], e["vs_majority_pts"], e["predictions"]))
    majority = f"majority ({scored['majority_class']})"
    writer.writerow(row(majority, {**scored["majority"], "variant": ""}, None, None, 0.0, ""))
    write_text(path, text.getvalue())


def write_run_files(folder: Path, task: str, scored: dict, ids: list[str], predictions: list[list[int]]) -> list[Path]:
    """MediaEval-style run files (see the module docstring), one per entry."""
    ensure_dir(folder)
    stems = [PurePosixPath(c.replace("\\", "/")).stem for c in ids]
    if len(set(stems)) < len(stems):  # two clips share a file name: keep their folders
        stems = [str(PurePosixPath(c.replace("\\", "/")).with_suffix("")) for c in ids]
    counts = {name: g["n_seeds"] for name, g in scored["groups"].items()}
    paths = []
    for e, predicted in zip(scored["entries"], predictions):
        path = folder / f"{task}-{_file_tag(e, counts[e['name']])}.txt"
        write_text(path, "".join(f"{s} {p}\n" for s, p in zip(stems, predicted)))
        paths.append(path)
    return paths


def write_plots(folder: Path, task: str, scored: dict) -> list[Path]:
    from avemo.evaluate.plots import confusion_png, lstm_sweep_png

    ensure_dir(folder)
    counts = {name: g["n_seeds"] for name, g in scored["groups"].items()}
    paths = []
    for e in scored["entries"]:
        title = scored["groups"][e["name"]]["title"] + (f", seed {e['seed']}" if counts[e["name"]] > 1 else "")
        low, high = e["ci95"]
        subtitle = (
            f"{task} accuracy {100 * e['accuracy']:.2f}% (95% CI {100 * low:.1f}–{100 * high:.1f}) on {e['n']} test clips\n"
            f"always '{scored['majority_class']}' (majority class): {100 * scored['majority_accuracy']:.2f}%"
        )
        path = folder / f"confusion-{task}-{_file_tag(e, counts[e['name']])}.png"
        paths.append(confusion_png(path, np.array(e["confusion"]), tuple(scored["classes"]), title, subtitle))
    sweep: dict[int, list[float]] = defaultdict(list)
    for e in scored["entries"]:
        if e["approach"] == "modal" and e["lstm_hidden"] is not None:
            sweep[int(e["lstm_hidden"])].append(e["accuracy"])
    if len(sweep) >= 2:
        path = folder / f"fig2-lstm-hidden-{task}.png"
        paths.append(lstm_sweep_png(path, list(sweep.items()), scored["majority_accuracy"], task))
    return paths


# ---------------------------------------------------------------- text


def _pct(value: float | None, std: float | None = None, digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.{digits}f}" + ("" if std is None else f" ± {100 * std:.{digits}f}")


def _significance(group: dict, against: str) -> str:
    count = group[f"significant_vs_{against}"]
    if count is None:
        return "—"
    if group["n_seeds"] > 1:
        return f"{count}/{group['n_seeds']} seeds"
    p = group[f"p_vs_{against}"]
    return f"{'yes' if count else 'no'} (p{_p(p)})"


def _p(p: float) -> str:
    """' < 0.001' or '=0.123', to follow 'p'."""
    return " < 0.001" if p < 0.001 else f"={p:.3f}"


def table(results: dict, task: str = "arousal") -> str:
    """Table 1 in the paper's layout (approach → accuracy) with the columns that say what it means."""
    scored = results["tasks"][task]
    counts = ", ".join(f"{n} {c}" for n, c in scored["test_counts"].items())
    paper = task == "arousal"
    head = (
        f"| Approach | {task.capitalize()} accuracy (%) | 95% CI (%) | vs. majority (pts) | Significant vs. majority? "
        "| Significant vs. modal fusion? | Balanced accuracy (%) | Macro-F1 (%) |" + (" Paper (%) |" if paper else "")
    )
    lines = [
        f"Test split: {scored['test_clips']} clips ({counts}). Metric: global accuracy Nc/Nt (paper eq. 13).",
        "",
        head,
        "|---|---:|---:|---:|:---:|:---:|---:|---:|" + ("---:|" if paper else ""),
    ]
    for g in scored["groups"].values():
        n = f" (n={g['n_seeds']} seeds)" if g["n_seeds"] > 1 else ""
        ci = "—" if g["ci95"] is None else f"{100 * g['ci95'][0]:.1f}–{100 * g['ci95'][1]:.1f}"
        cells = [
            g["title"],
            _pct(g["accuracy"], g["accuracy_std"]) + n,
            ci,
            f"{g['vs_majority_pts']:+.2f}" + ("" if g["vs_majority_pts_std"] is None else f" ± {g['vs_majority_pts_std']:.2f}"),
            _significance(g, "majority"),
            _significance(g, "modal"),
            _pct(g["balanced_accuracy"], g["balanced_accuracy_std"]),
            _pct(g["macro_f1"], g["macro_f1_std"]),
        ]
        if paper:
            value = PAPER_TABLE1.get(g["approach"])
            cells.append(f"{value:.2f}" if value is not None and not g["variant"] else "")
        lines.append("| " + " | ".join(cells) + " |")
    m = scored["majority"]
    cells = [
        f"Majority class (always '{scored['majority_class']}', from train)",
        _pct(m["accuracy"]),
        f"{100 * m['ci95'][0]:.1f}–{100 * m['ci95'][1]:.1f}",
        "0.00",
        "—",
        "—",
        _pct(m["balanced_accuracy"]),
        _pct(m["macro_f1"]),
    ]
    if paper:
        cells.append(f"{MEDIAEVAL_MAJORITY:.2f}")
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def legend(results: dict, task: str = "arousal") -> list[str]:
    """What the columns mean, one short line each."""
    b = results["bootstrap"]
    lines = [
        f"95% CI: percentile bootstrap over the test clips ({b['resamples']} resamples, seed {b['seed']}).",
        f"Significant: McNemar's paired test on the same test clips, p < {ALPHA} (exact binomial when fewer than 25 "
        "clips differ, else chi-square with continuity correction); 'no' means the difference may be chance.",
        "Balanced accuracy: mean recall over the classes (always answering one class gives 33.33).",
    ]
    if task == "arousal":
        lines.append(
            "Paper: its Table 1 on MediaEval 2015 (majority row: always 'calm' on that test split); other data, for scale."
        )
    if any(g["n_seeds"] > 1 for g in results["tasks"][task]["groups"].values()):
        lines.append("Rows with several seeds: mean ± std over the seeds; per-seed intervals and tests are in results.csv.")
    return lines


def _missing_line(results: dict) -> str:
    """One line naming the configurations RUN/run.json lists that have no predictions at all ('' if none)."""
    missing = results.get("missing_predictions") or []
    if not missing:
        return ""
    return (
        f"Not scored: {', '.join(missing)}: RUN/run.json lists {'it' if len(missing) == 1 else 'them'}, but no "
        "predictions.csv exists (not trained yet, or its training failed)."
    )


def report_markdown(results: dict, files: dict[str, list[Path]], run: Path) -> str:
    parts = [f"# Evaluation of `{run}`\n"]
    if _missing_line(results):
        parts.append(f"**{_missing_line(results)}**\n")
    for task, scored in results["tasks"].items():
        parts += [f"## Table 1 — {task}, test split\n", table(results, task), ""]
        parts += [f"- {line}" for line in legend(results, task)] + [""]
        names = scored["classes"]
        parts += [
            f"### Per class ({task})\n",
            "| Approach | Seed | " + " | ".join(f"Precision {n} (%)" for n in names) + " | "
            + " | ".join(f"Recall {n} (%)" for n in names) + " |",
            "|---|---:|" + "---:|" * (2 * len(names)),
        ]  # fmt: skip
        rows = [(scored["groups"][e["name"]]["title"], e) for e in scored["entries"]]
        rows.append((f"Majority class ('{scored['majority_class']}')", {**scored["majority"], "seed": None}))
        for title, e in rows:
            cells = [_pct(e["precision"][str(label)], digits=1) for label in LABELS]
            cells += [_pct(e["recall"][str(label)], digits=1) for label in LABELS]
            parts.append(f"| {title} | {'' if e['seed'] is None else e['seed']} | " + " | ".join(cells) + " |")
        parts.append("\n'—': the class was never predicted, so its precision is undefined.\n")
        if scored["pairwise"]:
            parts += [
                f"### Paired tests between approaches ({task}, McNemar, same test clips)\n",
                "| A | B | A (%) | B (%) | A − B (pts) | A right, B wrong | A wrong, B right | p | Significant? |",
                "|---|---|---:|---:|---:|---:|---:|---:|:---:|",
            ]
            for t in scored["pairwise"]:
                cells = [
                    TITLES[t["approach_a"]],
                    TITLES[t["approach_b"]],
                    f"{100 * t['accuracy_a']:.2f}",
                    f"{100 * t['accuracy_b']:.2f}",
                    f"{t['difference_pts']:+.2f}",
                    str(t["b"]),
                    str(t["c"]),
                    _p(t["p_value"]).lstrip(" ="),
                    "yes" if t["p_value"] < ALPHA else "no",
                ]
                parts.append("| " + " | ".join(cells) + " |")
            parts.append("")
    plots = files["plots"]
    if plots:
        parts.append("## Figures\n")
        parts += [f"![{p.stem}]({_relative(p, run)})\n" for p in plots]
    if not any(p.name.startswith("fig2-") for p in plots):
        parts.append(
            "Fig. 2 (accuracy against LSTM hidden units) is drawn when the run holds modal-fusion results with "
            "several LSTM sizes, e.g. `RUN/modal-lstm64/` (see avemo/evaluate/runs.py); this run has one size.\n"
        )
    parts.append("## Files\n")
    parts += [f"- `{_relative(p, run)}`" for p in files["tables"] + files["run_files"]]
    return "\n".join(parts) + "\n"


def terminal_text(results: dict, files: dict[str, list[Path]]) -> str:
    out = [f"warning: {_missing_line(results)}", ""] if _missing_line(results) else []
    for task in results["tasks"]:
        out += [f"{task.capitalize()}:", table(results, task), "", *legend(results, task), ""]
    out.append("Results: " + ", ".join(str(p) for p in files["tables"]))
    out.append(f"MediaEval run files: {files['run_files'][0].parent}/ ({len(files['run_files'])} files)")
    if files["plots"]:
        out.append("Plots:")
        out += [f"  {p}" for p in files["plots"]]
    return "\n".join(out)
