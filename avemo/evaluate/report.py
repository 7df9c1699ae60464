"""`avemo evaluate --run DIR`: what the run's test predictions are worth, next to the majority-class baseline.

avemo.evaluate.score scores every RUN/<approach>[-<variant>][/seed-<n>]/predictions.csv (read through
avemo.runfolder; layout: docs/run-format.md) on the test split, arousal and valence when the files hold it:

- global accuracy Nc/Nt (the official MediaEval 2015 metric, paper eq. 13) with a 95% bootstrap interval;
- the majority-class accuracy (class taken from the train split) and each approach's difference to it;
- balanced accuracy, macro-F1, per-class precision and recall, the confusion matrix;
- McNemar's paired test on the same clips against the majority baseline, against modal fusion (same seed),
  and between every two approaches;
- with several seeds of one configuration: mean ± sample std (ddof 1) over the seeds;
- the modality weights α of each model (modal fusion's learned α_a, α_v from its model.pt; late fusion's 0.56).

Writes, in RUN:

    results.json                  everything, machine-readable ("tasks" → arousal/valence → entries, groups, pairwise),
                                  scores as fractions (its "units" says which key has which unit)
    results.csv                   arousal: one row per approach × seed, plus the majority baseline; scores in
                                  percent (`_pct`), differences in points (`_pts`)
    results-valence.csv           the same for valence, when scored
    report.md                     Table 1 in the paper's layout with the readable columns (the paper's numbers only
                                  on MediaEval 2015's test set), α, per-class scores, paired tests, each model's
                                  files, the figures; every link relative to RUN, to a file of the run
    plots/confusion-<task>-<name>[-seed<n>].png
    plots/learning-<task>-<name>[-seed<n>].png   train and validation loss per epoch, the selected epoch marked
    plots/fig2-lstm-hidden-<task>.png   only when modal runs with several LSTM sizes are present (paper Fig. 2)
    mediaeval/<task>-<name>[-seed<n>].txt   run files: one test clip per line, `<clip> <class>`, e.g.
                                  `ACCEDE00001 1` (clip = file name without extension, or the whole id
                                  without extension when two test clips share a file name; class -1/0/1)

and prints the table, the file paths and the plot paths. This module only renders (the scores are
avemo.evaluate.score's typed results). Every file is written atomically and never through a
symbolic link (avemo.atomic): a run folder from someone else cannot make evaluate overwrite another file.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np

from avemo.approaches import PAPER_TABLE1, TITLES
from avemo.atomic import ensure_dir, write_json, write_text
from avemo.evaluate.metrics import LABELS, McNemar, Scores
from avemo.evaluate.score import ALPHA, Entry, Evaluation, Group, TaskScores, relative, score_run
from avemo.evaluate.training import Alpha, model_files, read_curves

MEDIAEVAL_MAJORITY = 55.55  # always "calm" on the MediaEval 2015 arousal test split (4,756 clips)
Files = dict[str, list[Path]]  # "tables", "plots", "run_files" → the paths written


def evaluate(run: str | Path, resamples: int = 1000, seed: int = 0, plots: bool = True, quiet: bool = False) -> dict:
    """Score every predictions file of `run`, write the outputs listed in the module docstring, print the table;
    returns the content of results.json."""
    run = Path(run)
    evaluation = score_run(run, resamples, seed)
    files = write_outputs(run, evaluation, plots)
    results = evaluation.as_dict(files)
    write_json(run / "results.json", results)
    if not quiet:
        print(terminal_text(evaluation, files))
    return results


def write_outputs(run: Path, evaluation: Evaluation, plots: bool) -> Files:
    """results.csv (per task), run files, plots and report.md; returns the paths by kind."""
    files: Files = {"tables": [], "plots": [], "run_files": []}
    for task, scored in evaluation.tasks.items():
        path = run / ("results.csv" if task == "arousal" else f"results-{task}.csv")
        write_csv(path, scored)
        files["tables"].append(path)
        files["run_files"] += write_run_files(run / "mediaeval", scored)
        if plots:
            files["plots"] += write_plots(run / "plots", scored)
    report = run / "report.md"
    files["tables"] = [run / "results.json", *files["tables"], report]  # results.json is written last, by evaluate
    write_text(report, report_markdown(evaluation, files))
    return files


# ---------------------------------------------------------------- files


def _file_tag(scored: TaskScores, entry: Entry) -> str:
    """approach[-variant], with -seed<n> when its configuration has several seeds."""
    return entry.name + (f"-seed{entry.seed}" if scored.groups[entry.name].n_seeds > 1 else "")


CSV_COLUMNS = (
    "task", "approach", "variant", "seed", "lstm_hidden", "n_test", "accuracy_pct", "ci95_low_pct", "ci95_high_pct",
    "vs_majority_pts", "balanced_accuracy_pct", "macro_f1_pct",
)  # fmt: skip


def write_csv(path: Path, scored: TaskScores) -> None:
    """One row per entry (approach × seed), then the majority baseline. One unit per quantity: every score in
    percent (`_pct`, 0–100), differences in percentage points (`_pts`), p-values as probabilities, α as weights."""
    names = scored.classes
    columns = [
        *CSV_COLUMNS, *(f"precision_{n}_pct" for n in names), *(f"recall_{n}_pct" for n in names),
        "mcnemar_p_vs_majority", "significant_vs_majority", "mcnemar_p_vs_modal", "significant_vs_modal",
        "alpha_audio", "alpha_visual", "alpha_learned", "predictions",
    ]  # fmt: skip
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for e in scored.entries:
        where = {"approach": e.approach, "variant": e.variant, "seed": e.seed, "lstm_hidden": e.lstm_hidden}
        tests = {"majority": e.vs_majority, "modal": e.vs_modal}
        row = _csv_row(scored, where | {"predictions": e.predictions}, e.scores, e.vs_majority_pts, tests)
        writer.writerow(row | _csv_alpha(e.alpha))
    where = {"approach": f"majority ({scored.majority_class})", "variant": "", "seed": None, "lstm_hidden": None}
    row = _csv_row(scored, where | {"predictions": ""}, scored.majority, 0.0, {"majority": None, "modal": None})
    writer.writerow(row | _csv_alpha(None))
    write_text(path, text.getvalue())


def _csv_row(scored: TaskScores, where: dict, s: Scores, vs_majority: float, tests: dict[str, McNemar | None]) -> dict:
    out = {
        "task": scored.task, "approach": where["approach"], "variant": where["variant"],
        "seed": _blank(where["seed"]), "lstm_hidden": _blank(where["lstm_hidden"]), "n_test": s.n,
        "accuracy_pct": _csv_pct(s.accuracy), "ci95_low_pct": _csv_pct(s.ci95[0]), "ci95_high_pct": _csv_pct(s.ci95[1]),
        "vs_majority_pts": f"{vs_majority:.4f}", "balanced_accuracy_pct": _csv_pct(s.balanced_accuracy),
        "macro_f1_pct": _csv_pct(s.macro_f1), "predictions": where["predictions"],
    }  # fmt: skip
    for n, label in zip(scored.classes, LABELS):
        for kind in ("precision", "recall"):
            out[f"{kind}_{n}_pct"] = _csv_pct(getattr(s, kind)[str(label)])
    for against, test in tests.items():
        out[f"mcnemar_p_vs_{against}"] = "" if test is None else f"{test.p_value:.6g}"
        out[f"significant_vs_{against}"] = "" if test is None else str(test.p_value < ALPHA).lower()
    return out


def _csv_pct(fraction: float | None) -> str:
    """A fraction as percent with 4 decimals (the precision of the 6-decimal fraction); '' when undefined."""
    return "" if fraction is None else f"{100 * fraction:.4f}"


def _csv_alpha(alpha: Alpha | None) -> dict:
    if alpha is None:
        return {"alpha_audio": "", "alpha_visual": "", "alpha_learned": ""}
    return {
        "alpha_audio": f"{alpha.audio:.6f}",
        "alpha_visual": f"{alpha.visual:.6f}",
        "alpha_learned": str(alpha.learned).lower(),
    }


def _blank(value: object) -> object:
    return "" if value is None else value


def write_run_files(folder: Path, scored: TaskScores) -> list[Path]:
    """MediaEval-style run files (see the module docstring), one per entry."""
    ensure_dir(folder)
    ids = scored.test_ids
    stems = [PurePosixPath(c.replace("\\", "/")).stem for c in ids]
    if len(set(stems)) < len(stems):  # two clips share a file name: keep their folders
        stems = [str(PurePosixPath(c.replace("\\", "/")).with_suffix("")) for c in ids]
    paths = []
    for e in scored.entries:
        path = folder / f"{scored.task}-{_file_tag(scored, e)}.txt"
        write_text(path, "".join(f"{s} {p}\n" for s, p in zip(stems, e.predicted.tolist())))
        paths.append(path)
    return paths


def write_plots(folder: Path, scored: TaskScores) -> list[Path]:
    """A confusion matrix and a learning curve (where its model has a log.csv) per entry; the paper's Fig. 2
    when modal fusion has two LSTM sizes or more."""
    from avemo.evaluate.plots import confusion_png, learning_png, lstm_sweep_png  # matplotlib: only when plotting

    ensure_dir(folder)
    task, paths = scored.task, []
    for e in scored.entries:
        group = scored.groups[e.name]
        title = group.title + (f", seed {e.seed}" if group.n_seeds > 1 else "")
        (low, high), s = e.scores.ci95, e.scores
        subtitle = (
            f"{task} accuracy {100 * s.accuracy:.2f}% (95% CI {100 * low:.1f}–{100 * high:.1f}) on {s.n} test clips\n"
            f"always '{scored.majority_class}' (majority class): {100 * scored.majority_accuracy:.2f}%"
        )
        path = folder / f"confusion-{task}-{_file_tag(scored, e)}.png"
        paths.append(confusion_png(path, np.array(s.confusion), tuple(scored.classes), title, subtitle))
        curves = read_curves(e.folder, e.approach)
        if curves:
            path = folder / f"learning-{task}-{_file_tag(scored, e)}.png"
            paths.append(learning_png(path, curves, f"{title}: learning curve ({task})"))
    sweep: dict[int, list[float]] = defaultdict(list)
    for e in scored.entries:
        if e.approach == "modal" and e.lstm_hidden is not None:
            sweep[int(e.lstm_hidden)].append(e.scores.accuracy)
    if len(sweep) >= 2:
        path = folder / f"fig2-lstm-hidden-{task}.png"
        paths.append(lstm_sweep_png(path, list(sweep.items()), scored.majority_accuracy, task))
    return paths


# ---------------------------------------------------------------- text


def _pct(value: float | None, std: float | None = None, digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.{digits}f}" + ("" if std is None else f" ± {100 * std:.{digits}f}")


def _significance(group: Group, against: str) -> str:
    tests = group.vs_majority if against == "majority" else group.vs_modal
    if tests.count is None:
        return "—"
    if group.n_seeds > 1:
        return f"{tests.count}/{group.n_seeds} seeds"
    return f"{'yes' if tests.count else 'no'} (p{_p(tests.p_value)})"


def _p(p: float) -> str:
    """' < 0.001' or '=0.123', to follow 'p'."""
    return " < 0.001" if p < 0.001 else f"={p:.3f}"


def _ci(ci95: tuple[float, float] | None) -> str:
    return "—" if ci95 is None else f"{100 * ci95[0]:.1f}–{100 * ci95[1]:.1f}"


def table(evaluation: Evaluation, task: str = "arousal") -> str:
    """Table 1 in the paper's layout (approach → accuracy) with the columns that say what it means."""
    scored = evaluation.tasks[task]
    counts = ", ".join(f"{n} {c}" for n, c in scored.test_counts.items())
    paper = _paper_column(scored)
    head = (
        f"| Approach | {task.capitalize()} accuracy (%) | 95% CI (%) | vs. majority (pts) | Significant vs. majority? "
        "| Significant vs. modal fusion? | Balanced accuracy (%) | Macro-F1 (%) |" + (" Paper (%) |" if paper else "")
    )
    lines = [
        f"Test split: {scored.test_clips} clips ({counts}). Metric: global accuracy Nc/Nt (paper eq. 13).",
        "",
        head,
        "|---|---:|---:|---:|:---:|:---:|---:|---:|" + ("---:|" if paper else ""),
    ]
    lines += [_group_row(g, paper) for g in scored.groups.values()]
    m = scored.majority
    cells = [
        f"Majority class (always '{scored.majority_class}', from train)",
        _pct(m.accuracy), _ci(m.ci95), "0.00", "—", "—", _pct(m.balanced_accuracy), _pct(m.macro_f1),
    ]  # fmt: skip
    if paper:
        cells.append(f"{MEDIAEVAL_MAJORITY:.2f}")
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _paper_column(scored: TaskScores) -> bool:
    """The paper's Table 1 (arousal on MediaEval 2015) is shown only beside arousal scored on that test set."""
    return scored.task == "arousal" and scored.mediaeval2015


