"""The settings of training: one dataclass per command part, read by the CLI (its options and help, from each
field's metadata), recorded in settings.json (`to_json`), and read back by `avemo train --config` (`from_json`).
Why each default: docs/training.md, docs/joint.md."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from avemo.approaches import default_device
from avemo.datasets.labels import TARGETS
from avemo.errors import AvemoError

if TYPE_CHECKING:
    from avemo.train.heads import HeadSettings

CHOICES = {
    "supervise": ("last", "every"),
    "late_from": ("mlp", "lstm"),
    "class_weights": ("none", "balanced"),
    "select": ("loss", "accuracy", "last"),
    "feature_norm": ("zscore", "none"),
    "target": TARGETS,  # what one model predicts; `avemo train --target both` trains a model for each
}


def option(text: str, **spec) -> dict:
    """Field metadata: the field is a command-line option with this help; `spec` holds its `choices` or its
    bounds (`min`, `max`, `min_open`, `max_open`), which __post_init__ checks too. A field without it is no option."""
    return {"help": text, **spec}


def _head() -> HeadSettings:
    from avemo.train.heads import HeadSettings  # torch: imported when settings are made, not by the CLI's options

    return HeadSettings()


@dataclass(frozen=True)
class TrainSettings:
    head: HeadSettings = field(default_factory=_head)
    # at most; the paper gives no number
    epochs: int = field(default=40, metadata=option("At most this many epochs.", min=1))
    # paper: "minibatches" (no size given)
    batch_size: int = field(default=32, metadata=option("Clips per minibatch.", min=1))
    # paper: SGD (no rate given)
    lr: float = field(default=0.01, metadata=option("Learning rate (SGD).", min=0, min_open=True))
    momentum: float = field(default=0.9, metadata=option("SGD momentum.", min=0))
    weight_decay: float = field(default=0.0, metadata=option("SGD weight decay.", min=0))
    # max gradient norm; 0 = off, as in the paper
    clip_grad: float = field(default=0.0, metadata=option("Max gradient norm (0: off).", min=0))
    # every: cross-entropy on every second, each step predicting its clip's class (paper: "trained end-to-end to
    # predict the videos emotion class at each time step"); last: on each clip's last second only (the clip's
    # prediction is its last second either way)
    supervise: str = field(
        default="every",
        metadata=option(
            "Loss on every second (paper: a prediction at each time step), or on each clip's last second only.",
            choices=CHOICES["supervise"],
        ),
    )
    # late fusion (eq. 14) mixes "two MLP classifiers" (paper): mlp trains a per-second MLP per modality
    # (heads.HeadSettings.temporal none) in RUN/late/; lstm mixes the visual-only and audio-only LSTM heads
    late_from: str = field(
        default="mlp",
        metadata=option(
            "Late fusion of two per-second MLP classifiers (paper eq. 14), or of the visual and audio LSTM heads.",
            choices=CHOICES["late_from"],
        ),
    )
    # balanced: weight n / (3·n_class) per clip; off by default, as in the paper
    class_weights: str = field(
        default="none", metadata=option("Weight the loss by inverse class frequency.", choices=CHOICES["class_weights"])
    )
    # fraction of the train clips held out for model selection; 0 = keep the last epoch; None = the split the
    # cache's extraction left out of fine-tuning (any other is refused), 0.1 for a cache without one
    validation: float | None = field(
        default=None,
        metadata=option(
            "Fraction of the train clips held out to select the epoch [default: the split fixed at extraction, "
            "else 0.1]; 0 keeps the last epoch.",
            min=0,
            max=1,
            max_open=True,
        ),
    )
    # the same held-out clips for every seed and approach (paired comparisons)
    validation_seed: int | None = field(
        default=None,
        metadata=option("Seed of the validation split [default: the one fixed at extraction, else 0]."),
    )
    # the epoch with the lowest validation loss (smoother than accuracy on a small validation set, where a slow
    # start can leave accuracy flat for many epochs), the best validation accuracy, or the last epoch
    select: str = field(
        default="loss",
        metadata=option("Keep the epoch with the best validation loss or accuracy, or the last.", choices=CHOICES["select"]),
    )
    # stop after this many epochs without a better validation score; 0 = never early
    patience: int = field(
        default=10, metadata=option("Stop after N epochs without a better validation score (0: never early).", min=0)
    )
    seed: int = field(default=0, metadata=option("First seed."))
    # last.pt (to resume) is written after an epoch once the training since the last write took at least the
    # last write's time / this share, so writing costs at most about this share of the time (a GPU epoch of a
    # head lasts ~1 s, its last.pt 40 MB ~0.1 s); a kill loses at most that, resuming replays it bit for bit
    checkpoint_share: float = field(
        default=0.1, metadata=option("Most of the training time spent writing last.pt (0: after every epoch).", min=0, max=1)
    )
    # torch.use_deterministic_algorithms (slower on GPU; CPU is deterministic anyway)
    deterministic: bool = field(default=False, metadata=option("torch deterministic algorithms (slower on GPU)."))
    feature_norm: str = field(
        default="zscore",
        metadata=option(
            "z-score every feature with the statistics of the clips trained on, or not.", choices=CHOICES["feature_norm"]
        ),
    )
    device: str = field(default_factory=default_device, metadata=option("cpu, cuda, cuda:1 … (default: cuda when present)."))
    # the labels a model learns: arousal (the paper's task) or valence (RUN/valence/); the CLI's --target also
    # takes "both" (a model for each), so this field has no generated option; older settings.json: arousal
    target: str = field(default="arousal", metadata={"choices": TARGETS})

    def __post_init__(self) -> None:
        if self.validation is not None and not 0 <= self.validation < 1:
            raise AvemoError(f"validation {self.validation}: must be a fraction in [0, 1)")
        check_fields(self)

    def to_json(self) -> dict:
        """What settings.json holds."""
        return asdict(self)

    @classmethod
    def from_json(cls, source: str | Path | dict) -> TrainSettings:
        """The settings of a settings.json that `avemo train` wrote (a path, or its contents): a name this
        version does not know, or a value of the wrong type, is refused with one line; missing names keep
        their defaults."""
        where, data = _read(source)
        if {"layers", "source"} <= set(data):
            raise AvemoError(
                f"{where}: the settings of a joint pass; give the settings.json of the head it tuned "
                "(RUN/<approach>/settings.json) and --joint"
            )
        values = typed(cls, data, where)
        if "head" in values:
            if not isinstance(values["head"], dict):
                raise AvemoError(f"{where}: head must be an object of head settings")
            from avemo.train.heads import HeadSettings

            values["head"] = HeadSettings(**typed(HeadSettings, values["head"], f"{where}: head"))
        try:
            return cls(**values)
        except AvemoError as e:
            raise AvemoError(f"{where}: {e}") from None


LAYERS = ("fc", "all")  # joint pass: fc6-fc7 on cached pool5, or every layer from the cached images


@dataclass(frozen=True)
class JointSettings:
    """Options of the joint pass (defaults and why: avemo.train.joint); the CLI prefixes them with --joint-."""

    # fc: fc6 and fc7 trained on cached pool5 | all: every layer, from the cached images
    layers: str = field(
        default="fc",
        metadata=option(
            "fc: fc6-fc7 on cached pool5 (convolutions frozen); all: every layer, from cached images.", choices=LAYERS
        ),
    )
    epochs: int = field(default=3, metadata=option("0: only predict/export.", min=0))
    lr: float = field(default=0.001, metadata=option("Learning rate of the head.", min=0))  # head
    # AlexNets; 0 freezes them
    backbone_lr: float = field(default=0.0001, metadata=option("Learning rate of the AlexNets (0 freezes them).", min=0))
    momentum: float = field(default=0.9, metadata=option("SGD momentum.", min=0))
    backbone_weight_decay: float = field(default=5e-4, metadata=option("Weight decay of the AlexNets.", min=0))
    batch_size: int = field(default=32, metadata=option("Clips per minibatch.", min=1))  # clips
    # keep the epoch (0 = the start) with the lowest validation loss, or the last
    select: str = field(
        default="loss",
        metadata=option(
            "Keep the joint epoch (0: the start) with the lowest validation loss, or the last.", choices=("loss", "last")
        ),
    )
    seed: int = 0  # the CLI's --seed
    device: str = field(default_factory=default_device)  # the CLI's --device

    def __post_init__(self) -> None:
        if self.layers not in LAYERS:
            raise AvemoError(f"joint layers {self.layers!r}: must be one of {', '.join(LAYERS)}")
        if self.select not in ("loss", "last"):
            raise AvemoError(f"joint select {self.select!r}: must be loss or last")
        if self.epochs < 0 or self.batch_size < 1 or self.lr < 0 or self.backbone_lr < 0:
            raise AvemoError("joint pass: epochs ≥ 0, batch size ≥ 1 and learning rates ≥ 0, please")
        check_fields(self, "joint ")

    def record(self) -> dict:
        """What the result depends on (the device does not)."""
        return {k: v for k, v in asdict(self).items() if k != "device"}

    def to_json(self) -> dict:
        return asdict(self)


# -- checks --------------------------------------------------------------------------------------------
def check_fields(settings, prefix: str = "") -> None:
    """Refuse a value outside its field's choices or bounds (the metadata of `option`)."""
    for f in fields(settings):
        value, spec = getattr(settings, f.name), f.metadata
        if value is None or isinstance(value, bool):
            continue
        if "choices" in spec and value not in spec["choices"]:
            raise AvemoError(f"{prefix}{f.name} {value!r}: must be one of {', '.join(spec['choices'])}")
        wrong = bound_error(value, spec)
        if wrong:
            raise AvemoError(f"{prefix}{f.name} {value}: must be {wrong}")


