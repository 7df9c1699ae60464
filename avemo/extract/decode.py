"""Decode one video into per-second inputs: a key frame and a spectrogram per 1-s segment.

Segments are cut by timestamp (paper: t = 1 s), so 29.97 fps and variable-frame-rate files cut right.
Frames are decoded straight at 256×256 (paper: key frames resized to 256×256), one second at a time, so
memory stays bounded for long videos. Decoding uses decord.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import decord
import numpy as np

from avemo.extract.keyframe import key_frame, rgb_histograms
from avemo.extract.spectrogram import SpectrogramSettings, spectrogram_images

SEGMENT_SECONDS = 1.0  # paper: "we set t = 1"


@dataclass(frozen=True)
class DecodeSettings:
    frame_size: int = 256  # paper: key frame resized to 256×256
    hist_bins: int = 32  # per RGB channel; the paper does not say
    min_last_segment: float = 1.0  # keep a trailing partial second only if it lasts this long (1.0: drop it)
    spectrogram: SpectrogramSettings = SpectrogramSettings()
    image_codec: str = "jpeg"  # how the media cache stores key frames and spectrograms: jpeg | png | raw
    jpeg_quality: int = 90


@dataclass
class ClipMedia:
    key_frames: np.ndarray  # uint8 [T, size, size, 3]
    key_frame_index: np.ndarray  # int64 [T], index of the chosen frame in the source video
    key_frame_time: np.ndarray  # float64 [T], its timestamp in seconds
    spectrograms: np.ndarray  # uint8 [T, size, size]; zeros when the clip has no audio
    has_audio: bool

    @property
    def n_seconds(self) -> int:
        return len(self.key_frames)


class ClipError(Exception):
    """A clip that cannot be used; the message is the reason written to errors.csv."""


def decode_clip(path: str, settings: DecodeSettings = DecodeSettings()) -> ClipMedia:
    try:
        video = decord.VideoReader(path, width=settings.frame_size, height=settings.frame_size, num_threads=1)
        n_frames = len(video)
        if n_frames == 0:
            raise ClipError("no video frames")
        times = video.get_frame_timestamp(range(n_frames))  # [n, 2]: start, end (s)
    except (decord.DECORDError, RuntimeError) as e:  # decord raises RuntimeError on unreadable containers
        raise ClipError(f"cannot read video: {_first_line(e)}") from None
    duration = float(times[-1, 1])
    n_segments = _segment_count(duration, settings.min_last_segment)
    if n_segments == 0:
        raise ClipError(f"shorter than one second ({duration:.2f} s)")

    segment_of_frame = np.floor(times[:, 0] / SEGMENT_SECONDS + 1e-6).astype(np.int64)
    size = settings.frame_size
    key_frames = np.empty((n_segments, size, size, 3), np.uint8)
    key_index = np.empty(n_segments, np.int64)
    for s in range(n_segments):
        members = np.flatnonzero(segment_of_frame == s)
        if len(members) == 0:  # a gap in a variable-frame-rate file: take the frame nearest its middle
            members = np.array([np.abs(times[:, 0] - (s + 0.5) * SEGMENT_SECONDS).argmin()])
        try:
            frames = video.get_batch(members.tolist()).asnumpy()
        except (decord.DECORDError, RuntimeError) as e:
            raise ClipError(f"cannot decode second {s}: {_first_line(e)}") from None
        best = key_frame(rgb_histograms(frames, settings.hist_bins))
        key_frames[s], key_index[s] = frames[best], members[best]

    audio = read_audio(path, settings.spectrogram.sample_rate)
    if audio is None:
        spectrograms = np.zeros((n_segments, size, size), np.uint8)
    else:
        spectrograms = spectrogram_images(
            audio_segments(audio, n_segments, settings.spectrogram.sample_rate), settings.spectrogram
        )
    return ClipMedia(key_frames, key_index, times[key_index, 0].astype(np.float64), spectrograms, audio is not None)


def read_audio(path: str, sample_rate: int) -> np.ndarray | None:
    """Mono audio resampled to `sample_rate`, or None when the file has no (readable) audio stream."""
    try:
        reader = decord.AudioReader(path, sample_rate=sample_rate, mono=True)
        samples = reader[:].asnumpy()
    except (decord.DECORDError, RuntimeError):
        return None
    return samples.reshape(-1).astype(np.float32) if samples.size else None


def audio_segments(audio: np.ndarray, n_segments: int, sample_rate: int) -> np.ndarray:
    """Cut audio into n 1-s rows, padding with silence where the audio ends early."""
    per = round(SEGMENT_SECONDS * sample_rate)
    out = np.zeros((n_segments, per), np.float32)
    flat = audio[: n_segments * per]
    out.reshape(-1)[: len(flat)] = flat
    return out


def _segment_count(duration: float, min_last_segment: float) -> int:
    whole = math.floor(duration / SEGMENT_SECONDS + 1e-6)
    rest = duration - whole * SEGMENT_SECONDS
    return whole + (1 if min_last_segment < SEGMENT_SECONDS and rest >= min_last_segment - 1e-6 else 0)


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(error).__name__