def _group_row(g: Group, paper: bool) -> str:
    """One row of Table 1; with several seeds, mean ± std."""
    n = f" (n={g.n_seeds} seeds)" if g.n_seeds > 1 else ""
    vs = g.vs_majority_pts
    cells = [
        g.title,
        _pct(g.accuracy.mean, g.accuracy.std) + n,
        _ci(g.ci95),
        f"{vs.mean:+.2f}" + ("" if vs.std is None else f" ± {vs.std:.2f}"),
        _significance(g, "majority"),
        _significance(g, "modal"),
        _pct(g.balanced_accuracy.mean, g.balanced_accuracy.std),
        _pct(g.macro_f1.mean, g.macro_f1.std),
    ]
    if paper:
        value = PAPER_TABLE1.get(g.approach)
        cells.append(f"{value:.2f}" if value is not None and not g.variant else "")
    return "| " + " | ".join(cells) + " |"


def legend(evaluation: Evaluation, task: str = "arousal") -> list[str]:
    """What the columns mean, one short line each."""
    lines = [
        f"95% CI: percentile bootstrap over the test clips ({evaluation.resamples} resamples, seed {evaluation.seed}).",
        f"Significant: McNemar's paired test on the same test clips, p < {ALPHA} (exact binomial when fewer than 25 "
        "clips differ, else chi-square with continuity correction); 'no' means the difference may be chance.",
        "Balanced accuracy: mean recall over the classes (always answering one class gives 33.33).",
    ]
    if _paper_column(evaluation.tasks[task]):
        lines.append("Paper: its Table 1, on this test set (MediaEval 2015, 4,756 clips); majority row: always 'calm' on it.")
    if any(g.n_seeds > 1 for g in evaluation.tasks[task].groups.values()):
        lines.append("Rows with several seeds: mean ± std over the seeds; per-seed intervals and tests are in results.csv.")
    return lines


