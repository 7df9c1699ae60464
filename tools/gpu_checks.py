"""Issue 15's correctness checks on a GPU, run by tools/gpu_bench.sh before its benchmarks; one line each,
PASS or FAIL, and exit status 1 if any failed:

1. avemo.train.lstm's recurrence equals torch's nn.LSTM (cuDNN on a GPU): values and gradients;
2. `avemo train --stacked` equals one-by-one training (dropout 0, a few epochs; the tolerance of
   tests/test_stacked_run.py), both with --deterministic (torch.use_deterministic_algorithms), so an
   operation without a deterministic GPU implementation fails here rather than in a researcher's run.

Usage: python tools/gpu_checks.py [DEVICE] (default cuda; cpu runs the same checks here).
"""

from __future__ import annotations

import csv
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from avemo.approaches import APPROACHES
from avemo.train.bench import write_synthetic_cache
from avemo.train.heads import HeadSettings
from avemo.train.lstm import recurrence
from avemo.train.settings import TrainSettings
from avemo.train.trainer import train

TOLERANCE = 1e-4  # absolute, on probabilities (tests/test_stacked_run.py)


def recurrence_equals_nn_lstm(device: str) -> float:
    """The largest difference of outputs and gradients between the recurrence and nn.LSTM."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(64, 32, batch_first=True).to(device)
    x = torch.randn(8, 12, 64, device=device, requires_grad=True)
    upstream = torch.randn(8, 12, 32, device=device)
    out, _ = lstm(x)
    (out * upstream).sum().backward()
    theirs = [out.detach(), x.grad.clone(), lstm.weight_ih_l0.grad.clone(), lstm.weight_hh_l0.grad.clone()]
    x.grad = None
    w_ih = lstm.weight_ih_l0.detach().T.clone().requires_grad_()
    w_hh = lstm.weight_hh_l0.detach().T.clone().requires_grad_()
    bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()
    mine = recurrence((x @ w_ih + bias).unsqueeze(0), w_hh.unsqueeze(0))[0]
    (mine * upstream).sum().backward()
    ours = [mine.detach(), x.grad, w_ih.grad.T, w_hh.grad.T]
    return max(float((a - b).abs().max()) for a, b in zip(ours, theirs))


def stacked_equals_one_by_one(device: str) -> float:
    """The largest difference of predicted probabilities between a stacked and a one-by-one run."""
    settings = TrainSettings(epochs=3, patience=0, device=device, deterministic=True, head=HeadSettings(dropout=0.0))
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_cache(Path(tmp), clips=120)
        runs = {}
        for stacked in (False, True):
            run = Path(tmp) / f"run-{stacked}"
            train(tmp, run, list(APPROACHES), replace(settings), stacked=stacked)
            runs[stacked] = {a: _probabilities(run / a / "predictions.csv") for a in APPROACHES}
    return max(float(np.abs(runs[True][a] - runs[False][a]).max()) for a in APPROACHES)


def _probabilities(path: Path) -> np.ndarray:
    with open(path) as f:
        return np.array([[float(r[f"p_{n}"]) for n in ("calm", "neutral", "active")] for r in csv.DictReader(f)])


def main(device: str) -> int:
    # torch lets cuDNN's LSTM (one-by-one heads, the reference of check 1) use TF32 on Ampere and later GPUs by
    # default, while the stacked heads' products are fp32: both checks compare the same arithmetic.
    torch.backends.cudnn.allow_tf32 = False
    failed = 0
    for name, check in (
        ("the LSTM recurrence equals nn.LSTM (values, gradients)", recurrence_equals_nn_lstm),
        ("--stacked equals one by one, both --deterministic", stacked_equals_one_by_one),
    ):
        try:
            difference = check(device)
            ok = difference <= TOLERANCE
            print(f"{'PASS' if ok else 'FAIL'} {name} on {device}: largest difference {difference:.2e} (≤ {TOLERANCE:g})")
        except Exception as e:  # noqa: BLE001 - a check script: report the failure and go on to the next check
            ok = False
            print(f"FAIL {name} on {device}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "cuda"))
