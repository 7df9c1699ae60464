"""The paper's heads over per-second fc7 features (paper eq. 3–12, "Experiment Settings").

approach  inputs per second                  then
modal     α_a·g(x_a; w_a) + α_v·g(x_v; w_v)  LSTM → last valid step → MLP → 3-way softmax   (eq. 3–5)
visual    g(x_v; w_v)                        same
audio     g(x_a; w_a)                        same
early     g([x_a, x_v]) on the 8192-d concat same
(late fusion combines the probabilities of a visual and an audio model: `late_fusion`, eq. 14.)

The paper's late fusion mixes "two MLP classifiers" (eq. 14): `temporal="none"` builds one, a visual or audio
head without the LSTM: g(x) → MLP → softmax on every second alone, and the clip's probabilities are the
mean of its seconds' (output t: the mean over seconds 0..t, returned as log-probabilities, so the softmax
and cross-entropy of the trainer apply unchanged).

g(x; w) = ReLU(W x + b), 4096 → 512 ("feature size of 512 for both visual pathway and audio pathway");
LSTM with 256 units (Fig. 2: 256 is best); MLP with one hidden layer of 64 units, ReLU, dropout 0.5.
torch's LSTM computes exactly eq. 6–11 (input, forget, output gates, cell candidate g_t, c_t, h_t).

Inputs are **packed**: `[N, feature_dim]` rows, the seconds of clip 0, then of clip 1, …, N = lengths.sum().
The per-second layers g(·), the costliest part, run on real seconds only; the fused rows are then laid out
as a padded [B, T, hidden] batch for the LSTM, whose output is read at each clip's last second.

Clips without an audio stream (`audio_mask` False) must not teach the model that silence means calm: their
audio term is dropped from eq. 3 (modal), their audio half of the early-fusion input is set to 0 (the train
mean after z-scoring), and the trainer leaves them out of the audio-only model's training.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avemo.approaches import ALPHA_LATE, N_CLASSES
from avemo.approaches import APPROACHES as APPROACHES  # the table's, still importable from here
from avemo.atomic import load_torch
from avemo.errors import AvemoError


@dataclass(frozen=True)
class HeadSettings:
    approach: str = "modal"
    feature_dim: int = 4096  # AlexNet fc7
    hidden: int = 512  # paper: "feature size of 512 for both visual pathway and audio pathway"
    lstm_hidden: int = 256  # paper, Fig. 2: 256 hidden units gave the best results
    mlp_hidden: int = 64  # paper: "one hidden layer with 64 hidden units"
    dropout: float = 0.5  # paper: "dropout ... the factor is set 0.5"
    alpha_audio: float = 0.5  # α_a of eq. 3: the start value, or the value when learn_alpha is False
    alpha_visual: float = 0.5  # α_v of eq. 3
    learn_alpha: bool = True  # the paper does not say whether α_a, α_v are learned; False keeps them fixed
    temporal: str = "lstm"  # lstm (eq. 6–11) | none: late fusion's per-second MLP classifiers (module docstring)


def head_inputs(approach: str) -> tuple[str, ...]:
    """The modalities an approach's head reads (FeatureSet.batch gathers only those)."""
    return {"visual": ("visual",), "audio": ("audio",)}.get(approach, ("visual", "audio"))


