"""`avemo bench train`: is a head epoch as fast as the matrix work it must do?

Builds a synthetic feature cache of MediaEval 2015 size (10,900 clips of 8–12 s, 2 × 4096 fp16 per second;
fewer with `--clips`), then reports in one run: the cache load time, the peak memory, the time of one
training epoch of the modal-fusion head, and the time of the same dominant matrix work done as bare fp32
matmuls (per second of every train clip: the two 4096→512 pathway layers, forward and weight gradient).
It ends with `ratio: X`, X = epoch / bare matmuls; the goal on CPU is ≤ 1.3.
"""

from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from avemo.cache import ShardStore
from avemo.train.data import Standardiser, load_features
from avemo.train.heads import EmotionHead
from avemo.train.trainer import TrainSettings, run_epoch


def write_synthetic_cache(folder: Path, clips: int, seed: int = 0, clips_per_shard: int = 512) -> int:
    """A features store with random fp16 fc7-like values (ReLU output: ≥ 0); returns its seconds."""
    rng = np.random.default_rng(seed)
    store = ShardStore(folder / "features", "features")
    store.check_settings({"synthetic": True})
    total = 0
    for start in range(0, clips, clips_per_shard):
        n = min(clips_per_shard, clips - start)
        lengths = rng.integers(8, 13, size=n)
        rows = int(lengths.sum())
        seconds = {
            name: np.maximum(rng.standard_normal((rows, 4096), np.float32), 0).astype(np.float16) for name in ("visual", "audio")
        }
        index = {
            "clip_id": np.array([f"clip{start + i:05d}.mp4" for i in range(n)]),
            "offset": np.concatenate([[0], np.cumsum(lengths)[:-1]]),
            "n_seconds": lengths,
            "arousal": rng.integers(-1, 2, size=n).astype(np.int8),
            "valence": rng.integers(-1, 2, size=n).astype(np.int8),
            "split": np.where(rng.random(n) < 0.56, "train", "test"),  # MediaEval: 6,144 of 10,900
            "has_audio": np.ones(n, np.uint8),
        }
        store.add_shard(index, seconds)
        total += rows
    return total


def bench_train(clips: int = 10900, batch_size: int = 32, seed: int = 0) -> float:
    settings = replace(TrainSettings(batch_size=batch_size, seed=seed), device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        seconds = write_synthetic_cache(Path(tmp), clips, seed)
        size = sum(p.stat().st_size for p in (Path(tmp) / "features").glob("*.h5"))
        print(
            f"synthetic cache: {clips} clips, {seconds} seconds, {size / 1e9:.2f} GB, "
            f"written in {time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        data = load_features(tmp)
        load_s = time.perf_counter() - started
    print(f"load: {load_s:.1f} s")

    torch.manual_seed(seed)
    model = EmotionHead(settings.head)
    train = data.subset("train")
    Standardiser.fit(data, settings.feature_norm, train).normalise_in_place(data)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum)
    order = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))]
    started = time.perf_counter()
    run_epoch(model, data, order, optimizer, settings)
    epoch_s = time.perf_counter() - started
    train_seconds = int(data.lengths[train].sum())
    print(
        f"epoch of the modal-fusion head: {len(train)} train clips, {train_seconds} seconds, batch {batch_size}: {epoch_s:.1f} s"
    )

    # The same dominant work as bare matmuls: per modality, [rows, 4096] @ [4096, 512] forward and the
    # weight gradient [4096, rows] @ [rows, 512], over batches of the same number of rows.
    rows_per_batch = max(1, train_seconds * batch_size // len(train))
    x = torch.randn(rows_per_batch, 4096)
    w = torch.randn(4096, settings.head.hidden)
    g = torch.randn(rows_per_batch, settings.head.hidden)
    started = time.perf_counter()
    for _ in range(-(-len(train) // batch_size)):
        for _modality in range(2):
            x @ w
            x.T @ g
    bare_s = time.perf_counter() - started
    print(f"bare matmuls of the same size: {bare_s:.1f} s")
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    ratio = epoch_s / bare_s
    print(f"ratio: {ratio:.2f}")
    return ratio