def _missing_line(evaluation: Evaluation) -> str:
    """One line naming the configurations RUN/run.json lists that have no predictions at all ('' if none)."""
    missing = evaluation.missing
    if not missing:
        return ""
    return (
        f"Not scored: {', '.join(missing)}: RUN/run.json lists {'it' if len(missing) == 1 else 'them'}, but no "
        "predictions.csv exists (not trained yet, or its training failed)."
    )


def report_markdown(evaluation: Evaluation, files: Files) -> str:
    """report.md: per task, Table 1, its legend, α, per-class scores, paired tests and each model's files; then
    the figures and the files of the evaluation. Every link is relative, to a file of the run."""
    run = evaluation.run
    parts = [f"# Evaluation of `{run}`\n"]
    if _missing_line(evaluation):
        parts.append(f"**{_missing_line(evaluation)}**\n")
    for task, scored in evaluation.tasks.items():
        parts += [f"## Table 1 — {task}, test split\n", table(evaluation, task), ""]
        parts += [f"- {line}" for line in legend(evaluation, task)] + [""]
        parts += _alpha_table(scored) + _per_class(scored) + _paired(scored) + _model_files(scored, files, run)
    plots = files["plots"]
    if plots:
        parts.append("## Figures\n")
        parts += [f"![{p.stem}]({relative(p, run)})\n" for p in plots]
    if not any(p.name.startswith("fig2-") for p in plots):
        parts.append(
            "Fig. 2 (accuracy against LSTM hidden units) is drawn when the run holds modal-fusion results with "
            "several LSTM sizes (`avemo train --lstm-hidden 64,128,256,512`); this run has one size.\n"
        )
    parts.append("## Files\n")
    parts += [_link(relative(p, run)) for p in files["tables"]]
    if files["run_files"]:
        parts.append(f"- MediaEval run files, one per model: [{relative(files['run_files'][0].parent, run)}/](mediaeval)")
    return "\n".join(parts) + "\n"


