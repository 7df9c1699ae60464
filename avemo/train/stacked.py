"""Many heads trained at once, equal to training them one by one (issue 15).

The heads of a table (visual, audio, early, modal fusion and late fusion's two per-second MLP classifiers)
× seeds are stacked into one batched model: every parameter of `EmotionHead` gets a leading model axis, and
one step trains every model on its own batch with batched matmuls (`torch.baddbmm`; the pathways g(·) on
each model's real seconds, packed, as EmotionHead) and an explicit LSTM (eq. 6–11, the gate order of torch's
nn.LSTM, over the padded [B, T] layout, with avemo.train.lstm's hand-written backward). The GPU then works on
M models per kernel launch instead of one.

What stays as in `trainer.fit` + `engine.fit`, model by model:
- initial weights: those of `EmotionHead(settings)` built under `torch.manual_seed(seed)`;
- data order: `engine.epoch_order(clips, seed, epoch)` split into minibatches; the audio models skip clips
  without sound, so models may have fewer steps in an epoch: a model without a batch at a step is masked
  (zero loss, no SGD update, its momentum kept);
- loss: the trainer's `supervised_losses` (every or last second, class weights), mean over the model's batch;
- SGD with momentum and weight decay, applied per model (elementwise, so stacking does not mix models);
- validation loss and accuracy after every epoch, selection (loss, accuracy or last, values rounded as the
  engine logs them), patience; each model's selected state is kept in memory, then every clip is predicted.
Not supported: gradient clipping (its norm is per model), torchrun, checkpoints during training (nothing
is resumed mid-way; `avemo train --stacked`, avemo.train.stacked_run, writes each model's files after the
last epoch: `StackedRun.states` gives its selected and last state and its momentum).

Equality: with dropout 0 the logs and probabilities equal one-by-one training up to float rounding (matmuls
grouped differently): tests/test_stacked.py checks 1e-4 over 2 to 6 epochs; they agreed to 1e-6, the 6
decimals of the files. Dropout masks are drawn per epoch from one stream for all models: equal in
distribution, not draw for draw.

Features stay on the device (`FeatureSet.to`); every step's clip numbers are laid out on the host once per
epoch, so the step loop has no host synchronisation (one per epoch, for the validation scores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from avemo.approaches import APPROACHES, N_CLASSES
from avemo.errors import AvemoError
from avemo.log import progress as progress_bar
from avemo.train import engine
from avemo.train.data import FeatureSet, Standardiser, load_features, validation_clips
from avemo.train.heads import EmotionHead, HeadSettings, late_fusion
from avemo.train.lstm import recurrence
from avemo.train.settings import TrainSettings
from avemo.train.trainer import class_weights


@dataclass(frozen=True)
class Kind:
    name: str  # its folder in a run: visual, …, late/visual
    approach: str  # HeadSettings.approach
    temporal: str  # HeadSettings.temporal


# The order of the models in the stack: LSTM heads first, then the per-second classifiers, each kind × seeds.
KINDS = (
    Kind("visual", "visual", "lstm"),
    Kind("audio", "audio", "lstm"),
    Kind("early", "early", "lstm"),
    Kind("modal", "modal", "lstm"),
    Kind("late/visual", "visual", "none"),
    Kind("late/audio", "audio", "none"),
)
PATHWAYS = ("g_visual", "g_audio", "g_joint")  # g(x) = ReLU(Wx + b) of eq. 4–5 and early fusion's


def kinds_for(approaches: list[str], late_from: str = "mlp") -> list[Kind]:
    """The heads to train for these approaches (late fusion: its MLP classifiers, or the visual and audio heads)."""
    wanted = {a for a in approaches if a != "late"}
    if "late" in approaches:
        wanted |= {"late/visual", "late/audio"} if late_from == "mlp" else {"visual", "audio"}
    unknown = set(approaches) - set(APPROACHES)
    if unknown:
        raise AvemoError(f"approach {sorted(unknown)[0]!r}: must be one of {', '.join(APPROACHES)}")
    return [k for k in KINDS if k.name in wanted]


# -- the stacked parameters --------------------------------------------------------------------------------
class Stack:
    """The parameters of M heads (kinds × seeds), each EmotionHead's tensor stacked along a leading model axis
    over the models that have it (`owners`: their model numbers, in model order). Weight matrices are stored
    transposed, [M, in, out], so that their gradients come out in the parameters' layout (no copy per step)."""

    def __init__(
        self, kinds: list[Kind], seeds: list[int], head: HeadSettings, device: str, models: list[tuple[Kind, int]] | None = None
    ):
        # `models`: some (kind, seed) pairs instead of kinds × seeds, in the order of KINDS
        self.models = [(kind, seed) for kind in kinds for seed in seeds] if models is None else models
        self.head = head
        pieces: dict[str, list[torch.Tensor]] = {}
        owners: dict[str, list[int]] = {}
        self.trainable: set[str] = set()
        self.local: list[dict[str, tuple[str, int]]] = []  # per model: its state-dict name → (stacked name, row)
        for m, (kind, seed) in enumerate(self.models):
            torch.manual_seed(seed)  # the initial weights, as trainer.fit makes them
            model = EmotionHead(replace(head, approach=kind.approach, temporal=kind.temporal))
            learned = {name for name, _ in model.named_parameters()}
            self.local.append({})
            for name, value in model.state_dict().items():
                key = f"none.{name}" if kind.temporal == "none" and name.startswith("mlp.") else name
                self.local[m][name] = (key, len(pieces.get(key, [])))
                pieces.setdefault(key, []).append(value.T if value.dim() == 2 else value)
                owners.setdefault(key, []).append(m)
                if name in learned:
                    self.trainable.add(key)
        self.params = {k: torch.stack(v).to(device).requires_grad_(k in self.trainable) for k, v in pieces.items()}
        self.owners = {k: torch.tensor(v, device=device) for k, v in owners.items()}
        self.kinds_of = {k: [self.models[m][0] for m in v] for k, v in owners.items()}

    def rows(self, key: str, kind: Kind) -> slice:
        """The rows of `kind`'s models in the stacked tensor `key` (contiguous: models are in kind order)."""
        kinds = self.kinds_of[key]
        start = kinds.index(kind)
        return slice(start, start + kinds.count(kind))

    def head_state(self, m: int, params: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Model m's state dict, loadable into its EmotionHead, from the stacked `params` (default: the current
        ones; a dict of some keys, such as momentum buffers, gives those entries)."""
        params = self.params if params is None else params
        state = {name: params[key][row].detach().cpu() for name, (key, row) in self.local[m].items() if key in params}
        return {name: (value.T if value.dim() == 2 else value).contiguous() for name, value in state.items()}

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.params.items()}

    @torch.no_grad()
    def keep(self, best: dict[str, torch.Tensor], improved: torch.Tensor) -> None:
        """Copy the current parameters of the models where `improved` [M] is True into `best`."""
        for key, value in self.params.items():
            mask = improved[self.owners[key]].view(-1, *[1] * (value.dim() - 1))
            best[key].copy_(torch.where(mask, value, best[key]))

    @torch.no_grad()
    def load(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in self.params.items():
            value.copy_(state[key])


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x W_m + b_m per model: x [M, N, in] (or [1, N, in], shared by all), weight [M, in, out] → [M, N, out]."""
    if x.shape[0] == weight.shape[0]:
        return torch.baddbmm(bias.unsqueeze(1), x, weight)
    m, d, out = weight.shape
    y = torch.addmm(bias.reshape(-1), x[0], weight.transpose(0, 1).reshape(d, m * out))  # one GEMM for all models
    return y.view(-1, m, out).transpose(0, 1)


