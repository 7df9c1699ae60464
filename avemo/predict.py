"""`avemo predict --run RUN VIDEO...`: class probabilities per second and per clip for new videos.

It sits above the stages (like the CLI) because it chains them: extract's decoding and AlexNets, then
train's head. Everything comes from the run and its cache, so a prediction is made exactly as the
cached clips' were:

- RUN/run.json names the cache; CACHE/media/manifest.json holds the decoding settings (1-s segments,
  key-frame histogram bins, spectrogram settings, image codec: images go through the same codec round
  trip as the media cache);
- the AlexNets are CACHE/models/{visual,audio}.pt (fine-tuned per modality), or, for a cache extracted
  with `--finetune none`, the base AlexNet rebuilt from CACHE/features/manifest.json (`weights`, `seed`);
  their parameter hashes must equal the ones recorded with the features the head was trained on;
- RUN/<approach>/model.pt holds the head, its settings and the train split's feature statistics.

Per second t the probabilities are the head's output on seconds 0…t (the LSTM output at step t through
the MLP and softmax: the paper's "emotion class at each time step"); the clip's are those at its last
second, which is what `avemo train` writes in predictions.csv for a cached clip. Late fusion combines the
visual and audio heads per second, p = α·p_audio + (1 − α)·p_visual with α = 0.56 (paper eq. 14).
A video of any length works: frames are decoded one second at a time, and the key frames and spectrograms
kept take about 0.3 MB per second of video. One shorter than a second, or unreadable, is reported with its
reason and the other videos still come out.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from avemo.atomic import load_torch
from avemo.cache import ShardStore
from avemo.cache.images import decode_block
from avemo.datasets.labels import AROUSAL_NAMES, to_label
from avemo.errors import AvemoError
from avemo.extract.alexnet import (
    FC7_DIM,
    Fc7,
    batched,
    build_alexnet,
    fc7_features,
    feature_alexnets,
    pool5_features,
    spectrogram_input_of,
    weights_sha256,
)
from avemo.extract.decode import DecodeSettings
from avemo.extract.spectrogram import SpectrogramSettings
from avemo.extract.workers import decode_for_cache
from avemo.train.data import Standardiser, cache_identity
from avemo.train.heads import load_head
from avemo.train.trainer import late_fusion, run_info

MODALITIES = ("visual", "audio")


@dataclass
class VideoPrediction:
    path: str
    per_second: np.ndarray  # float [seconds, 3]: class probabilities from seconds 0..t
    has_audio: bool

    @property
    def clip(self) -> np.ndarray:
        return self.per_second[-1]


@dataclass
class Predictions:
    run: str
    approach: str
    videos: list[VideoPrediction] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


class Head:
    """One trained head (model.pt) with its feature standardisation."""

    def __init__(self, path: Path, device: str):
        self.model, saved = load_head(path)
        self.model.to(device).eval()
        norm = saved.get("norm")
        try:
            self.norm = Standardiser(None if norm is None else {k: v.to(device) for k, v in norm.items()})
        except (AttributeError, TypeError):
            raise AvemoError(f"{path}: its feature statistics are unreadable; delete {path.parent} and train again") from None
        self.device = device
        self.path = path
        self.cache_sha256 = saved.get("cache_sha256")  # the features it was trained on (None: an older avemo)

    @torch.inference_mode()
    def per_second(self, visual: np.ndarray, audio: np.ndarray, has_audio: bool) -> np.ndarray:
        """fp16 fc7 [T, 4096] per modality → probabilities [T, 3], step t from seconds 0..t."""
        inputs = []
        for name, values in (("visual", visual), ("audio", audio)):
            z = self.norm.apply(name, torch.from_numpy(values).to(self.device))
            inputs.append(z.half().float() if self.norm.stats is not None else z)  # the trainer's fp16 z-scores
        lengths, mask = torch.tensor([len(visual)]), torch.tensor([has_audio])
        logits = self.model(*inputs, lengths, mask, per_step=True)  # h_t for every t (eq. 6–11) → MLP
        return torch.softmax(logits, dim=1).float().cpu().numpy()  # eq. 12


def head_paths(run: Path, approach: str) -> list[Path]:
    """The model.pt files of an approach; late fusion: its visual and audio models (the per-second MLP
    classifiers in RUN/late/, or the visual and audio heads when trained with `--late-from lstm`)."""
    if approach != "late":
        return [run / approach / "model.pt"]
    settings = run / "late" / "settings.json"
    try:
        late_from = json.loads(settings.read_text()).get("late_from", "lstm") if settings.is_file() else "mlp"
    except (OSError, ValueError, AttributeError):
        raise AvemoError(f"{settings}: unreadable; train late fusion again with `avemo train --approach late`") from None
    return [(run / "late" / m if late_from == "mlp" else run / m) / "model.pt" for m in MODALITIES]


class Predictor:
    """Loads a run once; `predict(path)` then decodes, embeds and classifies one video."""

    def __init__(self, run: str | Path, approach: str = "modal", batch_size: int = 64, device: str | None = None):
        self.run = Path(run)
        self.approach = approach
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        info = run_info(self.run)
        cache = Path(info["cache"])
        from avemo.cache import check_cache  # busy or unfinished caches are refused

        check_cache(cache, "predict")
        self.heads = [Head(path, self.device) for path in head_paths(self.run, approach)]
        _check_features_unchanged(self.run, cache, info, self.heads)
        self.decode = decode_settings(cache)
        features = ShardStore(cache / "features", "features").settings
        if not features:
            raise AvemoError(f"{cache / 'features'}: no feature manifest; the run's cache is gone or incomplete")
        if approach == "joint":  # the AlexNets tuned with the head; fc mode tuned fc6-fc7 on cached fp16 pool5
            models, layers = joint_alexnets(self.run / "joint")
            self.mode = "fc" if layers == "fc" else "all"
        else:
            models, _ = feature_alexnets(cache, features)
            self.mode = (features.get("finetune") or {}).get("mode", "none")
        fit = spectrogram_input_of(features)
        self.nets = {m: Fc7(model, fit).to(self.device, memory_format=torch.channels_last).eval() for m, model in models.items()}

    def predict(self, path: str | Path) -> VideoPrediction:
        """Probabilities per second and per clip; raises AvemoError with the reason for an unusable file."""
        path = Path(path)
        if not path.is_file():
            raise AvemoError("file not found")
        with _native_stderr_silenced():  # ffmpeg's and decord's own log lines; the reason comes back as text
            decoded = decode_for_cache((str(path), self.decode))
        if isinstance(decoded, str):
            raise AvemoError(decoded)
        images = {"visual": decode_block(decoded.key_frames), "audio": decode_block(decoded.spectrograms)}
        fc7 = {m: self.features(m, images[m]) for m in MODALITIES}
        probs = [head.per_second(fc7["visual"], fc7["audio"], decoded.has_audio) for head in self.heads]
        late = self.approach == "late"
        per_second = late_fusion(probs[1], probs[0], np.full(len(probs[0]), decoded.has_audio)) if late else probs[0]
        return VideoPrediction(str(path), per_second, decoded.has_audio)

    def features(self, modality: str, images: np.ndarray) -> np.ndarray:
        """fc7 as extraction computed it: with fine-tuning mode fc, from fp16 pool5 (as cached in CACHE/pool5)."""
        net = self.nets[modality]
        if self.mode != "fc":
            return fc7_features(net, images, self.batch_size, self.device)
        pool5 = pool5_features(net, images, self.batch_size, self.device)
        return batched(lambda x: net.fc6_fc7(x.float()), pool5, FC7_DIM, self.batch_size, self.device)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a while, so that a bad file gives one line, ours, not C logs."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 to redirect
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _check_features_unchanged(run: Path, cache: Path, info: dict, heads: list[Head]) -> None:
    """Refuse a cache whose features are no longer those the run (and each head) was trained on: their
    z-score statistics and AlexNets would not match, and every prediction would quietly be off."""
    if not (cache / "features").is_dir():
        raise AvemoError(f"{cache / 'features'}: not found; the cache {run} was trained on is gone (see {run}/run.json)")
    identity = cache_identity(cache)
    recorded = [(run / "run.json", info.get("cache_sha256"))] + [(h.path, h.cache_sha256) for h in heads]
    for path, sha in recorded:
        if sha is not None and sha != identity:
            raise AvemoError(
                f"{path}: trained on features {sha[:12]}, but {cache / 'features'} now holds {identity[:12]} (extracted "
                f"again?); predictions would not be the model's: train again on it (another --run), or predict with a "
                "run of this cache"
            )


def decode_settings(cache: Path) -> DecodeSettings:
    """The media cache's decoding settings as a DecodeSettings."""
    settings = ShardStore(cache / "media", "media").settings
    if not settings:
        raise AvemoError(f"{cache / 'media'}: no media manifest; the run's cache is gone or incomplete")
    known = {f.name for f in fields(DecodeSettings)}
    missing = sorted(known - set(settings))
    if missing:  # decoded by an older avemo: new videos would not be decoded as the cache's clips were
        raise AvemoError(
            f"{cache / 'media'}: made by an older avemo (no {', '.join(missing)}): its clips were decoded differently "
            "from how new videos are now; extract again into a new cache and train on it"
        )
    values = {k: v for k, v in settings.items() if k in known}
    spectrogram = {k: v for k, v in settings["spectrogram"].items() if k in {f.name for f in fields(SpectrogramSettings)}}
    return DecodeSettings(**{**values, "spectrogram": SpectrogramSettings(**spectrogram)})