def _link(target: str, label: str | None = None) -> str:
    """A markdown list item linking a file of the run (relative to RUN, so the report works wherever RUN is)."""
    return f"- [{label or target}]({target})"


# ---------------------------------------------------------------- α (modality weights)


def _alpha_groups(scored: TaskScores) -> list[tuple[Group, list[Entry]]]:
    """The groups whose model weighs audio against video (modal fusion, a joint pass of a modal head, late
    fusion), with their entries."""
    out = []
    for name, g in scored.groups.items():
        if g.alpha_seeds or g.approach == "modal":
            out.append((g, [e for e in scored.entries if e.name == name]))
    return out


def _weights(g: Group) -> tuple[str, str]:
    """α_a and α_v of a group (mean ± std over seeds), '—' when unknown; late fusion's constant as it is."""

    def text(spread) -> str:
        if spread is None:
            return "—"
        if g.approach == "late":
            return f"{spread.mean:.2f}"
        return f"{spread.mean:.4f}" + ("" if spread.std is None else f" ± {spread.std:.4f}")

    return text(g.alpha_audio), text(g.alpha_visual)


def _alpha_how(g: Group, entries: list[Entry]) -> str:
    """How a group's α was set, in words."""
    known = [e.alpha for e in entries if e.alpha is not None]
    if not known:
        return "unknown: no model.pt beside its predictions.csv"
    if g.approach == "late":
        how = "fixed by the paper (eq. 14: p = α·p_a + (1 − α)·p_v, α = 0.56)"
    elif g.alpha_learned is None:
        how = "learned in some seeds, fixed in others"
    else:
        start = known[0].start
        started = "" if start is None else f" from α_a {start[0]:.2f}, α_v {start[1]:.2f}"
        if g.approach == "joint":
            started = " from the trained modal head's, tuned end to end"
        how = (f"learned with the head{started} (paper eq. 3)" if g.alpha_learned else
               f"fixed{started} (not learned: `learn_alpha` false)")  # fmt: skip
    missing = g.n_seeds - len(known)
    return how + (f"; {missing} of {g.n_seeds} seeds have no model.pt" if missing else "")


