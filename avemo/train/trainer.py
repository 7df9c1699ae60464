"""`avemo train`: fit the paper's heads on the train split of a feature cache; write a run directory.

RUN/run.json          what was trained, on which cache, the train class counts
RUN/<approach>/       settings.json, log.csv (loss per epoch), model.pt, predictions.csv (every clip,
                      with its split, true class and class probabilities)

Choices where the paper is silent (options of TrainSettings): SGD with momentum 0.9, learning rate 0.01,
minibatches of 32, 40 epochs, the model of the last epoch (no early stopping, so the test split never
influences the model); features are standardised per dimension with the train split's mean and std, since
fc7 scales differ widely between backbones (random init gives values near 0.005, ImageNet near 1).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avemo.datasets.labels import AROUSAL_NAMES, to_label
from avemo.train.data import FeatureSet, load_features
from avemo.train.heads import APPROACHES, EmotionHead, HeadSettings

LATE_ALPHA = 0.56  # paper eq. 14: p = α·p_a + (1 − α)·p_v with α = 0.56 (after Goyal et al., 2016)


@dataclass(frozen=True)
class TrainSettings:
    head: HeadSettings = field(default_factory=HeadSettings)
    epochs: int = 40
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    seed: int = 0
    feature_norm: str = "zscore"  # zscore | none
    device: str = "cuda" if torch.cuda.is_available() else "cpu"


def train(
    cache: str | Path,
    run: str | Path,
    approaches: list[str],
    settings: TrainSettings = TrainSettings(),
    seeds: list[int] | None = None,
    lstm_sizes: list[int] | None = None,
) -> Path:
    """Train each approach (late fusion reuses or trains the visual and audio models), for every seed and
    LSTM size asked for.

    Layout (what `avemo evaluate` reads): RUN/<approach>/, and in a sweep of LSTM sizes (Fig. 2)
    RUN/<approach>-lstm<N>/ for every size but the paper's 256; with several seeds, one `seed-<s>/` folder
    per seed inside. Each holds settings.json, log.csv, model.pt (not for late) and predictions.csv."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    seeds = seeds or [settings.seed]
    lstm_sizes = lstm_sizes or [settings.head.lstm_hidden]
    data = load_features(cache)
    settings = replace(settings, head=replace(settings.head, feature_dim=data.visual.shape[1]))  # the cache's, e.g. 4096
    # z-score once, in place (the statistics come from the train split and are the same for every approach)
    norm = Standardiser.fit(data, settings.feature_norm, "cpu")
    norm.normalise_in_place(data)
    train_labels = data.labels[data.subset("train")]
    counts = {name: int((train_labels == i).sum()) for i, name in enumerate(AROUSAL_NAMES)}
    info = {"cache": str(Path(cache).resolve()), "approaches": approaches, "seeds": seeds, "lstm_hidden": lstm_sizes}
    (run / "run.json").write_text(json.dumps({**info, "train_counts": counts}, indent=1))
    order = [a for a in APPROACHES if a in approaches or (a in ("visual", "audio") and "late" in approaches)]
    for size in lstm_sizes:
        for seed in seeds:
            probabilities: dict[str, np.ndarray] = {}
            for approach in order:
                main_row = len(lstm_sizes) == 1 or size == HeadSettings.lstm_hidden
                folder = approach if main_row else f"{approach}-lstm{size}"
                out = run / folder / (f"seed-{seed}" if len(seeds) > 1 else "")
                out.mkdir(parents=True, exist_ok=True)
                head = replace(settings.head, approach=approach, lstm_hidden=size)
                approach_settings = replace(settings, head=head, seed=seed)
                (out / "settings.json").write_text(json.dumps(asdict(approach_settings), indent=1))
                if approach == "late":
                    probs = LATE_ALPHA * probabilities["audio"] + (1 - LATE_ALPHA) * probabilities["visual"]
                else:
                    probs = fit(data, approach_settings, out, norm)
                probabilities[approach] = probs
                write_predictions(out / "predictions.csv", data, probs)
                test = data.subset("test")
                if len(test):
                    accuracy = (probs[test.numpy()].argmax(1) == data.labels[test].numpy()).mean()
                    name = folder + (f" seed {seed}" if len(seeds) > 1 else "")
                    print(f"{name}: test accuracy {100 * accuracy:.2f}% on {len(test)} clips")
    return run


