"""A video's predictions over time as one PNG: a strip of key frames, then per target the class
probabilities at each second (stacked areas) under a band coloured by the predicted class.

Second t covers [t, t+1) s of the video, so its probabilities are drawn as a step over that interval and the
x axis runs from 0 to T seconds. The key frames are those of the 1-s segments (the paper's eq. 1–2, as
`avemo predict` decodes them). A long video shows at most `MAX_THUMBNAILS` of them, evenly spaced, each labelled with
its second; the figure widens with the duration up to `MAX_WIDTH` inches. matplotlib with the Agg backend
(files only), written by avemo.atomic (whole or not at all, never through a symbolic link), as
avemo/evaluate/plots.py does.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
import numpy as np  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from avemo.atomic import write_bytes  # noqa: E402
from avemo.errors import AvemoError  # noqa: E402

MAX_THUMBNAILS = 20
MIN_WIDTH, MAX_WIDTH, INCH_PER_SECOND = 8.0, 24.0, 0.05
DPI = 100
THUMB_MAX = 1.3  # inches: the side of a key-frame thumbnail at most
# low → middle → high class (calm/neutral/active, negative/neutral/positive); other class counts use tab10
THREE_COLOURS = ("#4c72b0", "#b8b8b8", "#dd5a43")
# figure margins and rows, inches
LEFT, RIGHT, TOP, BOTTOM = 0.75, 1.45, 0.3, 0.55
BAND, SPACE, PANEL, LABEL = 0.22, 0.06, 1.7, 0.25  # LABEL: a line of text (a title, the seconds under thumbnails)
TICKS = 0.25  # a panel's tick labels


@dataclass
class _Layout:
    width: float  # inches
    height: float
    thumbs: list[int]  # the seconds whose key frames are shown
    thumb: float  # side of a thumbnail, inches (0 without key frames)

    @property
    def axes_width(self) -> float:
        return self.width - LEFT - RIGHT


def timeline_png(
    path: Path,
    title: str,
    per_second: dict[str, np.ndarray],
    class_names: dict[str, tuple[str, ...]],
    keyframes: np.ndarray | None,
) -> Path:
    """Write the timeline of one video to `path` (PNG) and return it.

    `per_second`: target → float [T, n_classes] probabilities of each second; `class_names`: target → class
    names in index order; `keyframes`: uint8 [T, H, W, 3] (one per second) or None for no thumbnail strip."""
    seconds = _check(per_second, class_names, keyframes)
    layout = _layout(seconds, len(per_second), keyframes is not None)
    fig = plt.figure(figsize=(layout.width, layout.height), dpi=DPI)
    try:
        _draw(fig, layout, title, per_second, class_names, keyframes)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    write_bytes(path, buffer.getvalue())
    return Path(path)


def _draw(fig, layout: _Layout, title: str, per_second, class_names, keyframes) -> None:
    y = layout.height - TOP
    if keyframes is not None:
        y -= LABEL + layout.thumb
        _thumbnails(_axes(fig, layout, y, layout.thumb), keyframes, layout)
        y -= LABEL  # the seconds under the thumbnails
    for i, (target, probabilities) in enumerate(per_second.items()):
        y -= (TICKS if i else 0) + LABEL + BAND
        band = _axes(fig, layout, y, BAND)
        y -= SPACE + PANEL
        _panel(_axes(fig, layout, y, PANEL), band, target, np.asarray(probabilities, np.float64), class_names[target])
    fig.axes[-1].set_xlabel("time (s); second t covers [t, t+1)")
    x, y = LEFT / layout.width, 1 - 0.12 / layout.height
    fig.suptitle(_fit(title, layout.width), x=x, y=y, ha="left", va="top", fontsize=12, fontweight="bold")


def _fit(title: str, width: float) -> str:
    """The title, its start cut (`…`) when it is wider than the figure (a long path keeps its file name)."""
    limit = max(int((width - LEFT) * 10), 20)  # characters of 12-pt bold text per inch, about
    return title if len(title) <= limit else "…" + title[-(limit - 1) :]


def _check(per_second: dict[str, np.ndarray], class_names: dict[str, tuple[str, ...]], keyframes) -> int:
    """The number of seconds T, once every input is the shape the docstring promises."""
    if not per_second:
        raise AvemoError("timeline: no target to draw; give per-second probabilities for arousal and/or valence")
    lengths = set()
    for target, p in per_second.items():
        p = np.asarray(p)
        names = class_names.get(target)
        if names is None:
            raise AvemoError(f"timeline: no class names for {target!r}; give class_names[{target!r}]")
        if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] != len(names):
            raise AvemoError(f"timeline: {target} probabilities have shape {p.shape}, expected [seconds ≥ 1, {len(names)}]")
        if not np.isfinite(p).all() or (p < 0).any() or np.abs(p.sum(axis=1) - 1).max() > 0.01:
            problem = "rows are not probabilities (NaN, negative, not summing to 1)"
            raise AvemoError(f"timeline: {target} {problem}; pass softmax output")
        lengths.add(p.shape[0])
    if len(lengths) != 1:
        raise AvemoError(f"timeline: the targets cover different numbers of seconds ({sorted(lengths)}); give one per second")
    seconds = lengths.pop()
    if keyframes is not None:
        _check_frames(np.asarray(keyframes), seconds)
    return seconds


def _check_frames(k: np.ndarray, seconds: int) -> None:
    if k.dtype != np.uint8 or k.ndim != 4 or k.shape[0] != seconds or k.shape[3] != 3:
        raise AvemoError(f"timeline: key frames are {k.dtype} {k.shape}, expected uint8 [{seconds}, H, W, 3], one per second")


def _layout(seconds: int, n_targets: int, with_frames: bool) -> _Layout:
    width = float(np.clip(LEFT + RIGHT + INCH_PER_SECOND * seconds, MIN_WIDTH, MAX_WIDTH))
    axes_width = width - LEFT - RIGHT
    thumbs, thumb = [], 0.0
    if with_frames:
        count = min(seconds, MAX_THUMBNAILS, int(axes_width / 0.55))  # each slot at least 0.55 in wide
        slot = seconds / count  # seconds per thumbnail
        thumbs = [min(int((i + 0.5) * slot), seconds - 1) for i in range(count)]
        spacing = min(np.diff(thumbs), default=seconds)  # seconds between neighbouring thumbnails
        thumb = min(THUMB_MAX, 0.92 * axes_width * spacing / seconds)
    panels = n_targets * (LABEL + BAND + SPACE + PANEL) + (n_targets - 1) * TICKS
    height = TOP + BOTTOM + (LABEL + thumb + LABEL if with_frames else 0) + panels
    return _Layout(width, height, thumbs, thumb)


def _axes(fig, layout: _Layout, bottom: float, height: float):
    """An axes LEFT inches from the figure's left edge, `bottom` inches above its bottom edge, x = 0…T s."""
    return fig.add_axes((LEFT / layout.width, bottom / layout.height, layout.axes_width / layout.width, height / layout.height))


