"""The paper's heads over per-second fc7 features (paper eq. 3–12, "Experiment Settings").

approach  inputs per second                  then
modal     α_a·g(x_a; w_a) + α_v·g(x_v; w_v)  LSTM → last valid step → MLP → 3-way softmax   (eq. 3–5)
visual    g(x_v; w_v)                        same
audio     g(x_a; w_a)                        same
early     g([x_a, x_v]) on the 8192-d concat same
(late fusion combines the probabilities of the visual and audio models: train.trainer.)

g(x; w) = ReLU(W x + b), 4096 → 512 ("feature size of 512 for both visual pathway and audio pathway");
LSTM with 256 units (Fig. 2: 256 is best); MLP with one hidden layer of 64 units, ReLU, dropout 0.5.
torch's LSTM computes exactly eq. 6–11 (input, forget, output gates, cell candidate g_t, c_t, h_t).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

APPROACHES = ("visual", "audio", "early", "late", "modal")  # the rows of the paper's Table 1
N_CLASSES = 3


@dataclass(frozen=True)
class HeadSettings:
    approach: str = "modal"
    feature_dim: int = 4096  # AlexNet fc7
    hidden: int = 512  # paper: "feature size of 512 for both visual pathway and audio pathway"
    lstm_hidden: int = 256  # paper, Fig. 2: 256 hidden units gave the best results
    mlp_hidden: int = 64  # paper: "one hidden layer with 64 hidden units"
    dropout: float = 0.5  # paper: "dropout ... the factor is set 0.5"
    alpha_init: float = 0.5  # α_a and α_v start here and are learned (eq. 3)


class EmotionHead(nn.Module):
    def __init__(self, settings: HeadSettings = HeadSettings()):
        super().__init__()
        if settings.approach not in ("visual", "audio", "early", "modal"):
            raise ValueError(f"no single head for approach {settings.approach!r}")
        self.approach = settings.approach
        d, h = settings.feature_dim, settings.hidden
        in_dim = 2 * d if settings.approach == "early" else d
        if settings.approach in ("modal", "audio"):
            self.g_audio = nn.Sequential(nn.Linear(d, h), nn.ReLU())  # eq. 4
        if settings.approach in ("modal", "visual"):
            self.g_visual = nn.Sequential(nn.Linear(d, h), nn.ReLU())  # eq. 5
        if settings.approach == "early":
            self.g_joint = nn.Sequential(nn.Linear(in_dim, h), nn.ReLU())
        if settings.approach == "modal":
            self.alpha_audio = nn.Parameter(torch.tensor(settings.alpha_init))
            self.alpha_visual = nn.Parameter(torch.tensor(settings.alpha_init))
        self.lstm = nn.LSTM(h, settings.lstm_hidden, batch_first=True)  # eq. 6–11
        self.mlp = nn.Sequential(
            nn.Linear(settings.lstm_hidden, settings.mlp_hidden),
            nn.ReLU(),
            nn.Dropout(settings.dropout),
            nn.Linear(settings.mlp_hidden, N_CLASSES),  # softmax (eq. 12) is in the loss / predict
        )

    def fuse(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Per-second fused features [B, T, hidden] (eq. 3 for the modal approach)."""
        if self.approach == "modal":
            return self.alpha_audio * self.g_audio(audio) + self.alpha_visual * self.g_visual(visual)
        if self.approach == "visual":
            return self.g_visual(visual)
        if self.approach == "audio":
            return self.g_audio(audio)
        return self.g_joint(torch.cat([audio, visual], dim=-1))

    def forward(self, visual: torch.Tensor, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Class logits [B, 3] from the LSTM output at each clip's last valid second."""
        fused = self.fuse(visual, audio)
        # The LSTM runs over the padded batch and each clip's output is read at its last valid step: a
        # forward LSTM's state there has not seen the padding, so this equals a packed sequence (tested),
        # and it is faster on CPU than packing.
        out, _ = self.lstm(fused)
        return self.mlp(out[torch.arange(len(lengths), device=out.device), lengths.to(out.device) - 1])
