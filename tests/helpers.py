"""Real inputs for tests: small mp4 files written with PyAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avemo.datasets.media import write_mp4


def make_clip(
    path: Path,
    seconds: float = 3.0,
    fps: float = 25,
    size: tuple[int, int] = (64, 48),
    audio_hz: float | None = 440.0,
    audio_rate: int = 16000,
    seed: int = 0,
) -> Path:
    """A real H.264 mp4: random-walk colour frames (every frame differs) and an optional AAC sine."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    width, height = size
    levels = np.cumsum(rng.integers(-12, 13, size=(n, 1, 1, 3)), axis=0) + 128
    frames = np.clip(levels + rng.integers(-20, 21, size=(n, height, width, 3)), 0, 255).astype(np.uint8)
    audio = None
    if audio_hz is not None:
        t = np.arange(int(seconds * audio_rate)) / audio_rate
        audio = 0.5 * np.sin(2 * np.pi * audio_hz * t)
    write_mp4(path, frames, fps=fps, audio=audio, audio_rate=audio_rate)
    return path
