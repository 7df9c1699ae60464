"""`avemo bench extract`: is the extraction pipeline as fast as its two unavoidable parts?

On the same clips, in one run (the machine is shared and noisy, so only ratios inside one run count):
(a) decoding only: key frames and spectrograms of every clip, with the same worker processes, no cache;
(b) AlexNet fc7 forward only, on as many images as (a) produced (key frames and spectrograms);
(c) the full `extract` into a fresh cache: decode, encode, write shards, read back, fc7, write features.
It prints `ratio: X` with X = (c) / ((a) + (b)); the goal on CPU is ≤ 1.25. Fine-tuning is not part of
(c) (`--finetune none`): it is extra training work, not pipeline overhead, and `extract` reports its time.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from avemo.datasets.manifest import Clip
from avemo.extract.alexnet import build_alexnet
from avemo.extract.embed import Embedder
from avemo.extract.finetune import FinetuneSettings
from avemo.extract.pipeline import ExtractSettings, extract
from avemo.extract.workers import decoded_seconds, in_order


def bench_extract(clips: list[Clip], settings: ExtractSettings) -> float:
    """Run (a), (b), (c) on `clips`; print one line each, the cache size, and the ratio; return the ratio."""
    settings = replace(settings, finetune=FinetuneSettings(mode="none"))

    started = time.perf_counter()
    counts = list(in_order(decoded_seconds, [(str(c.path), settings.decode) for c in clips], settings.workers))
    decode_s = time.perf_counter() - started
    seconds = sum(counts)
    print(f"(a) decode only: {len(clips)} clips, {seconds} video-seconds in {decode_s:.1f} s")

    alexnet = build_alexnet(settings.weights, settings.seed)
    embedder = Embedder({"visual": alexnet}, settings.spectrogram_input, "none", settings.batch_size, settings.device)
    rng = np.random.default_rng(0)
    size = settings.decode.frame_size
    frames = rng.integers(0, 256, size=(min(seconds, 256), size, size, 3), dtype=np.uint8)
    started = time.perf_counter()
    for images in (frames, frames[..., 0]):  # as many key frames and spectrograms as (a) produced
        for start in range(0, seconds, len(frames)):
            embedder.fc7("visual", images[: min(len(frames), seconds - start)])
    forward_s = time.perf_counter() - started
    print(f"(b) AlexNet fc7 forward only: {2 * seconds} images in {forward_s:.1f} s ({2 * seconds / forward_s:.0f} img/s)")

    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        extract(clips, cache, settings)
        full_s = time.perf_counter() - started
        media = sum(p.stat().st_size for p in (Path(cache) / "media").glob("*.h5"))
        features = sum(p.stat().st_size for p in (Path(cache) / "features").glob("*.h5"))
    print(f"(c) full extraction: {full_s:.1f} s")
    per_second = max(seconds, 1)
    print(
        f"cache per video-second: media {media / per_second / 1e3:.1f} KB ({settings.decode.image_codec}), "
        f"features {features / per_second / 1e3:.1f} KB"
    )
    ratio = full_s / (decode_s + forward_s)
    print(f"ratio: {ratio:.2f}")
    return ratio