def joint_alexnets(folder: Path) -> tuple[dict[str, torch.nn.Module], str]:
    """The AlexNets of a joint pass (`RUN/joint/{visual,audio}.pt`, checked against the hashes in its
    model.pt) and the layers it tuned (fc or all)."""
    remedy = f"delete {folder} and run the joint pass again (`avemo train --joint`)"
    saved = load_torch(folder / "model.pt", remedy)
    out = {}
    try:
        entries = {m: (str(saved["alexnets"][m]["file"]), saved["alexnets"][m]["sha256"]) for m in MODALITIES}
        layers = saved["joint"]["layers"]
    except (KeyError, TypeError):
        raise AvemoError(f"{folder / 'model.pt'}: not a joint pass's model.pt; {remedy}") from None
    for modality, (file, sha) in entries.items():
        if Path(file).name != file:
            raise AvemoError(f"{folder / 'model.pt'}: names an AlexNet outside its folder ({file!r}); {remedy}")
        model = build_alexnet(str(folder / file))
        if weights_sha256(model) != sha:
            raise AvemoError(f"{folder / file}: not the AlexNet this joint pass saved; train it again")
        out[modality] = model
    return out, layers


def predict_videos(
    run: str | Path, videos: list[str | Path], approach: str = "modal", batch_size: int = 64, on_error=None
) -> Predictions:
    """Predict every video; an unusable one is recorded in `failed` (and passed to `on_error(path, reason)`)."""
    predictor = Predictor(run, approach, batch_size)
    out = Predictions(str(run), approach)
    for video in videos:
        try:
            out.videos.append(predictor.predict(video))
        except AvemoError as e:
            out.failed.append((str(video), str(e)))
            if on_error:
                on_error(str(video), str(e))
    return out


