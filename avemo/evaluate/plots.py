"""PNG figures of a run: one confusion matrix and one learning curve per prediction set, and the paper's Fig. 2
when the run holds it.

matplotlib with the Agg backend (files only, no display). Each PNG is rendered in memory and written by
avemo.atomic (whole or not at all, never through a symbolic link).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
import numpy as np  # noqa: E402

from avemo.atomic import write_bytes  # noqa: E402


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes(path, buffer.getvalue())
    return path


def confusion_png(path: Path, matrix: np.ndarray, class_names: tuple[str, ...], title: str, subtitle: str) -> Path:
    """Counts and row-normalised percentages (share of each true class), rows = true, columns = predicted."""
    matrix = np.asarray(matrix)
    totals = matrix.sum(1, keepdims=True)
    share = np.divide(100 * matrix, totals, out=np.zeros(matrix.shape, np.float64), where=totals > 0)
    fig, ax = plt.subplots(figsize=(5.6, 4.8), dpi=120)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=100)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            dark = share[i, j] > 55
            ax.text(
                j, i, f"{matrix[i, j]}\n{share[i, j]:.1f}%", ha="center", va="center", fontsize=11,
                color="white" if dark else "black",
            )  # fmt: skip
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), [f"{n}\n(n={int(t)})" for n, t in zip(class_names, totals[:, 0])])
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class (test clips)")
    fig.suptitle(title, fontsize=12, fontweight="bold")
    ax.set_title(subtitle, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of the true class's clips")
    fig.tight_layout()
    return _save(fig, path)


def lstm_sweep_png(path: Path, points: list[tuple[int, list[float]]], majority: float, task: str = "arousal") -> Path:
    """Fig. 2: accuracy (%) against LSTM hidden units; per size the seeds (dots) and their mean ± std."""
    points = sorted(points)
    sizes = [size for size, _ in points]
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    for size, values in points:
        ax.scatter([size] * len(values), [100 * v for v in values], color="tab:blue", alpha=0.35, s=18, zorder=2)
    means = [100 * float(np.mean(v)) for _, v in points]
    stds = [100 * float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for _, v in points]
    ax.errorbar(sizes, means, yerr=stds, color="tab:blue", marker="o", capsize=4, label="mean ± std over seeds", zorder=3)
    ax.axhline(100 * majority, color="grey", linestyle="--", label=f"majority class ({100 * majority:.2f}%)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("LSTM hidden units")
    ax.set_ylabel(f"{task.capitalize()} accuracy on the test split (%)")
    n_seeds = max(len(v) for _, v in points)
    ax.set_title(f"Modal fusion: {task} accuracy vs. LSTM size (paper Fig. 2), up to {n_seeds} seed(s)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def learning_png(path: Path, curves: list, title: str) -> Path:
    """Train (solid) and validation (dashed) loss per epoch of each curve (avemo.evaluate.training.Curve; late
    fusion has two), the epoch its model.pt holds marked with a star and a dotted line."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    notes = []
    for curve, color in zip(curves, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        prefix = f"{curve.label}: " if curve.label else ""
        epochs = np.array(curve.epochs)
        train, validation = _values(curve.train_loss), _values(curve.validation_loss)
        if not np.isnan(train).all():
            ax.plot(epochs, train, color=color, marker=".", label=f"{prefix}train loss")
        if not np.isnan(validation).all():
            ax.plot(epochs, validation, color=color, marker=".", linestyle="--", label=f"{prefix}validation loss")
        else:
            notes.append(f"{prefix}no validation clips (the last epoch is kept)")
        if curve.selected is None or curve.selected not in curve.epochs:
            notes.append(f"{prefix}selected epoch unknown (no model.pt)")
            continue
        i = curve.epochs.index(curve.selected)
        y = validation[i] if not np.isnan(validation[i]) else train[i]
        ax.axvline(curve.selected, color=color, linestyle=":", alpha=0.6)
        ax.plot([curve.selected], [y], marker="*", markersize=15, color=color, linestyle="none",
                label=f"{prefix}selected epoch {curve.selected} (model.pt)")  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss (cross-entropy)")
    fig.suptitle(title, fontsize=10, fontweight="bold")
    ax.set_title(
        "; ".join(notes) if notes else "train: the epoch's minibatches; validation: the held-out train clips", fontsize=8
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _values(values: list) -> np.ndarray:
    """Losses as floats, NaN where a row has none (matplotlib leaves a gap)."""
    return np.array([np.nan if v is None else v for v in values], np.float64)
