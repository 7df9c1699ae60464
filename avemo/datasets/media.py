"""Writing real mp4 files (H.264 video, AAC audio) with PyAV: the sample corpus and the tests use it."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_mp4(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float | Fraction = 25,
    audio: np.ndarray | None = None,
    audio_rate: int = 44100,
    frame_times: Iterable[float] | None = None,
) -> None:
    """Encode RGB uint8 frames [H, W, 3] (even H and W) and optional mono float audio in [-1, 1].

    `frame_times` (seconds) gives each frame its own timestamp, for variable-frame-rate files; the
    stream's nominal rate is then `fps`.
    """
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "26"}
        if frame_times is not None:
            video.codec_context.time_base = Fraction(1, 1000)
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=audio_rate)
            sound.layout = "mono"
        times = iter(frame_times) if frame_times is not None else None
        for rgb in _chain(first, frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(next(times) * 1000), Fraction(1, 1000)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            samples = np.clip(np.asarray(audio, dtype=np.float32), -1, 1)
            block = 1024  # AAC frame size
            for start in range(0, len(samples), block):
                chunk = samples[start : start + block]
                if len(chunk) < block:
                    chunk = np.pad(chunk, (0, block - len(chunk)))
                frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = audio_rate, start
                container.mux(sound.encode(frame))
            container.mux(sound.encode(None))


def _chain(first: np.ndarray, rest: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    yield first
    yield from rest