def bound_error(value: float, spec: dict) -> str:
    """'≥ 1', '> 0', '< 1' …: the bound of `spec` that `value` breaks, else ''."""
    low, high = spec.get("min"), spec.get("max")
    if low is not None and (value <= low if spec.get("min_open") else value < low):
        return f"> {low}" if spec.get("min_open") else f"≥ {low}"
    if high is not None and (value >= high if spec.get("max_open") else value > high):
        return f"< {high}" if spec.get("max_open") else f"≤ {high}"
    return ""


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def typed(cls, values: dict, where: str) -> dict:
    """`values` (from JSON) for the fields of dataclass `cls`: unknown names and values of the wrong type are
    refused with one line naming `where`; integers given for floats become floats. Nested settings are
    returned as they are."""
    known = {f.name: str(f.type).replace(" ", "").split("|") for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise AvemoError(
            f"{where}: unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (known: {', '.join(known)})"
        )
    out = {}
    for name, value in values.items():
        kinds = known[name]
        allowed = _TYPES.get(kinds[0])
        if allowed is None or (value is None and "None" in kinds):
            out[name] = value
        elif isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool)):
            out[name] = float(value) if kinds[0] == "float" else value
        else:
            raise AvemoError(f"{where}: {name} {json.dumps(value)}: must be {_WORDS[kinds[0]]}")
    return out


def _read(source: str | Path | dict) -> tuple[str, dict]:
    """(where, contents) of a settings.json path, or ('settings', the dict)."""
    if isinstance(source, dict):
        return "settings", source
    from avemo.atomic import read_json

    path = Path(source)
    if not path.is_file():
        raise AvemoError(f"{path}: not found; give the settings.json of a trained approach, RUN/<approach>/settings.json")
    return str(path), read_json(path, "give the settings.json that `avemo train` wrote into RUN/<approach>/")
