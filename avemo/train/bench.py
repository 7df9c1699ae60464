"""`avemo bench train`: is a head epoch as fast as the matrix work it must do?

Builds a synthetic feature cache of MediaEval 2015 size (10,900 clips of 8–12 s, 2 × 4096 fp16 per second;
fewer with `--clips`), then reports in one run: the cache load time, the peak memory, the time of one
training epoch of the modal-fusion head, and the time of the same matrix work done as bare fp32 matmuls:
per batch, with the batch's own sizes, every product the epoch computes — the two 4096→512 pathway layers
(forward and weight gradient) on the batch's real seconds, the LSTM's input projection over the padded
batch (forward, input and weight gradients), its recurrent product step by step (forward and input
gradient; weight gradient once over all steps), and the MLP. What the ratio adds on top of 1 is overhead:
gathering and converting the inputs, activations, the LSTM's gate arithmetic, autograd and the optimizer.

The epoch is run by the training engine (`engine.train_epoch`, what `avemo train` runs) in blocks of
batches, each followed by the bare matmuls of the same batches, so that a busy machine slows both alike.
It ends with `ratio: X`, X = epoch / bare matmuls; the goal on CPU is ≤ 1.3.
"""

from __future__ import annotations

import math
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from avemo.cache import ShardStore
from avemo.train import engine
from avemo.train.data import FeatureSet, Standardiser, load_features
from avemo.train.heads import EmotionHead, HeadSettings
from avemo.train.trainer import HeadTask, TrainSettings, make_optimizer


def write_synthetic_cache(folder: Path, clips: int, seed: int = 0, clips_per_shard: int = 512) -> int:
    """A features store with random fp16 fc7-like values (ReLU output: ≥ 0); returns its seconds. The rows are
    drawn from a pool of 8,192 random rows (drawing 109,000 × 2 × 4096 normals took 25 of the 40 s it took to
    write a MediaEval-size cache; the benchmarks time dense products, which do not depend on the values)."""
    rng = np.random.default_rng(seed)
    pool = np.maximum(rng.standard_normal((8192, 4096), np.float32), 0).astype(np.float16)
    store = ShardStore(folder / "features", "features")
    store.check_settings({"synthetic": True})
    total = 0
    for start in range(0, clips, clips_per_shard):
        n = min(clips_per_shard, clips - start)
        lengths = rng.integers(8, 13, size=n)
        rows = int(lengths.sum())
        seconds = {name: pool[rng.integers(0, len(pool), size=rows)] for name in ("visual", "audio")}
        index = {
            "clip_id": np.array([f"clip{start + i:05d}.mp4" for i in range(n)]),
            "offset": np.concatenate([[0], np.cumsum(lengths)[:-1]]),
            "n_seconds": lengths,
            "arousal": rng.integers(-1, 2, size=n).astype(np.int8),
            "valence": rng.integers(-1, 2, size=n).astype(np.int8),
            "split": np.where(rng.random(n) < 0.56, "train", "test"),  # MediaEval: 6,144 of 10,900
            "has_audio": np.ones(n, np.uint8),
            "group": np.array([f"movie{(start + i) // 68}" for i in range(n)]),  # MediaEval: 160 movies
        }
        store.add_shard(index, seconds)
        total += rows
    return total


class BareMatmuls:
    """The matrix products of one training step of the modal-fusion head, as bare fp32 matmuls."""

    def __init__(self, head: HeadSettings, max_rows: int, max_steps: int, max_batch: int):
        d, h, n = head.feature_dim, head.hidden, head.lstm_hidden
        self.x = torch.randn(max_rows, d)
        self.w, self.b, self.g = torch.randn(h, d), torch.randn(h), torch.randn(max_rows, h)
        self.f, self.w_ih, self.gates = (
            torch.randn(max_batch * max_steps, h),
            torch.randn(4 * n, h),
            torch.randn(max_batch * max_steps, 4 * n),
        )
        self.w_hh, self.state = torch.randn(4 * n, n), torch.randn(max_batch, n)
        self.w_mlp = torch.randn(head.mlp_hidden, n)

    def step(self, rows: int, batch: int, steps: int) -> None:
        x, g, f, gates = self.x[:rows], self.g[:rows], self.f[: batch * steps], self.gates[: batch * steps]
        for _modality in range(2):  # pathway g(x) = ReLU(W x + b): forward, weight gradient
            torch.addmm(self.b, x, self.w.T)
            g.T @ x
        f @ self.w_ih.T  # LSTM input projection: forward, input gradient, weight gradient
        gates @ self.w_ih
        gates.T @ f
        state, step_gates = self.state[:batch], self.gates[:batch]
        for _t in range(steps):  # recurrence: forward and input gradient, step by step
            state @ self.w_hh.T
            step_gates @ self.w_hh
        gates.T @ f[:, : self.w_hh.shape[1]]  # recurrent weight gradient over all steps
        state @ self.w_mlp.T


