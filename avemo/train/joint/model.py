"""What the joint pass tunes: the backbones (fc6-fc7 on pool5, or whole AlexNets on images), the head's fixed
z-score, and the head; and the head it starts from."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from avemo.approaches import MODALITIES, modalities_of
from avemo.errors import AvemoError
from avemo.extract.alexnet import Fc7, fc7_width
from avemo.train.data import Z_LIMIT
from avemo.train.heads import EmotionHead, head_settings_of, load_head


class JointModel(nn.Module):
    """Backbones (fc6-fc7 on pool5, or whole AlexNets on images) → fixed z-score → the head."""

    def __init__(self, backbones: dict[str, nn.Module], head: EmotionHead, norm: dict | None, from_images: bool, width: int):
        super().__init__()
        self.backbones = nn.ModuleDict(backbones)  # only the modalities the head reads
        self.head = head
        self.from_images = from_images
        for name in MODALITIES:
            mean = torch.zeros(width) if norm is None else norm[f"{name}_mean"].float()
            std = torch.ones(width) if norm is None else norm[f"{name}_std"].float()
            self.register_buffer(f"{name}_mean", mean.clone())
            self.register_buffer(f"{name}_std", std.clone())

    def train(self, mode: bool = True) -> JointModel:
        """Training mode for the head (its dropout) only: AlexNet's dropout stays off, because the head learned
        on deterministic fc7 z-scored with fixed statistics (with it on, the demo's test accuracy fell from 100%
        to 29% in 3 epochs)."""
        super().train(mode)
        self.backbones.eval()
        return self

    def fc7(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """fp32 post-ReLU fc7 [n, width] of pool5 rows (fp16) or uint8 images."""
        net = self.backbones[modality]
        return net(x) if self.from_images else net(x.float())

    def zscore(self, modality: str, fc7: torch.Tensor) -> torch.Tensor:
        """As the trainer's Standardiser: clamped to ±Z_LIMIT (a unit dead on the train seconds stays finite)."""
        z = (fc7 - getattr(self, f"{modality}_mean")) / getattr(self, f"{modality}_std")
        return z.clamp(-Z_LIMIT, Z_LIMIT)

    def forward(
        self, inputs: dict[str, torch.Tensor], lengths: torch.Tensor, audio_mask: torch.Tensor, per_step: bool = False
    ) -> torch.Tensor:
        z = {m: self.zscore(m, self.fc7(m, x)) for m, x in inputs.items()}
        return head_logits(self.head, z, lengths, audio_mask, per_step)

    def trainable_state(self) -> dict:
        """The state dict without the frozen backbone weights (they are the cache's: not saved again)."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbones.") or k in trainable}


def head_logits(
    head: EmotionHead, z: dict[str, torch.Tensor], lengths: torch.Tensor, audio_mask: torch.Tensor, per_step: bool = False
) -> torch.Tensor:
    """The head on packed per-second rows (clip 0's seconds, then clip 1's, …) given per modality; a modality
    the head does not read is passed as zeros."""
    some = next(iter(z.values()))
    visual = z.get("visual", torch.zeros_like(some))
    audio = z.get("audio", torch.zeros_like(some))
    return head(visual, audio, lengths.to(some.device), audio_mask=audio_mask.to(some.device), per_step=per_step)


def load_fc7_head(path: Path, width: int) -> tuple[EmotionHead, dict]:
    """The head of a checkpoint, refused unless it reads fc7 of this width (the backbones': `fc7_width`)."""
    head, saved = load_head(path)
    if head_settings_of(saved).feature_dim != width:
        raise AvemoError(f"{path}: this head reads {head_settings_of(saved).feature_dim}-d features, not AlexNet's fc7 ({width})")
    return head, saved


def joint_model(
    alexnets: dict[str, nn.Module], head: EmotionHead, saved: dict, from_images: bool, fit: str, freeze: bool, device: str
) -> JointModel:
    """The model of the pass on `device`: backbones for the modalities the head reads (fc6-fc7, or whole
    AlexNets with `from_images`), frozen (no gradient computed through them) with `freeze`."""
    for alexnet in alexnets.values():
        alexnet.to(device, memory_format=torch.channels_last)
    backbones = {m: (Fc7(alexnets[m], fit) if from_images else alexnets[m].classifier[:6]) for m in modalities_of(head.approach)}
    width = fc7_width(next(iter(alexnets.values())))
    model = JointModel(backbones, head, saved.get("norm"), from_images, width).to(device)
    for p in model.backbones.parameters():
        p.requires_grad_(not freeze)
    return model
