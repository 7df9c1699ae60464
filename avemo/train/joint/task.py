"""The joint pass as a task of the one training engine (avemo.train.engine): the examples are the training
clips, the loss is the head's own objective per clip, validation is the loss and accuracy on the head's
validation clips, and the state is the trainable part of the JointModel (not the frozen backbone weights)."""

from __future__ import annotations

import torch
from torch import nn

from avemo import distributed
from avemo.train.joint.clips import Inputs
from avemo.train.joint.model import JointModel
from avemo.train.trainer import supervised_losses

VALIDATION_BATCH = 64  # clips per forward pass when validating


class JointTask:
    counts_correct = False

    def __init__(
        self,
        model: JointModel,
        inputs: Inputs,
        train: torch.Tensor,
        validation: torch.Tensor,
        objective: tuple[str, torch.Tensor | None],
    ):
        """`train`, `validation`: clip numbers in canonical order; `objective`: the head's own (supervision at
        the last second or every second, and its class weights or None)."""
        self.model, self.inputs, self.clips = model, inputs, inputs.clips
        self.train, self.validation, self.objective = train, validation, objective
        self.loaded = False

    def examples(self) -> torch.Tensor:
        return self.train

    def losses(self, net: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """Cross-entropy per clip, as the trainer computes it for the head (trainer.supervised_losses)."""
        self._preload()
        supervise, weights = self.objective
        device = self.inputs.device
        lengths, labels = self.clips.lengths[batch].to(device), self.clips.labels[batch].to(device)
        inputs, has_audio = self.inputs.batch(batch), self.clips.has_audio[batch]
        forward = lambda per_step: net(inputs, lengths, has_audio, per_step=per_step)  # noqa: E731
        return supervised_losses(forward, lengths, labels, supervise, weights)

    @torch.inference_mode()
    def validate(self) -> dict:
        """Mean loss and accuracy on the validation clips (each rank its share, summed over ranks); empty
        columns without validation clips."""
        if not len(self.validation):
            return {"validation_loss": "", "validation_accuracy": ""}
        self._preload()
        self.model.eval()
        mine = distributed.my_share(self.validation)
        sums = torch.zeros(3, dtype=torch.float64)  # loss, correct, clips
        for batch in mine.split(VALIDATION_BATCH) if len(mine) else []:  # (an empty tensor splits into one empty part)
            labels = self.clips.labels[batch]
            logits = self.model(self.inputs.batch(batch), self.clips.lengths[batch], self.clips.has_audio[batch]).cpu()
            loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
            sums += torch.stack([loss.double(), (logits.argmax(1) == labels).sum().double(), torch.tensor(len(batch)).double()])
        if distributed.world() > 1:
            sums = sums.to(next(self.model.parameters()).device)
            torch.distributed.all_reduce(sums)
        n = max(float(sums[2]), 1.0)
        return {"validation_loss": float(sums[0]) / n, "validation_accuracy": float(sums[1]) / n}

    def state(self) -> dict:
        return self.model.trainable_state()

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state, strict=False)  # the frozen backbone weights are not in it

    def _preload(self) -> None:
        """The training and validation clips' inputs in memory, at the first use (a finished pass needs none)."""
        if not self.loaded:
            self.inputs.preload(torch.cat([self.train, self.validation]))
            self.loaded = True