def bench_train(clips: int = 10900, batch_size: int = 32, seed: int = 0, blocks: int = 20) -> float:
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
        data = load_features(tmp, memory="ram")
        load_s = time.perf_counter() - started
    print(f"load: {load_s:.1f} s")
    train = data.subset("train")
    Standardiser.fit(data, settings.feature_norm, train).normalise_in_place(data)
    epoch_s, bare_s = _time_epoch(data, settings, train, blocks)
    train_seconds = int(data.lengths[train].sum())
    print(
        f"epoch of the modal-fusion head: {len(train)} train clips, {train_seconds} seconds, batch {batch_size}: {epoch_s:.1f} s"
    )
    print(f"the same matrix products as bare matmuls: {bare_s:.1f} s")
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    ratio = epoch_s / bare_s
    print(f"ratio: {ratio:.2f}")
    return ratio


def _time_epoch(data: FeatureSet, settings: TrainSettings, train: torch.Tensor, blocks: int) -> tuple[float, float]:
    """Seconds of one epoch of the modal-fusion head run by the training engine (engine.train_epoch), in
    blocks of batches, and of the bare matmuls of the same batches, each block right after the other."""
    torch.manual_seed(settings.seed)
    model = EmotionHead(settings.head)
    optimizer = make_optimizer(model, settings)
    task = HeadTask(model, data, train, torch.zeros(0, dtype=torch.int64), settings)
    loop = engine.Loop(epochs=1, batch_size=settings.batch_size, seed=settings.seed)
    batches = engine.epoch_order(train, settings.seed, 0).split(settings.batch_size)
    longest = int(data.lengths.max())
    bare = BareMatmuls(settings.head, longest * settings.batch_size, longest, settings.batch_size)
    epoch_s = bare_s = 0.0
    for block, numbers in enumerate([[0], *np.array_split(np.arange(len(batches)), blocks)]):  # first: warm-up
        task.clips = torch.cat([batches[i] for i in numbers])
        started = time.perf_counter()
        engine.train_epoch(model, task, optimizer, loop, block)  # the engine shuffles the block's clips
        trained_s = time.perf_counter() - started
        started = time.perf_counter()
        for batch in engine.epoch_order(task.clips, settings.seed, block).split(settings.batch_size):
            bare.step(*_sizes(data, batch))
        if block > 0:  # the warm-up's first-call allocations are not counted
            epoch_s, bare_s = epoch_s + trained_s, bare_s + time.perf_counter() - started
    return epoch_s, bare_s


def _sizes(data: FeatureSet, batch: torch.Tensor) -> tuple[int, int, int]:
    lengths = data.lengths[batch]
    return int(lengths.sum()), len(batch), int(lengths.max())


def bench_table(clips: int = 10900, seeds: int = 5, epochs: int = 40, device: str | None = None, stacked: bool = False) -> float:
    """Wall time of the paper's whole Table 1 (`avemo train --approach all`) over `seeds` seeds on a synthetic
    cache of `clips` clips, every run going the full `epochs` (no early stop: the worst case); with `stacked`,
    every model trained at once (avemo.train.stacked), in memory only. Both times include loading the cache."""
    from avemo.approaches import APPROACHES
    from avemo.train.stacked import train_table
    from avemo.train.trainer import train

    settings = TrainSettings(epochs=epochs, patience=0, **({"device": device} if device else {}))
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_cache(Path(tmp), clips)
        started = time.perf_counter()
        if stacked:
            train_table(tmp, list(APPROACHES), settings, list(range(seeds)))
        else:
            train(tmp, Path(tmp) / "run", list(APPROACHES), settings, seeds=list(range(seeds)))
        total = time.perf_counter() - started
    runs = 6 * seeds  # visual, audio, early, modal, and late fusion's two MLP classifiers
    how = "stacked, all at once" if stacked else "one by one"
    print(
        f"Table 1 × {seeds} seeds on {clips} clips ({settings.device}, {how}): {runs} head trainings of {epochs} epochs "
        f"in {total:.0f} s ({total / 60:.1f} min, {total / (runs * epochs):.2f} s per epoch on average)"
    )
    return total