def _alpha_table(scored: TaskScores) -> list[str]:
    """report.md's table of the modality weights ([] when no model of the task has any)."""
    groups = _alpha_groups(scored)
    if not groups:
        return []
    parts = [
        f"### Modality weights α ({scored.task})\n",
        "| Approach | α_a (audio) | α_v (visual) | Seeds | How | Read from |",
        "|---|---:|---:|---:|---|---|",
    ]
    for g, entries in groups:
        sources = [(e.seed, e.alpha.source) for e in entries if e.alpha is not None and e.alpha.source.endswith(".pt")]
        read = ", ".join(f"[{'model.pt' if len(sources) == 1 else f'seed {seed}'}]({src})" for seed, src in sources)
        read = "a constant" if g.approach == "late" else read or "—"
        cells = [g.title, *_weights(g), str(g.n_seeds), _alpha_how(g, entries), read]
        parts.append("| " + " | ".join(cells) + " |")
    if all(g.approach == "late" for g, _ in groups):
        return [*parts, ""]
    note = (
        "α_a, α_v weigh the audio and visual terms of eq. 3 before the LSTM; nothing ties them to sum to 1 and the "
        "layers g(·) can absorb their scale, so compare α_a with α_v, not with late fusion's α."
    )
    return [*parts, "", note, ""]


def alpha_lines(scored: TaskScores) -> list[str]:
    """The terminal's lines on α, one per group that has one."""
    lines = []
    for g, entries in _alpha_groups(scored):
        audio, visual = _weights(g)
        lines.append(f"  {g.title}: α_a {audio}, α_v {visual}: {_alpha_how(g, entries)}")
    return ["Modality weights (α_a audio, α_v visual):", *lines] if lines else []