class EmotionHead(nn.Module):
    def __init__(self, settings: HeadSettings = HeadSettings()):
        super().__init__()
        if settings.approach not in ("visual", "audio", "early", "modal"):
            raise ValueError(f"no single head for approach {settings.approach!r}")
        if settings.temporal not in ("lstm", "none"):
            raise ValueError(f"temporal {settings.temporal!r}: must be lstm or none")
        self.approach = settings.approach
        d, h = settings.feature_dim, settings.hidden
        if settings.approach in ("modal", "audio"):
            self.g_audio = nn.Sequential(nn.Linear(d, h), nn.ReLU())  # eq. 4
        if settings.approach in ("modal", "visual"):
            self.g_visual = nn.Sequential(nn.Linear(d, h), nn.ReLU())  # eq. 5
        if settings.approach == "early":
            self.g_joint = nn.Sequential(nn.Linear(2 * d, h), nn.ReLU())
        if settings.approach == "modal":
            for name in ("alpha_audio", "alpha_visual"):
                value = torch.tensor(float(getattr(settings, name)))
                if settings.learn_alpha:
                    self.register_parameter(name, nn.Parameter(value))
                else:
                    self.register_buffer(name, value)  # kept in the state dict, never trained
        self.lstm = nn.LSTM(h, settings.lstm_hidden, batch_first=True) if settings.temporal == "lstm" else None  # eq. 6–11
        self.mlp = nn.Sequential(
            nn.Linear(settings.lstm_hidden if self.lstm is not None else h, settings.mlp_hidden),
            nn.ReLU(),
            nn.Dropout(settings.dropout),
            nn.Linear(settings.mlp_hidden, N_CLASSES),  # softmax (eq. 12) is in the loss / predict
        )

    def fuse(
        self, visual: torch.Tensor | None, audio: torch.Tensor | None, has_audio: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Fused features per second (eq. 3 for the modal approach), any leading shape; `has_audio` is a bool
        per row (None: every row has audio). A modality the approach does not read may be None."""
        read = visual if visual is not None else audio
        keep = None if has_audio is None else has_audio.to(read.dtype).unsqueeze(-1)
        if self.approach == "modal":
            heard = self.alpha_audio * self.g_audio(audio)
            return (heard if keep is None else heard * keep) + self.alpha_visual * self.g_visual(visual)
        if self.approach == "visual":
            return self.g_visual(visual)
        if self.approach == "audio":
            return self.g_audio(audio)
        return self.g_joint(torch.cat([audio if keep is None else audio * keep, visual], dim=-1))

    def forward(
        self,
        visual: torch.Tensor | None,
        audio: torch.Tensor | None,
        lengths: torch.Tensor,
        audio_mask: torch.Tensor | None = None,
        per_step: bool = False,
    ) -> torch.Tensor:
        """Class logits from packed rows [N, d]: per clip [B, 3], read at its last second; with `per_step`,
        per second [N, 3] (packed like the input), step t having seen seconds 0..t of its clip. Without an
        LSTM (`temporal` none) the logits are log-probabilities: those of the mean over seconds 0..t. A modality
        the approach does not read may be None (`head_inputs`)."""
        device = (visual if visual is not None else audio).device
        lengths = lengths.to(device)
        clip_of_row = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)
        fused = self.fuse(visual, audio, None if audio_mask is None else audio_mask.to(device)[clip_of_row])
        # Lay the rows out as [B, T, hidden]. The LSTM runs over the padded batch: a forward LSTM's state at a
        # clip's last second has not seen the padding, so reading it there equals a packed sequence (tested)
        # and is faster on CPU than packing.
        steps = int(lengths.max())
        starts = torch.cumsum(lengths, 0) - lengths
        time_of_row = torch.arange(len(fused), device=fused.device) - starts[clip_of_row]
        slot = clip_of_row * steps + time_of_row
        read = slot if per_step else slot[starts + lengths - 1]
        if self.lstm is None:  # per-second classifiers: running mean of the seconds' probabilities
            probs = torch.softmax(self.mlp(fused), dim=1)
            padded = probs.new_zeros(len(lengths) * steps, N_CLASSES).index_copy(0, slot, probs).view(len(lengths), steps, -1)
            seen = torch.arange(1, steps + 1, device=probs.device, dtype=probs.dtype).view(1, steps, 1)
            running = (padded.cumsum(1) / seen).reshape(len(lengths) * steps, -1)
            return running[read].clamp_min(1e-12).log()
        padded = fused.new_zeros(len(lengths) * steps, fused.shape[1]).index_copy(0, slot, fused)
        out, _ = self.lstm(padded.view(len(lengths), steps, -1))
        return self.mlp(out.reshape(len(lengths) * steps, -1)[read])


def load_head(path: Path) -> tuple[EmotionHead, dict]:
    """A head checkpoint written by `avemo train` (model.pt): the head, and everything saved with it
    (settings, z-score statistics `norm`, validation clips, …)."""
    if not path.is_file():
        raise AvemoError(f"{path}: no trained head here; train this approach with `avemo train`")
    remedy = f"delete {path.parent} and train it again with `avemo train`"
    saved = load_torch(path, remedy)  # random bytes, a foreign pickle: one line, never torch's advice
    try:
        head = EmotionHead(head_settings_of(saved))
        head.load_state_dict(saved["model"])
    except (KeyError, TypeError, RuntimeError, ValueError, AttributeError) as e:
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise AvemoError(f"{path}: not a head written by `avemo train` ({reason}); {remedy}") from None
    return head, saved


def head_settings_of(saved: dict) -> HeadSettings:
    """The HeadSettings of a checkpoint (fields this version does not know are ignored)."""
    known = {f.name for f in fields(HeadSettings)}
    return HeadSettings(**{k: v for k, v in saved["settings"]["head"].items() if k in known})


def late_fusion(audio: np.ndarray, visual: np.ndarray, has_audio: np.ndarray) -> np.ndarray:
    """Paper eq. 14 for clips with sound; a clip without an audio stream keeps its visual probabilities."""
    return np.where(has_audio[:, None], ALPHA_LATE * audio + (1 - ALPHA_LATE) * visual, visual)
