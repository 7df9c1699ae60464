"""avemo.train.lstm's recurrence equals torch's nn.LSTM, values and gradients, model by model."""

from __future__ import annotations

import pytest
import torch

from avemo.train.lstm import recurrence


def _run_both(steps: int, models: int = 3, batch: int = 4, inputs: int = 7, size: int = 5):
    """Outputs and gradients of `models` nn.LSTMs (float64) and of the stacked recurrence on the same inputs."""
    torch.manual_seed(steps)
    lstms = [torch.nn.LSTM(inputs, size, batch_first=True).double() for _ in range(models)]
    x = torch.randn(models, batch, steps, inputs, dtype=torch.float64)
    upstream = torch.randn(models, batch, steps, size, dtype=torch.float64)  # a loss Σ upstream ⊙ h

    theirs = []
    for m, lstm in enumerate(lstms):
        xm = x[m].clone().requires_grad_()
        out, _ = lstm(xm)
        (out * upstream[m]).sum().backward()
        theirs.append((out.detach(), xm.grad, lstm.weight_ih_l0.grad, lstm.weight_hh_l0.grad, lstm.bias_ih_l0.grad))

    w_ih = torch.stack([lstm.weight_ih_l0.detach().T for lstm in lstms]).requires_grad_()
    w_hh = torch.stack([lstm.weight_hh_l0.detach().T for lstm in lstms]).requires_grad_()
    bias = torch.stack([(lstm.bias_ih_l0 + lstm.bias_hh_l0).detach() for lstm in lstms]).requires_grad_()
    xs = x.clone().requires_grad_()
    gx = torch.baddbmm(bias.unsqueeze(1), xs.view(models, -1, inputs), w_ih).view(models, batch, steps, -1)
    out = recurrence(gx, w_hh)
    (out * upstream).sum().backward()
    mine = [(out[m].detach(), xs.grad[m], w_ih.grad[m].T, w_hh.grad[m].T, bias.grad[m]) for m in range(models)]
    return theirs, mine


@pytest.mark.parametrize("steps", [1, 2, 12])
def test_outputs_and_gradients_equal_torch_nn_lstm(steps):
    theirs, mine = _run_both(steps)
    for reference, got in zip(theirs, mine):
        for name, a, b in zip(("h", "x grad", "W_ih grad", "W_hh grad", "bias grad"), reference, got):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=name)


def test_gradcheck_against_finite_differences():
    gx = torch.randn(2, 3, 4, 8, dtype=torch.float64, requires_grad=True)
    w_hh = torch.randn(2, 2, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(recurrence, (gx, w_hh))


def test_the_state_carries_over_steps():
    """The last step's output depends on the first step's input (the recurrence is not per step)."""
    gx = torch.randn(1, 2, 5, 8)
    w_hh = torch.randn(1, 2, 8)
    changed = gx.clone()
    changed[:, :, 0] += 3
    assert not torch.allclose(recurrence(gx, w_hh)[:, :, -1], recurrence(changed, w_hh)[:, :, -1])