def _probabilities(p: np.ndarray) -> dict[str, float]:
    return {name: round(float(v), 6) for name, v in zip(AROUSAL_NAMES, p)}


def to_json(result: Predictions) -> str:
    """{"videos": [{"path", "seconds", "clip": {...}, "per_second": [...]}], "failed": [...]} (arousal)."""
    videos = []
    for v in result.videos:
        videos.append(
            {
                "path": v.path,
                "seconds": len(v.per_second),
                "has_audio": v.has_audio,
                "clip": {
                    "arousal": to_label(int(v.clip.argmax())),
                    "class": AROUSAL_NAMES[int(v.clip.argmax())],
                    "probabilities": _probabilities(v.clip),
                },
                "per_second": [
                    {
                        "second": t,
                        "arousal": to_label(int(p.argmax())),
                        "class": AROUSAL_NAMES[int(p.argmax())],
                        "probabilities": _probabilities(p),
                    }
                    for t, p in enumerate(v.per_second)
                ],
            }
        )
    failed = [{"path": path, "reason": reason} for path, reason in result.failed]
    document = {
        "run": result.run,
        "approach": result.approach,
        "classes": list(AROUSAL_NAMES),
        "videos": videos,
        "failed": failed,
    }
    return json.dumps(document, indent=1) + "\n"


def to_csv(result: Predictions) -> str:
    """One row per second and one per clip (`second` = clip): path,second,arousal,class,p_calm,p_neutral,p_active."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "second", "arousal", "class", *(f"p_{n}" for n in AROUSAL_NAMES)])
    for v in result.videos:
        rows = [(str(t), p) for t, p in enumerate(v.per_second)] + [("clip", v.clip)]
        for second, p in rows:
            k = int(p.argmax())
            writer.writerow([v.path, second, to_label(k), AROUSAL_NAMES[k], *(f"{x:.6f}" for x in p)])
    return buffer.getvalue()
