"""Helper code of the tests: small mp4 files written with PyAV, real feature caches with a learnable task, and
the settings of the tiny heads trained on them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from avemo.cache import ShardStore
from avemo.datasets.media import write_mp4
from avemo.train.heads import HeadSettings
from avemo.train.settings import TrainSettings


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


DIM = 32  # the feature width of write_feature_cache (the heads take it from the cache)
# heads that learn write_feature_cache's task (modal fusion: in about 25 epochs, after a plateau of about 15);
# lr 0.05: at 0.1 with momentum 0.9 the LSTM sometimes jumps out of a good minimum on this tiny task
SETTINGS = TrainSettings(
    head=HeadSettings(feature_dim=DIM, hidden=32, lstm_hidden=32, mlp_hidden=32), epochs=40, lr=0.05, batch_size=16
)


def write_feature_cache(folder, n_clips=150, seed=0, movies=False, silent=(), test_shift=0.0, visual_only=False):
    """Features whose class needs both modalities: level_v in the visual, level_a in the audio rows.

    movies: clips carry a movie (10 clips each); silent: clip numbers without an audio stream; test_shift:
    added to the test clips' features and their labels rotated (what must not change a trained model);
    visual_only: the class is level_v alone. Three shards, clip ids s<shard>/c<i>.mp4, every third one a test clip."""
    rng = np.random.default_rng(seed)
    store = ShardStore(folder / "features", "features")
    store.check_settings({"synthetic": True})
    per_shard = n_clips // 3
    for shard in range(3):
        levels = rng.integers(0, 3, size=(per_shard, 2))
        total = levels.sum(1)
        arousal = np.where(total <= 1, -1, np.where(total == 2, 0, 1)) if not visual_only else levels[:, 0] - 1
        lengths = rng.integers(3, 9, size=per_shard)
        split = np.array(["test" if i % 3 == 0 else "train" for i in range(per_shard)])
        number = shard * per_shard + np.arange(per_shard)
        has_audio = ~np.isin(number, list(silent))
        seconds = {"visual": [], "audio": []}
        for (lv, la), n, test, heard in zip(levels, lengths, split == "test", has_audio):
            for name, level in (("visual", lv), ("audio", la)):
                x = rng.normal(0, 1, size=(n, DIM))
                x[:, level] += 5  # one-hot level in every second
                if name == "audio" and not heard:
                    x[:] = 0
                seconds[name].append((x + test_shift * test).astype(np.float16))
        if test_shift:
            arousal = np.where(split == "test", (arousal + 2) % 3 - 1, arousal)
        index = {
            "clip_id": np.array([f"s{shard}/c{i}.mp4" for i in range(per_shard)]),
            "offset": np.concatenate([[0], np.cumsum(lengths)[:-1]]),
            "n_seconds": lengths,
            "arousal": arousal.astype(np.int8),
            "valence": np.full(per_shard, -128, np.int8),
            "split": split,
            "has_audio": has_audio.astype(np.uint8),
        }
        if movies:
            index["group"] = np.array([f"movie{n // 10}" for n in number])
        store.add_shard(index, {k: np.concatenate(v) for k, v in seconds.items()})
    return folder


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to n, restored after. Tiny heads run fastest on one: their ops are too small
    to share, and on busy cores a second thread only makes the first wait (2-8x slower under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