def _pick(t: torch.Tensor, models: torch.Tensor) -> torch.Tensor:
    """The rows of `models` along the model axis, or `t` itself when it is shared ([1, …])."""
    return t if t.shape[0] == 1 else t[models]


# -- the batched forward -------------------------------------------------------------------------------
@dataclass
class Batch:
    """The inputs of one step (Mr = M: one batch per model; 1: one batch shared by all models). The pathways
    run on packed rows (real seconds only, as EmotionHead); the LSTM on the padded [B, T] layout."""

    packed: torch.Tensor  # [Mr, N] feature rows of the batch's seconds, clip by clip (0 after the last)
    slot: torch.Tensor  # [Mr, N] each packed row's place b·T + t in the padded layout (B·T after the last)
    packed_keep: torch.Tensor  # [Mr, N] float, 1 where the row's clip has sound
    valid: torch.Tensor  # [Mr, B, T] bool: a real second
    lengths: torch.Tensor  # seconds per clip (0: no clip in this slot)
    keep: torch.Tensor  # [Mr, B] float, 1 where the clip has sound
    labels: torch.Tensor  # [Mr, B]


def _pathway(stack: Stack, data: FeatureSet, name: str, batch: Batch) -> torch.Tensor:
    """g(x) = ReLU(W x + b) of every model with pathway `name`, on its rows: [Mp, B·T, hidden]."""
    key = f"{name}.0"
    owners = stack.owners[f"{key}.weight"]
    rows = _pick(batch.packed, owners)
    if name == "g_joint":  # early fusion: [audio (0 without sound), visual], as EmotionHead.fuse
        keep = _pick(batch.packed_keep, owners)[:, :, None]
        x = torch.cat([data.gather("audio", rows) * keep, data.gather("visual", rows)], dim=-1)
    else:
        x = data.gather("visual" if name == "g_visual" else "audio", rows)
    g = torch.relu(_linear(x, stack.params[f"{key}.weight"], stack.params[f"{key}.bias"]))  # [Mp, N, hidden]
    m, _, hidden = g.shape
    slot = _pick(batch.slot, owners).expand(m, -1)[:, :, None].expand(-1, -1, hidden)
    _, b, steps = batch.valid.shape
    return g.new_zeros(m, b * steps + 1, hidden).scatter(1, slot, g)[:, :-1]  # padded layout, 0 where no second


