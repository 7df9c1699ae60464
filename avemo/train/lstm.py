"""The LSTM recurrence of eq. 6–11 with a hand-written backward, for a stack of M heads (avemo.train.stacked).

    z_t = x_t W_ih + b + h_{t-1} W_hh          (the input term x_t W_ih + b is computed by the caller, `gx`)
    i, f, g, o = σ(z_i), σ(z_f), tanh(z_g), σ(z_o)   (torch's nn.LSTM gate order)
    c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ tanh(c_t),   h_0 = c_0 = 0

Why: a stacked training step on a GPU waits on kernel launches, not on arithmetic (issue 15), and autograd
over a Python loop of these equations launches ~30 kernels per second of the clips (each elementwise
operation and its backward). Here the forward keeps the gate activations, and the backward runs the
recurrence in reverse with 5 elementwise operations and one batched product per step: what does not depend
on the step after is computed once over all steps, and the recurrent weight gradient is one product over
all steps. On CPU it is as fast as autograd's loop (and as torch's mkldnn nn.LSTM, which one head keeps).
Checked against nn.LSTM (values and gradients) and torch.autograd.gradcheck (tests/test_lstm.py).
"""

from __future__ import annotations

import torch


class _Recurrence(torch.autograd.Function):
    # Kept per step as [M, T, B, ·]: a step's [M, B, ·] slice is what a batched product takes, and the steps
    # of a model are contiguous, so the weight gradient's product over all steps needs no copy. Temporaries
    # are written in place: on CPU a fresh large buffer per operation costs page faults.

    @staticmethod
    def forward(ctx, gx: torch.Tensor, w_hh: torch.Tensor) -> torch.Tensor:
        m, b, steps, four = gx.shape
        size = four // 4
        gate = slice(2 * size, 3 * size)  # g, the cell candidate: tanh; i, f, o: σ
        acts = gx.new_empty(m, steps, b, four)  # i, f, g, o after their nonlinearities
        cells, tanh_cells, hidden = (gx.new_empty(m, steps, b, size) for _ in range(3))
        h = c = gx.new_zeros(m, b, size)
        for t in range(steps):
            z, a = torch.baddbmm(gx[:, :, t], h, w_hh), acts[:, t]
            torch.sigmoid(z, out=a)
            torch.tanh(z[..., gate], out=a[..., gate])
            c = torch.addcmul(a[..., size : 2 * size] * c, a[..., :size], a[..., gate], out=cells[:, t])
            h = torch.mul(a[..., 3 * size :], torch.tanh(c, out=tanh_cells[:, t]), out=hidden[:, t])
        ctx.save_for_backward(w_hh, acts, cells, tanh_cells, hidden)
        return hidden.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        w_hh, acts, cells, tanh_cells, hidden = ctx.saved_tensors
        m, steps, b, four = acts.shape
        size = four // 4
        i, f, g, o = acts.chunk(4, dim=3)
        # What does not depend on the step after, over all steps at once: ∂z_t/∂(c_t or h_t) per gate, so that
        # ∂L/∂z_t = [dc_t, dc_t, dc_t, dh_t] ⊙ through_t; and ∂c_t/∂h_t (through tanh) for dc_t.
        through = torch.empty_like(acts)
        t_i, t_f, t_g, t_o = through.chunk(4, dim=3)
        torch.sub(1, i, out=t_i).mul_(i).mul_(g)  # σ'(z_i) · g
        torch.sub(1, f, out=t_f).mul_(f)[:, 1:].mul_(cells[:, :-1])  # σ'(z_f) · c_{t-1}, c_{-1} = 0
        t_f[:, 0] = 0
        torch.mul(g, g, out=t_g).neg_().add_(1).mul_(i)  # tanh'(z_g) · i
        torch.sub(1, o, out=t_o).mul_(o).mul_(tanh_cells)  # σ'(z_o) · tanh(c_t)
        cell_of_h = torch.mul(tanh_cells, tanh_cells).neg_().add_(1).mul_(o)  # ∂c_t/∂h_t = o · tanh'(c_t)
        grad_out = grad_out.transpose(1, 2)  # [M, T, B, H], as kept
        dz = torch.empty_like(acts)
        w_back = w_hh.transpose(1, 2)
        dh = dc = None
        for t in reversed(range(steps)):
            dh_t = grad_out[:, t] if dh is None else grad_out[:, t] + dh
            dc = dh_t * cell_of_h[:, t] if dc is None else torch.addcmul(dc * f[:, t + 1], dh_t, cell_of_h[:, t])
            cells3 = (m, b, 3, size)
            torch.mul(through[:, t, :, : 3 * size].view(cells3), dc.unsqueeze(2), out=dz[:, t, :, : 3 * size].view(cells3))
            torch.mul(t_o[:, t], dh_t, out=dz[:, t, :, 3 * size :])
            if t:
                dh = torch.bmm(dz[:, t], w_back)
        grad_gx = dz.transpose(1, 2) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:  # Σ_t h_{t-1}ᵀ ∂L/∂z_t (h_{-1} = 0): one product over all steps
            grad_w = torch.bmm(hidden[:, :-1].reshape(m, -1, size).transpose(1, 2), dz[:, 1:].reshape(m, -1, four))
        return grad_gx, grad_w


def recurrence(gx: torch.Tensor, w_hh: torch.Tensor) -> torch.Tensor:
    """Hidden states [M, B, T, H] (a view, not contiguous) from the input terms gx [M, B, T, 4H]
    (x_t W_ih + b_ih + b_hh) and the recurrent weights w_hh [M, H, 4H] (nn.LSTM's weight_hh_l0 transposed)."""
    return _Recurrence.apply(gx, w_hh)