# Operators that launch no kernel (views and metadata), left out of `bench_step`'s count.
VIEWS = frozenset(
    "alias as_strided chunk detach expand expand_as flatten lift_fresh narrow permute reshape _reshape_alias resize_ "
    "resolve_conj resolve_neg result_type scalar_tensor select slice split squeeze t to transpose unbind unflatten "
    "unsqueeze _unsafe_view view view_as empty empty_like empty_strided item _local_scalar_dense".split()
)


def bench_step(clips: int = 2000, seeds: int = 5, steps: int = 20, device: str | None = None) -> dict[str, float]:
    """Where a step of stacked training goes (`bench table --stacked`'s models: Table 1's heads × `seeds`) on a
    synthetic cache of `clips` clips: `steps` steps of a batch per model, timed after a warm-up epoch, then
    once more under torch's profiler. Prints the wall time per step, the operators dispatched per step
    (top-level aten calls, views not counted: each launches at least one kernel on a GPU), and on a GPU the
    kernels per step and the time they keep the GPU busy (busy / wall: how far the step is from being bound
    by the arithmetic rather than by launching it), then the operators that take the most time."""
    from torch.profiler import ProfilerActivity, profile

    from avemo.approaches import APPROACHES
    from avemo.train import stacked

    settings = TrainSettings(epochs=1, patience=0, **({"device": device} if device else {}))
    on_gpu = settings.device.startswith("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_cache(Path(tmp), clips)
        data = load_features(tmp, memory="ram")
    settings = replace(settings, head=replace(settings.head, feature_dim=data.visual.shape[1]))
    train = data.subset("train")
    Standardiser.fit(data, settings.feature_norm, train).normalise_in_place(data)
    fitting = train[: steps * settings.batch_size]
    pairs = [(kind, seed) for kind in stacked.kinds_for(list(APPROACHES)) for seed in range(seeds)]
    stack, index, models, state = stacked.start(data, settings, pairs, fitting)

    def epoch(number: int) -> float:
        state["epoch"] = number
        started = time.perf_counter()
        stacked.train_epoch(stack, data, index, models, settings, state).cpu()  # .cpu(): waits for the device
        return time.perf_counter() - started

    epoch(1)  # warm-up: first-call allocations, kernel selection
    n_steps = math.ceil(len(fitting) / settings.batch_size)
    wall_ms = epoch(2) * 1000 / n_steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        epoch(3)
    events = prof.events()
    operators = sum(1 for e in events if _dispatched(e)) / n_steps
    batch = settings.batch_size
    print(f"stacked step on {settings.device}: {len(models)} models ({seeds} seeds), batch {batch}, {n_steps} steps")
    print(f"wall: {wall_ms:.2f} ms per step")
    print(f"operators: {operators:.0f} per step (top-level aten calls, views not counted)")
    out = {"wall_ms": wall_ms, "operators": operators}
    if on_gpu:
        kernels = [e for e in events if e.device_type.name == "CUDA"]
        busy_ms = sum(e.time_range.elapsed_us() for e in kernels) / 1000 / n_steps
        out |= {"kernels": len(kernels) / n_steps, "gpu_busy_ms": busy_ms}
        share = busy_ms / wall_ms
        print(
            f"GPU: {len(kernels) / n_steps:.0f} kernels per step, busy {busy_ms:.2f} ms per step ({share:.0%} of the wall time)"
        )
    sort = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=12))
    return out


def _dispatched(event) -> bool:
    """A top-level aten call that is not a view (its aten callees are part of it)."""
    if not event.name.startswith("aten::") or event.name[6:] in VIEWS or event.device_type.name != "CPU":
        return False
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::") and parent.name[6:] not in VIEWS:
            return False
        parent = parent.cpu_parent
    return True
