"""One spectrogram image per 1-s segment (paper: STFT, 40 ms Hamming window, 20 ms hop, 256×256).

Choices where the paper is silent, each an option of `SpectrogramSettings`:
- mono downmix at 16 kHz (a 40 ms window is then 640 samples, the hop 320);
- the STFT stays inside the segment (no centring pad), so one second gives 49 frames;
- log magnitude in dB relative to a full-scale sine (0 dB), clipped to [floor_db, 0] and mapped linearly to
  0..255; the scale is absolute, not per image, so loudness stays visible;
- low frequencies at the bottom row, bilinear resize of the (frequency × time) grid to 256×256.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.signal


@dataclass(frozen=True)
class SpectrogramSettings:
    sample_rate: int = 16000
    window_s: float = 0.040  # paper: 40 ms window
    hop_s: float = 0.020  # paper: 20 ms hop
    size: int = 256  # paper: resized to 256×256
    floor_db: float = -80.0

    @property
    def window_length(self) -> int:
        return round(self.window_s * self.sample_rate)

    @property
    def hop_length(self) -> int:
        return round(self.hop_s * self.sample_rate)


def hamming(settings: SpectrogramSettings) -> np.ndarray:
    """The periodic Hamming window used for the STFT (as librosa and scipy build it)."""
    return scipy.signal.get_window("hamming", settings.window_length, fftbins=True)


def stft_magnitude(segments: np.ndarray, settings: SpectrogramSettings) -> np.ndarray:
    """|STFT| of each segment: float [n, window_length // 2 + 1, frames], scaled so a full-scale sine ≈ 1."""
    n_win, hop = settings.window_length, settings.hop_length
    window = hamming(settings)
    n_frames = 1 + (segments.shape[1] - n_win) // hop
    starts = np.arange(n_frames) * hop
    framed = segments[:, starts[:, None] + np.arange(n_win)[None, :]]  # [n, frames, n_win]
    spectrum = np.fft.rfft(framed * window, axis=-1)
    return (np.abs(spectrum) * (2.0 / window.sum())).transpose(0, 2, 1).astype(np.float32)


def spectrogram_images(segments: np.ndarray, settings: SpectrogramSettings) -> np.ndarray:
    """Mono audio segments float [n, samples] → uint8 images [n, size, size]."""
    if len(segments) == 0:
        return np.zeros((0, settings.size, settings.size), np.uint8)
    magnitude = stft_magnitude(segments, settings)
    db = 20.0 * np.log10(np.maximum(magnitude, 1e-10))
    scaled = (np.clip(db, settings.floor_db, 0.0) - settings.floor_db) * (255.0 / -settings.floor_db)
    scaled = scaled[:, ::-1, :]  # low frequencies at the bottom
    rows = _linear_resize_matrix(scaled.shape[1], settings.size)
    cols = _linear_resize_matrix(scaled.shape[2], settings.size)
    resized = rows @ scaled @ cols.T
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


def _linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Matrix M [n_out, n_in] such that M @ x is the bilinear (half-pixel centred) resize of x."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.floor(pos).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    frac = pos - low
    matrix = np.zeros((n_out, n_in))
    matrix[np.arange(n_out), low] += 1 - frac
    matrix[np.arange(n_out), high] += frac
    return matrix