def fit(data: FeatureSet, settings: TrainSettings, out: Path, norm: Standardiser) -> np.ndarray:
    """Train one head on the train split of `data` (already normalised by `norm`, which is saved with the
    model for new videos); returns class probabilities for every clip."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    device = settings.device
    model = EmotionHead(settings.head).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum)
    train_clips = data.subset("train")
    log = []
    for epoch in tqdm(range(1, settings.epochs + 1), desc=f"train {settings.head.approach}", unit="epoch"):
        order = train_clips[torch.randperm(len(train_clips), generator=generator)]
        log.append({"epoch": epoch, "train_loss": run_epoch(model, data, order, optimizer, settings)})
    torch.save({"model": model.state_dict(), "norm": norm.state(), "settings": asdict(settings)}, out / "model.pt")
    with open(out / "log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "train_loss"])
        writer.writeheader()
        writer.writerows(log)
    return predict(model, data, torch.arange(len(data.labels)), settings)


def run_epoch(
    model: EmotionHead,
    data: FeatureSet,
    order: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    settings: TrainSettings,
) -> float:
    """One pass of SGD over the clips in `order`, minibatch by minibatch; returns the mean train loss."""
    model.train()
    total, seen = 0.0, 0
    for batch in order.split(settings.batch_size):
        visual, audio, lengths = data.batch(batch, settings.device)
        logits = model(visual.float(), audio.float(), lengths)
        loss = torch.nn.functional.cross_entropy(logits, data.labels[batch].to(settings.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
        seen += len(batch)
    return total / seen


@torch.inference_mode()
def predict(model: EmotionHead, data: FeatureSet, clips: torch.Tensor, settings: TrainSettings) -> np.ndarray:
    model.eval()
    out = []
    for batch in clips.split(256):
        visual, audio, lengths = data.batch(batch, settings.device)
        out.append(torch.softmax(model(visual.float(), audio.float(), lengths), dim=1).cpu())  # eq. 12
    return torch.cat(out).numpy()


class Standardiser:
    """Per-dimension z-scoring of fc7 features with statistics of the train split's seconds only."""

    def __init__(self, stats: dict[str, torch.Tensor] | None):
        self.stats = stats

    @classmethod
    def fit(cls, data: FeatureSet, mode: str, device: str) -> Standardiser:
        if mode == "none":
            return cls(None)
        rows = data.steps[data.subset("train")]
        rows = rows[rows < len(data.visual) - 1]  # real seconds, not padding
        stats = {}
        for name, values in (("visual", data.visual), ("audio", data.audio)):
            x = values[rows].float()
            stats[f"{name}_mean"] = x.mean(0).to(device)
            stats[f"{name}_std"] = x.std(0).clamp_min(1e-6).to(device)
        return cls(stats)

    def normalise_in_place(self, data: FeatureSet, chunk: int = 8192) -> None:
        """Replace the fp16 features by their z-scores, chunk by chunk (no second copy in memory)."""
        if self.stats is None:
            return
        for name in ("visual", "audio"):
            values = getattr(data, name)
            for start in range(0, len(values), chunk):
                values[start : start + chunk] = self._apply(name, values[start : start + chunk]).half()
            values[-1] = 0  # the padding row stays zero

    def _apply(self, name: str, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x if self.stats is None else (x - self.stats[f"{name}_mean"]) / self.stats[f"{name}_std"]

    def visual(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply("visual", x)

    def audio(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply("audio", x)

    def state(self) -> dict | None:
        return None if self.stats is None else {k: v.cpu() for k, v in self.stats.items()}


def write_predictions(path: Path, data: FeatureSet, probs: np.ndarray) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "split", "arousal", "predicted", *(f"p_{n}" for n in AROUSAL_NAMES)])
        for clip_id, split, label, p in zip(data.clip_ids, data.split, data.labels.tolist(), probs):
            writer.writerow([clip_id, split, to_label(label), to_label(int(p.argmax())), *(f"{v:.6f}" for v in p)])
