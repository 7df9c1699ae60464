"""The joint end-to-end pass (the design card's optional joint fine-tuning pass): gradients flow again from a
trained head into the two fine-tuned AlexNets, whose inputs come from the media cache (never from the videos).

Start: the head of `RUN/<approach>/model.pt` (or `RUN/<approach>/seed-<s>/model.pt`), its z-score statistics
(kept fixed: the head was trained on fc7 standardised with them), and the per-modality AlexNets of
`CACHE/models/{visual,audio}.pt` (or, for a cache extracted with `--finetune none`, the base AlexNet named in
the features manifest). One step: fc7 of every second of a minibatch of clips → z-score → head → clip logits
→ the head's own loss with the clip labels; SGD updates the head and the backbones together.

Layers (`JointSettings.layers`):
- `fc` (default): fc6 and fc7 are trained, the convolutions stay frozen, so their output, pool5, never
  changes and is read from `CACHE/pool5` (as extraction's fine-tuning mode `fc` does): the convolutions are
  over 90% of AlexNet's cost and are never run. A cache without a usable pool5 store gets pool5 computed
  once, in memory, from the cached images.
- `all`: every layer is trained; key frames and spectrograms are read from `CACHE/media` per batch.
AlexNet's fc8 (its 3-way fine-tuning layer) is not used: the head classifies. It is kept, untouched, in the
saved state dicts so `build_alexnet(PATH)` loads them.

Which clips: the train split minus the validation clips the head's checkpoint lists (`"validation"`); the
test split is never read while training (only for the final predictions). With validation clips, the epoch
with the lowest validation loss is kept (`select`; epoch 0 is the start, so the pass never ends worse on
validation than the head it began from); without, the last.

Defaults (the paper gives none; ours, cited): 3 epochs (the head and backbones are already trained: this pass
adjusts them); head learning rate 0.001, a tenth of the head's own 0.01 (fine-tuning a trained model, as
Caffe's fine-tuning recipe lowers it tenfold); backbone learning rate 0.0001, ten times smaller again
("discriminative" rates: layers far from the loss and trained on more data move less, Howard & Ruder 2018,
ULMFiT); momentum 0.9 for both (AlexNet's and the trainer's); weight decay 5e-4 on the backbones (AlexNet's,
as in extraction's fine-tuning) and none on the head (as the trainer); minibatches of 32 clips (the
trainer's). A backbone learning rate of 0 freezes the backbones (no gradient is computed through them).

The training loop is the one engine's (avemo.train.engine: epochs, random streams per seed and epoch,
selection, checkpoints, torchrun); the pass is a task of it (`task.JointTask`).

Modules: `model` (JointModel: backbones → fixed z-score → head; the head it starts from), `clips` (the cache
read: clips, pool5 rows, images), `task` (the engine task), `export` (predictions and the feature export),
`tune` (`joint_train`: start, pass, outputs). Settings: avemo.train.settings.JointSettings. Docs: docs/joint.md
(outputs, resume, export, torchrun, cost).
"""

from avemo.train.joint.tune import joint_train
from avemo.train.settings import JointSettings

__all__ = ["JointSettings", "joint_train"]
