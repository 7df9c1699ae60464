"""Key frame of a segment (paper eq. 1–2): the frame whose RGB histogram is nearest, in Manhattan (L1)
distance, to the mean RGB histogram of the segment's frames."""

from __future__ import annotations

import numpy as np


def rgb_histograms(frames: np.ndarray, bins: int = 32) -> np.ndarray:
    """Per-channel histograms of uint8 RGB frames [n, H, W, 3], concatenated: float [n, 3·bins].

    Each channel's histogram is normalised to sum 1, so frames of any size compare. `bins` per channel is
    our choice (the paper does not say); it must divide 256.
    """
    if 256 % bins:
        raise ValueError(f"histogram bins must divide 256, got {bins}")
    n, height, width, _ = frames.shape
    shift = int(np.log2(256 // bins))
    # One code per pixel and channel: frame, channel and bin folded into a single bincount.
    codes = (frames >> shift).astype(np.int32)
    codes += (np.arange(3, dtype=np.int32) * bins)[None, None, None, :]
    codes += (np.arange(n, dtype=np.int32) * 3 * bins)[:, None, None, None]
    counts = np.bincount(codes.ravel(), minlength=n * 3 * bins).reshape(n, 3 * bins)
    return counts / float(height * width)


def key_frame(histograms: np.ndarray) -> int:
    """argmin_i D(i, mean_j h(j)) with D the L1 distance (eq. 1–2); ties go to the earliest frame."""
    mean = histograms.mean(axis=0)
    return int(np.abs(histograms - mean).sum(axis=1).argmin())