def _thumbnails(ax, keyframes: np.ndarray, layout: _Layout) -> None:
    """Each chosen second's key frame centred on that second, square, labelled `N s` beneath."""
    seconds = keyframes.shape[0]
    half = layout.thumb / layout.axes_width * seconds / 2  # half a thumbnail's width, in seconds
    for t in layout.thumbs:
        centre = float(np.clip(t + 0.5, half, seconds - half))  # kept inside the strip at both ends
        ax.imshow(keyframes[t], extent=(centre - half, centre + half, 0, 1), aspect="auto", interpolation="antialiased")
        ax.text(centre, -0.04, f"{t} s", ha="center", va="top", fontsize=8)
    ax.set_xlim(0, seconds)
    ax.set_ylim(0, 1)
    ax.axis("off")
    shown = "every second" if len(layout.thumbs) == seconds else f"{len(layout.thumbs)} of {seconds} seconds"
    ax.set_title(f"key frames ({shown})", fontsize=9, loc="left")


def _colours(n: int) -> list[tuple[float, float, float]]:
    names = THREE_COLOURS if n == 3 else [f"C{i % 10}" for i in range(n)]
    return [to_rgb(c) for c in names]


def _panel(ax, band, target: str, p: np.ndarray, names: tuple[str, ...]) -> None:
    """Stacked class probabilities as steps over [t, t+1), and above them the predicted class per second."""
    seconds, n = p.shape
    colours = _colours(n)
    x = np.arange(seconds + 1)
    top = np.vstack([np.cumsum(p, axis=1), np.cumsum(p[-1:], axis=1)])  # the last step spans [T-1, T)
    bottom = np.zeros(seconds + 1)
    for k in range(n):
        ax.fill_between(x, bottom, top[:, k], step="post", color=colours[k], linewidth=0, label=names[k])
        bottom = top[:, k]
    ax.set_xlim(0, seconds)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"p({target} class)", fontsize=9)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", alpha=0.2, color="black")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False, title=target, title_fontsize=9)
    predicted = p.argmax(axis=1)
    band.imshow(np.array(colours)[predicted][None], extent=(0, seconds, 0, 1), aspect="auto", interpolation="nearest")
    band.set_xlim(0, seconds)
    band.set_xticks([])
    band.set_yticks([])
    band.text(-0.005, 0.5, "predicted", transform=band.transAxes, ha="right", va="center", fontsize=8)
    shares = ", ".join(f"{names[k]} {100 * np.mean(predicted == k):.0f}%" for k in range(n))
    band.set_title(f"{target}: predicted class per second ({shares} of {seconds} s)", fontsize=10, loc="left")