def _fuse(stack: Stack, kind: Kind, g: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
    """The fused features per second of `kind`'s models (EmotionHead.fuse): [Mk, B·T, hidden]."""
    if kind.approach == "early":
        return g["g_joint"][stack.rows("g_joint.0.weight", kind)]
    if kind.approach != "modal":
        name = f"g_{kind.approach}"
        return g[name][stack.rows(f"{name}.0.weight", kind)]
    steps = batch.valid.shape[2]
    keep = _pick(batch.keep, stack.owners["alpha_audio"])
    keep = keep[:, :, None].expand(-1, -1, steps).reshape(keep.shape[0], -1, 1)  # per second
    alpha_a, alpha_v = (stack.params[k].view(-1, 1, 1) for k in ("alpha_audio", "alpha_visual"))
    heard = alpha_a * g["g_audio"][stack.rows("g_audio.0.weight", kind)]
    return heard * keep + alpha_v * g["g_visual"][stack.rows("g_visual.0.weight", kind)]


def _lstm(stack: Stack, x: torch.Tensor) -> torch.Tensor:
    """Eq. 6–11 for every model: x [M, B, T, in] → hidden states [M, B, T, H] (h_0 = c_0 = 0, torch's gate
    order; avemo.train.lstm: a few kernels per second of the clips, for GPUs that wait on launches)."""
    p = stack.params
    m, b, steps, _ = x.shape
    gates_x = _linear(x.reshape(m, b * steps, -1), p["lstm.weight_ih_l0"], p["lstm.bias_ih_l0"] + p["lstm.bias_hh_l0"])
    return recurrence(gates_x.view(m, b, steps, -1), p["lstm.weight_hh_l0"])


def _mlp(stack: Stack, prefix: str, x: torch.Tensor, dropout: torch.Generator | None) -> torch.Tensor:
    """The MLP (linear, ReLU, dropout, linear) of every model: [M, N, in] → logits [M, N, 3]."""
    p = stack.params
    hidden = torch.relu(_linear(x, p[f"{prefix}mlp.0.weight"], p[f"{prefix}mlp.0.bias"]))
    rate = stack.head.dropout
    if dropout is not None and rate > 0:
        kept = torch.rand(hidden.shape, generator=dropout, device=hidden.device) >= rate
        hidden = hidden * kept / (1 - rate)
    return _linear(hidden, p[f"{prefix}mlp.3.weight"], p[f"{prefix}mlp.3.bias"])


def forward(stack: Stack, data: FeatureSet, batch: Batch, dropout: torch.Generator | None = None) -> torch.Tensor:
    """Per-second outputs of every model [M, B, T, 3], as EmotionHead(per_step=True) gives them: logits (LSTM
    heads), or the log of the running mean of the seconds' probabilities (per-second classifiers)."""
    _, b, steps = batch.valid.shape
    g = {name: _pathway(stack, data, name, batch) for name in PATHWAYS if f"{name}.0.weight" in stack.params}
    kinds = list(dict.fromkeys(kind for kind, _ in stack.models))
    outs = []
    recurrent = [_fuse(stack, k, g, batch) for k in kinds if k.temporal == "lstm"]
    if recurrent:
        x = torch.cat(recurrent).view(-1, b, steps, stack.head.hidden)
        states = _lstm(stack, x)
        outs.append(_mlp(stack, "", states.reshape(states.shape[0], b * steps, -1), dropout))
    flat = [_fuse(stack, k, g, batch) for k in kinds if k.temporal == "none"]
    if flat:
        probs = torch.softmax(_mlp(stack, "none.", torch.cat(flat), dropout), dim=2).view(-1, b, steps, N_CLASSES)
        seen = torch.arange(1, steps + 1, device=probs.device, dtype=probs.dtype).view(1, 1, steps, 1)
        outs.append((probs.cumsum(2) / seen).clamp_min(1e-12).log().view(-1, b * steps, N_CLASSES))
    return torch.cat(outs).view(-1, b, steps, N_CLASSES)


def batch_losses(out: torch.Tensor, batch: Batch, supervise: str, weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy per model and clip [M, B] (trainer.supervised_losses); 0 for empty slots."""
    m, b, steps, _ = out.shape
    labels = batch.labels.expand(m, b)
    logp = torch.log_softmax(out, dim=3)
    if supervise == "last":
        last = (batch.lengths - 1).clamp_min(0).expand(m, b)
        logp = logp.gather(2, last[:, :, None, None].expand(m, b, 1, N_CLASSES))
        losses = -logp.gather(3, labels[:, :, None, None]).view(m, b)
    else:
        per_row = -logp.gather(3, labels[:, :, None, None].expand(m, b, steps, 1)).squeeze(3)
        losses = (per_row * batch.valid).sum(2) / batch.lengths.clamp_min(1)
    if weights is not None:
        losses = losses * weights.gather(1, labels)
    return torch.where(batch.lengths > 0, losses, 0)


# -- one device-resident index of the clips -----------------------------------------------------------------
class Clips:
    """Where each clip's seconds are, its length, label and audio flag, on the device (and lengths on the host)."""

    def __init__(self, data: FeatureSet, device: str):
        self.lengths_host = data.lengths
        self.offsets, self.lengths = data.offsets.to(device), data.lengths.to(device)
        self.labels, self.has_audio = data.labels.to(device), data.has_audio.to(device)
        self.device = device

    def batch(self, clips: torch.Tensor, steps: int, width: int) -> Batch:
        """The batch of clip numbers `clips` [Mr, B] on the device (-1: an empty slot, after the clips), padded
        to `steps` seconds per clip and `width` packed rows per model (both known on the host: no sync)."""
        present = clips >= 0
        number = clips.clamp_min(0)
        lengths = torch.where(present, self.lengths[number], 0)
        ends = lengths.cumsum(1)
        j = torch.arange(width, device=clips.device).expand(len(clips), width).contiguous()
        owner = torch.searchsorted(ends, j, right=True)  # the slot of packed row j's clip (B: none)
        real = owner < clips.shape[1]
        owner = owner.clamp_max(clips.shape[1] - 1)
        t = j - (ends - lengths).gather(1, owner)
        packed = torch.where(real, self.offsets[number].gather(1, owner) + t, 0)
        slot = torch.where(real, owner * steps + t, clips.shape[1] * steps)
        keep = self.has_audio[number].float()
        valid = torch.arange(steps, device=clips.device) < lengths[..., None]
        return Batch(packed, slot, keep.gather(1, owner), valid, lengths, keep, self.labels[number])


# -- SGD, per model ------------------------------------------------------------------------------------
class StackedSGD:
    """`engine.sgd` (torch's SGD, fused where it can be) over the stacked parameters: elementwise, so equal to
    one optimizer per model. After a step where some models had no batch, their parameters and momentum are
    put back as they were (one optimizer per model would not have stepped)."""

    def __init__(self, stack: Stack, settings: TrainSettings):
        self.stack = stack
        self.keys = sorted(stack.trainable)
        params = [stack.params[k] for k in self.keys]
        self.optimizer = engine.sgd(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)

    def momenta(self) -> dict[str, torch.Tensor]:
        """The momentum buffers, by stacked name (for last.pt: `Stack.head_state(m, momenta)`)."""
        buffers = {key: self.optimizer.state.get(self.stack.params[key], {}).get("momentum_buffer") for key in self.keys}
        return {key: value.detach().clone() for key, value in buffers.items() if value is not None}

    def step(self, active: torch.Tensor | None) -> None:
        """One step; `active` [M] (bool): the models that had a batch, None when all had one."""
        before = None if active is None else self._state()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=False)  # reuse the gradient buffers
        if before is not None:
            self._restore(before, active)

    @torch.no_grad()
    def _state(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        out = []
        for key in self.keys:
            param = self.stack.params[key]
            momentum = self.optimizer.state.get(param, {}).get("momentum_buffer")
            out.append((param.detach().clone(), None if momentum is None else momentum.clone()))
        return out

    @torch.no_grad()
    def _restore(self, before: list[tuple[torch.Tensor, torch.Tensor | None]], active: torch.Tensor) -> None:
        for key, (param_before, momentum_before) in zip(self.keys, before):
            param = self.stack.params[key]
            on = active[self.stack.owners[key]].view(-1, *[1] * (param.dim() - 1))
            param.copy_(torch.where(on, param, param_before))
            momentum = self.optimizer.state.get(param, {}).get("momentum_buffer")
            if momentum is not None:
                momentum.copy_(torch.where(on, momentum, 0 if momentum_before is None else momentum_before))


# -- training -------------------------------------------------------------------------------------------
@dataclass
class Model:
    """One trained head of the stack."""

    kind: Kind
    seed: int
    examples: torch.Tensor  # the clips it fits
    log: list[dict] = field(default_factory=list)  # log.csv's rows
    best: float | None = None
    best_epoch: int = 0
    stale: int = 0
    stopped: bool = False
    probabilities: np.ndarray | None = None  # every clip, from the selected epoch


@dataclass
class StackedRun:
    models: list[Model]
    clip_ids: np.ndarray
    has_audio: np.ndarray
    stack: Stack | None = None  # holding the selected states
    last: dict[str, torch.Tensor] = field(default_factory=dict)  # the stacked parameters after the last epoch
    momenta: dict[str, torch.Tensor] = field(default_factory=dict)  # and SGD's momentum buffers then

    def states(self, number: int) -> tuple[dict, dict, dict]:
        """Model `number`'s selected state, last state and momentum buffers, by its EmotionHead's names."""
        stack = self.stack
        return stack.head_state(number), stack.head_state(number, self.last), stack.head_state(number, self.momenta)

    def model(self, kind: str, seed: int) -> Model:
        return next(m for m in self.models if m.kind.name == kind and m.seed == seed)

    def probabilities(self, approach: str, seed: int) -> np.ndarray:
        """Class probabilities of every clip for one approach of Table 1 (late fusion: eq. 14 of its two parts)."""
        if approach != "late":
            return self.model(approach, seed).probabilities
        names = [k.name for k in {m.kind for m in self.models}]
        prefix = "late/" if "late/visual" in names else ""
        parts = {mod: self.model(prefix + mod, seed).probabilities for mod in ("audio", "visual")}
        return late_fusion(parts["audio"], parts["visual"], self.has_audio)


def _check(settings: TrainSettings) -> None:
    if settings.clip_grad > 0:
        raise AvemoError("stacked training: gradient clipping (clip_grad) is not supported; train one by one")


def _schedule(
    models: list[Model], epoch: int, batch_size: int, lengths: torch.Tensor
) -> tuple[torch.Tensor, list[int], list[int]]:
    """The clip numbers of every step of this epoch [steps, M, batch] (-1: no clip; a stopped model has none),
    each model's batches those of `engine.epoch_order`; each step's longest clip and most seconds of a model."""
    orders = [engine.epoch_order(m.examples, m.seed, epoch) if not m.stopped else m.examples[:0] for m in models]
    steps = max(math.ceil(len(o) / batch_size) for o in orders)
    grid = torch.full((len(models), steps * batch_size), -1, dtype=torch.int64)
    for number, order in enumerate(orders):
        grid[number, : len(order)] = order
    grid = grid.view(len(models), steps, batch_size).transpose(0, 1).contiguous()
    seconds = torch.where(grid >= 0, lengths[grid.clamp_min(0)], 0)  # [steps, M, batch]
    return grid, seconds.flatten(1).amax(1).tolist(), seconds.sum(2).amax(1).tolist()


def train_epoch(
    stack: Stack, data: FeatureSet, clips: Clips, models: list[Model], settings: TrainSettings, state: dict
) -> torch.Tensor:
    """One epoch (number state["epoch"]) of every active model; the sum of each model's per-clip train
    losses [M] (on the device)."""
    grid, longest, widths = _schedule(models, state["epoch"], settings.batch_size, clips.lengths_host)
    counts = (grid >= 0).sum(2)
    idle = (counts == 0).any(1).tolist()  # on the host: steps where some model has no batch
    grid, counts = grid.to(clips.device), counts.to(clips.device)
    active = counts > 0
    sums = torch.zeros(len(models), dtype=torch.float64, device=clips.device)
    generator = None
    if stack.head.dropout > 0:
        generator = torch.Generator(clips.device).manual_seed(engine.stream(*[m.seed for m in models], state["epoch"]))
    for step, steps in enumerate(longest):
        batch = clips.batch(grid[step], steps, widths[step])
        losses = batch_losses(forward(stack, data, batch, generator), batch, settings.supervise, state["weights"])
        (losses.sum(1) / counts[step].clamp_min(1)).sum().backward()
        state["sgd"].step(active[step] if idle[step] else None)
        sums += losses.detach().sum(1).double()
    return sums


@torch.no_grad()
def predict(stack: Stack, data: FeatureSet, clips: Clips, numbers: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Class probabilities [M, clips, 3] of every model (read at each clip's last second)."""
    out = []
    for part in numbers.split(chunk):
        lengths = clips.lengths_host[part]
        batch = clips.batch(part.to(clips.device)[None], int(lengths.max()), int(lengths.sum()))
        logits = forward(stack, data, batch)
        last = (batch.lengths - 1).expand(logits.shape[0], -1)
        at_last = logits.gather(2, last[:, :, None, None].expand(-1, -1, 1, N_CLASSES)).squeeze(2)
        out.append(torch.softmax(at_last, dim=2))
    m = len(stack.models)
    return torch.cat(out, dim=1) if out else torch.zeros(m, 0, N_CLASSES, device=clips.device)


def _validate(stack: Stack, data: FeatureSet, clips: Clips, validation: torch.Tensor) -> list[dict]:
    """{"validation_loss", "validation_accuracy"} per model (HeadTask.validate), one host sync for all."""
    if not len(validation):
        return [{} for _ in stack.models]
    probs = predict(stack, data, clips, validation).double()
    truth = clips.labels[validation.to(clips.device)]
    p_true = probs[:, torch.arange(len(validation), device=probs.device), truth]
    loss = -p_true.clamp_min(1e-12).log().mean(1)
    accuracy = (probs.argmax(2) == truth).double().mean(1)
    values = torch.stack([loss, accuracy], 1).cpu().tolist()
    return [{"validation_loss": a, "validation_accuracy": b} for a, b in values]


def _score(select: str, row: dict) -> float:
    """Higher is better (as the engine scores an epoch)."""
    if select == "loss" and "validation_loss" in row:
        return -row["validation_loss"]
    if select == "accuracy" and "validation_accuracy" in row:
        return row["validation_accuracy"]
    return float(row["epoch"])


def _consider(models: list[Model], rows: list[dict], settings: TrainSettings) -> list[bool]:
    """Log each active model's epoch, as the engine does (values rounded to 6 decimals); which improved."""
    improved = []
    for model, row in zip(models, rows):
        if model.stopped:
            improved.append(False)
            continue
        row = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
        model.log.append(row)
        score = _score(settings.select, row)
        better = model.best is None or score > model.best
        if better:
            model.best, model.best_epoch, model.stale = score, row["epoch"], 0
        else:
            model.stale += 1
        model.stopped = settings.patience > 0 and model.stale >= settings.patience
        improved.append(better)
    return improved


def train_stacked(
    data: FeatureSet,
    settings: TrainSettings,
    approaches: list[str],
    seeds: list[int],
    fitting: torch.Tensor,
    validation: torch.Tensor,
) -> StackedRun:
    """Train every head of `approaches` × `seeds` at once on `fitting` (features already normalised), select
    each model's epoch on `validation`; returns the logs and every clip's probabilities per model. The
    features are moved to `settings.device`."""
    kinds = kinds_for(approaches, settings.late_from)
    return train_models(data, settings, [(kind, seed) for kind in kinds for seed in seeds], fitting, validation)


def train_models(
    data: FeatureSet, settings: TrainSettings, pairs: list[tuple[Kind, int]], fitting: torch.Tensor, validation: torch.Tensor
) -> StackedRun:
    """`train_stacked` of some (kind, seed) pairs, in the order of KINDS."""
    stack, clips, models, state = start(data, settings, pairs, fitting)
    device = settings.device
    best = stack.snapshot()
    for epoch in progress_bar(range(1, settings.epochs + 1), desc="train stacked", unit="epoch"):
        if all(m.stopped for m in models):
            break
        state["epoch"] = epoch
        sums = train_epoch(stack, data, clips, models, settings, state).cpu().tolist()
        validated = _validate(stack, data, clips, validation)
        rows = [{"epoch": epoch, "train_loss": s / max(len(m.examples), 1)} | v for s, m, v in zip(sums, models, validated)]
        improved = _consider(models, rows, settings)
        stack.keep(best, torch.tensor(improved, device=device))
    last, momenta = stack.snapshot(), state["sgd"].momenta()
    stack.load(best)
    probs = predict(stack, data, clips, torch.arange(len(data.labels))).cpu().numpy()
    for number, model in enumerate(models):
        model.probabilities = probs[number]
    return StackedRun(models, data.clip_ids, data.has_audio.numpy(), stack, last, momenta)


def start(
    data: FeatureSet, settings: TrainSettings, pairs: list[tuple[Kind, int]], fitting: torch.Tensor
) -> tuple[Stack, Clips, list[Model], dict]:
    """The stack of `pairs` with its initial weights, the device's clip index, the models and the training
    state (class weights, SGD) that `train_epoch` takes; the features are moved to `settings.device`."""
    _check(settings)
    device = settings.device
    data.to(device)
    clips = Clips(data, device)
    stack = Stack([], [], settings.head, device, models=pairs)
    models = [Model(kind, seed, _examples(data, kind, fitting)) for kind, seed in stack.models]
    weights = [class_weights(data.labels[m.examples], settings.class_weights, device) for m in models]
    state = {"weights": None if weights[0] is None else torch.stack(weights)}
    state["sgd"] = StackedSGD(stack, settings)
    return stack, clips, models, state


def _examples(data: FeatureSet, kind: Kind, fitting: torch.Tensor) -> torch.Tensor:
    """The clips a model fits (trainer.fit): the audio models leave out clips without sound."""
    if kind.approach != "audio":
        return fitting
    clips = fitting[data.has_audio[fitting]]
    if not len(clips):
        raise AvemoError("no train clip has an audio stream: the audio-only head cannot be trained")
    return clips


def train_table(
    cache: str | Path, approaches: list[str], settings: TrainSettings, seeds: list[int], memory: str = "ram"
) -> StackedRun:
    """`train_stacked` on a feature cache, prepared as `avemo train` prepares it (the same validation split,
    z-scores of the clips fitted)."""
    data = load_features(cache, memory)
    device = settings.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AvemoError(f"device {device}: torch sees no GPU here")
    settings = replace(settings, head=replace(settings.head, feature_dim=data.visual.shape[1]))
    held = validation_clips(data, settings.validation, settings.validation_seed, cache)
    train = data.subset("train")
    fitting = train[~torch.isin(train, held.clips)]
    Standardiser.fit(data, settings.feature_norm, fitting).normalise_in_place(data)
    return train_stacked(data, settings, approaches, seeds, fitting, held.clips)
