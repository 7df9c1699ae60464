"""`avemo predict --run RUN VIDEO...`: class probabilities per second and per clip for new videos.

It sits above the stages (like the CLI) because it chains them: extract's decoding and AlexNets (the
Embedder of avemo.extract.embed, the one extract's export uses), then train's head. Everything comes from
the run (read through avemo.runfolder) and its cache, so a prediction is made exactly as the cached clips' were:

- RUN/run.json names the cache; CACHE/media/manifest.json holds the decoding settings (1-s segments,
  key-frame histogram bins, spectrogram settings, image codec: images go through the same codec round
  trip as the media cache);
- the AlexNets are CACHE/models/{visual,audio}.pt (fine-tuned per modality), or, for a cache extracted
  with `--finetune none`, the base AlexNet rebuilt from CACHE/features/manifest.json (`weights`, `seed`);
  their parameter hashes must equal the ones recorded with the features the head was trained on; the
  joint approach uses the AlexNets of RUN/joint;
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avemo import runfolder
from avemo.approaches import default_device
from avemo.cache import check_cache
from avemo.datasets.labels import AROUSAL_NAMES, to_label
from avemo.errors import AvemoError
from avemo.extract.embed import Embedder, cache_embedder, joint_embedder
from avemo.train.data import Standardiser, cache_identity
from avemo.train.heads import late_fusion, load_head


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
        """fp16 fc7 [T, width] per modality → probabilities [T, 3], step t from seconds 0..t."""
        inputs = []
        for name, values in (("visual", visual), ("audio", audio)):
            z = self.norm.apply(name, torch.from_numpy(values).to(self.device))
            inputs.append(z.half().float() if self.norm.stats is not None else z)  # the trainer's fp16 z-scores
        lengths, mask = torch.tensor([len(visual)]), torch.tensor([has_audio])
        logits = self.model(*inputs, lengths, mask, per_step=True)  # h_t for every t (eq. 6–11) → MLP
        return torch.softmax(logits, dim=1).float().cpu().numpy()  # eq. 12


class Predictor:
    """Loads a run once; `predict(path)` then decodes, embeds and classifies one video."""

    def __init__(self, run: str | Path, approach: str = "modal", batch_size: int = 64, device: str | None = None):
        self.run = Path(run)
        self.approach = approach
        self.batch_size = batch_size
        self.device = device or default_device()
        info = runfolder.read_info(self.run)
        cache = Path(info["cache"])
        check_cache(cache, "predict")  # busy or unfinished caches are refused
        self.heads = [Head(path, self.device) for path in runfolder.head_paths(self.run, approach)]
        _check_features_unchanged(self.run, cache, info, self.heads)
        if approach == runfolder.JOINT:  # the AlexNets tuned with the head
            self.embedder: Embedder = joint_embedder(self.run / runfolder.JOINT, cache, batch_size, self.device)
        else:
            self.embedder = cache_embedder(cache, batch_size, self.device)

    def predict(self, path: str | Path) -> VideoPrediction:
        """Probabilities per second and per clip; raises AvemoError with the reason for an unusable file."""
        path = Path(path)
        if not path.is_file():
            raise AvemoError("file not found")
        with _native_stderr_silenced():  # ffmpeg's and decord's own log lines; the reason comes back as text
            decoded = self.embedder.decode_video(path)
        video = self.embedder.embed_video(decoded)
        probs = [head.per_second(video.fc7["visual"], video.fc7["audio"], video.has_audio) for head in self.heads]
        late = self.approach == "late"
        per_second = late_fusion(probs[1], probs[0], np.full(len(probs[0]), video.has_audio)) if late else probs[0]
        return VideoPrediction(str(path), per_second, video.has_audio)

    def features(self, modality: str, images: np.ndarray) -> np.ndarray:
        """fc7 as extraction computed it (the run's Embedder)."""
        return self.embedder.fc7(modality, images)


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
        raise AvemoError(
            f"{cache / 'features'}: not found; the cache {run} was trained on is gone (see {run / runfolder.RUN_JSON})"
        )
    identity = cache_identity(cache)
    recorded = [(run / runfolder.RUN_JSON, info.get("cache_sha256"))] + [(h.path, h.cache_sha256) for h in heads]
    for path, sha in recorded:
        if sha is not None and sha != identity:
            raise AvemoError(
                f"{path}: trained on features {sha[:12]}, but {cache / 'features'} now holds {identity[:12]} (extracted "
                f"again?); predictions would not be the model's: train again on it (another --run), or predict with a "
                "run of this cache"
            )


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
