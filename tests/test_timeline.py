"""timeline_png: real PNGs read back with PIL; where the key frames and the predicted-class band land is checked
in pixels, from the layout the module computes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from avemo import timeline
from avemo.datasets.labels import AROUSAL_NAMES, VALENCE_NAMES
from avemo.errors import AvemoError
from avemo.timeline import timeline_png

NAMES = {"arousal": AROUSAL_NAMES, "valence": VALENCE_NAMES}


def probabilities(seconds: int, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).random((seconds, 3)) + 0.1
    return p / p.sum(1, keepdims=True)


def frames(seconds: int, value: int, side: int = 64) -> np.ndarray:
    k = np.full((seconds, side, side, 3), value, np.uint8)
    k[:, side // 4 : side // 2, :, 1] = 255 - value  # a stripe: a thumbnail is never one flat colour
    return k


def read(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


@pytest.mark.parametrize("seconds", [1, 600])
def test_two_targets_with_key_frames(tmp_path, seconds):
    per_second = {"arousal": probabilities(seconds), "valence": probabilities(seconds, 1)}
    out = timeline_png(tmp_path / "t.png", "clip.mp4", per_second, NAMES, frames(seconds, 30))
    assert out == tmp_path / "t.png"
    pixels = read(out)
    layout = timeline._layout(seconds, 2, with_frames=True)
    assert pixels.shape[:2] == (round(layout.height * timeline.DPI), round(layout.width * timeline.DPI))
    assert pixels.std() > 20  # drawn, not blank
    assert len(layout.thumbs) == min(seconds, timeline.MAX_THUMBNAILS)
    assert layout.width == (timeline.MIN_WIDTH if seconds == 1 else timeline.MAX_WIDTH)
    if seconds == 600:  # evenly spaced over the whole video
        assert np.ptp(np.diff(layout.thumbs)) <= 1 and layout.thumbs[0] < 30 and layout.thumbs[-1] > 570


def test_width_grows_with_duration_and_short_videos_show_every_second():
    widths = [timeline._layout(s, 1, True).width for s in (1, 60, 200, 500, 10_000)]
    assert widths == sorted(widths) and widths[0] < widths[2] < widths[3] == widths[4] == timeline.MAX_WIDTH
    assert timeline._layout(8, 1, True).thumbs == list(range(8))


def test_one_target_without_frames_is_shorter(tmp_path):
    p = probabilities(30)
    one = read(timeline_png(tmp_path / "one.png", "x", {"valence": p}, NAMES, None))
    two = read(timeline_png(tmp_path / "two.png", "x", {"arousal": p, "valence": p}, NAMES, frames(30, 0)))
    assert one.shape[1] == two.shape[1] and one.shape[0] < two.shape[0] / 2
    assert one.std() > 20


def strip_rows(seconds: int, n_targets: int) -> int:
    """Pixel row below which the key-frame strip (thumbnails and their seconds) ends."""
    layout = timeline._layout(seconds, n_targets, with_frames=True)
    return round((timeline.TOP + 2 * timeline.LABEL + layout.thumb) * timeline.DPI)


def test_key_frames_change_only_the_strip(tmp_path):
    per_second = {"arousal": probabilities(45)}
    dark = read(timeline_png(tmp_path / "a.png", "x", per_second, NAMES, frames(45, 0)))
    light = read(timeline_png(tmp_path / "b.png", "x", per_second, NAMES, frames(45, 220)))
    rows = np.nonzero(np.abs(dark - light).sum(axis=(1, 2)))[0]
    assert rows.size > 30  # the thumbnails differ
    assert rows.max() < strip_rows(45, 1)  # and nothing below them


def test_band_shows_the_predicted_class_per_second(tmp_path):
    seconds = 40
    p = np.tile([0.7, 0.2, 0.1], (seconds, 1))
    p[seconds // 2 :] = [0.1, 0.3, 0.6]  # calm for the first half, active for the second
    pixels = read(timeline_png(tmp_path / "t.png", "x", {"arousal": p}, NAMES, None))
    layout = timeline._layout(seconds, 1, with_frames=False)
    row = round((timeline.TOP + timeline.LABEL + timeline.BAND / 2) * timeline.DPI)
    left, width = timeline.LEFT * timeline.DPI, layout.axes_width * timeline.DPI
    calm, active = (np.array(to_rgb(c)) * 255 for c in (timeline.THREE_COLOURS[0], timeline.THREE_COLOURS[2]))
    assert np.abs(pixels[row, round(left + 0.25 * width)] - calm).max() <= 2
    assert np.abs(pixels[row, round(left + 0.75 * width)] - active).max() <= 2


@pytest.mark.parametrize(
    ("per_second", "keyframes", "message"),
    [
        ({}, None, "no target to draw"),
        ({"arousal": np.ones((3, 2))}, None, r"shape \(3, 2\), expected \[seconds ≥ 1, 3\]"),
        ({"arousal": np.ones((0, 3))}, None, "expected"),
        ({"arousal": np.full((3, 3), np.nan)}, None, "not probabilities"),
        ({"arousal": np.ones((3, 3))}, None, "not summing to 1"),
        ({"arousal": np.array([[1.5, -0.5, 0.0]])}, None, "negative"),
        ({"arousal": np.ones((3, 3)) / 3, "valence": np.ones((4, 3)) / 3}, None, r"different numbers of seconds \(\[3, 4\]\)"),
        ({"mood": np.ones((3, 3)) / 3}, None, "no class names for 'mood'"),
        ({"arousal": np.ones((3, 3)) / 3}, np.zeros((2, 8, 8, 3), np.uint8), r"expected uint8 \[3, H, W, 3\]"),
        ({"arousal": np.ones((3, 3)) / 3}, np.zeros((3, 8, 8, 3), np.float32), "float32"),
    ],
)
def test_wrong_inputs_are_refused(tmp_path, per_second, keyframes, message):
    with pytest.raises(AvemoError, match=message):
        timeline_png(tmp_path / "t.png", "x", per_second, NAMES, keyframes)
    assert not list(tmp_path.iterdir())


def test_never_writes_through_a_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    os.symlink(victim, tmp_path / "t.png")
    with pytest.raises(AvemoError, match="symbolic link"):
        timeline_png(tmp_path / "t.png", "x", {"arousal": probabilities(2)}, NAMES, None)
    assert victim.read_text() == "keep"


def test_long_title_keeps_its_end():
    assert timeline._fit("short.mp4", 8.0) == "short.mp4"
    cut = timeline._fit("/very/long/folder/" * 20 + "clip.mp4", 8.0)
    assert cut.startswith("…") and cut.endswith("/clip.mp4") and len(cut) < 100