# ---------------------------------------------------------------- per model


def _per_class(scored: TaskScores) -> list[str]:
    """The per-class precision and recall table of report.md."""
    names = scored.classes
    parts = [
        f"### Per class ({scored.task})\n",
        "| Approach | Seed | " + " | ".join(f"Precision {n} (%)" for n in names) + " | "
        + " | ".join(f"Recall {n} (%)" for n in names) + " |",
        "|---|---:|" + "---:|" * (2 * len(names)),
    ]  # fmt: skip
    rows = [(scored.groups[e.name].title, e.seed, e.scores) for e in scored.entries]
    rows.append((f"Majority class ('{scored.majority_class}')", None, scored.majority))
    for title, seed, s in rows:
        cells = [_pct(s.precision[str(label)], digits=1) for label in LABELS]
        cells += [_pct(s.recall[str(label)], digits=1) for label in LABELS]
        parts.append(f"| {title} | {_blank(seed)} | " + " | ".join(cells) + " |")
    parts.append("\n'—': the class was never predicted, so its precision is undefined.\n")
    return parts


def _paired(scored: TaskScores) -> list[str]:
    """The table of McNemar's tests between approaches of report.md ([] with one approach)."""
    if not scored.pairwise:
        return []
    parts = [
        f"### Paired tests between approaches ({scored.task}, McNemar, same test clips)\n",
        "| A | B | A (%) | B (%) | A − B (pts) | A right, B wrong | A wrong, B right | p | Significant? |",
        "|---|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for t in scored.pairwise:
        cells = [
            TITLES[t.approach_a], TITLES[t.approach_b], f"{100 * t.accuracy_a:.2f}", f"{100 * t.accuracy_b:.2f}",
            f"{t.difference_pts:+.2f}", str(t.test.b), str(t.test.c), _p(t.test.p_value).lstrip(" ="),
            "yes" if t.test.p_value < ALPHA else "no",
        ]  # fmt: skip
        parts.append("| " + " | ".join(cells) + " |")
    return [*parts, ""]


def _model_files(scored: TaskScores, files: Files, run: Path) -> list[str]:
    """report.md's table of each model's files: its predictions, settings, training log, checkpoint (late fusion:
    those of its two classifiers too), its MediaEval run file and its plots, as links relative to RUN."""
    written = {relative(p, run) for paths in files.values() for p in paths}
    parts = [f"### Files of each model ({scored.task})\n", "| Approach | Seed | Files |", "|---|---:|---|"]
    for e in scored.entries:
        links = {"predictions.csv": e.predictions} | model_files(e.folder, run)
        if e.approach == "late":
            for part in ("visual", "audio"):
                links |= {f"{part} {name}": path for name, path in model_files(e.folder / part, run).items()}
        tag = f"{scored.task}-{_file_tag(scored, e)}"
        for label, path in (("run file", f"mediaeval/{tag}.txt"), ("confusion matrix", f"plots/confusion-{tag}.png"),
                            ("learning curve", f"plots/learning-{tag}.png")):  # fmt: skip
            if path in written:
                links[label] = path
        cells = ", ".join(f"[{label}]({path})" for label, path in links.items())
        parts.append(f"| {scored.groups[e.name].title} | {_blank(e.seed)} | {cells} |")
    return [*parts, ""]


def terminal_text(evaluation: Evaluation, files: Files) -> str:
    """What `avemo evaluate` prints: a missing-predictions warning, the tables, α, the files and the plots."""
    out = [f"warning: {_missing_line(evaluation)}", ""] if _missing_line(evaluation) else []
    for task, scored in evaluation.tasks.items():
        out += [f"{task.capitalize()}:", table(evaluation, task), "", *legend(evaluation, task), ""]
        out += [*alpha_lines(scored), ""] if alpha_lines(scored) else []
    out.append("Results: " + ", ".join(str(p) for p in files["tables"]))
    out.append(f"MediaEval run files: {files['run_files'][0].parent}/ ({len(files['run_files'])} files)")
    if files["plots"]:
        out.append("Plots:")
        out += [f"  {p}" for p in files["plots"]]
    return "\n".join(out)
