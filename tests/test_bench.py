"""The training benchmarks run for real on a small synthetic cache (their figures are reported, not asserted)."""

from __future__ import annotations

from avemo.train.bench import bench_step

from helpers import torch_threads


def test_bench_step_profiles_a_stacked_step_and_counts_its_operators(capsys):
    with torch_threads(1):
        out = bench_step(clips=120, seeds=1, steps=2, device="cpu")
    printed = capsys.readouterr().out
    assert out["wall_ms"] > 0 and "wall:" in printed
    # the LSTM alone is ~13 operators per second of the longest clip (12 here): far fewer would mean a
    # count that misses calls, far more a step that dispatches per model
    assert 150 < out["operators"] < 1000 and "operators:" in printed
    assert "kernels" not in out  # CPU: no GPU figures
