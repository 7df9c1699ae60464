"""`avemo predict`: class probabilities per second and per clip for new videos, from a run (`--run RUN`) or a
model folder (`--model MODEL`, written by `avemo export`: avemo.modelfolder).

It sits above the stages (like the CLI) because it chains them: extract's decoding and AlexNets (the
Embedder of avemo.extract.embed, the one extract's export uses), then train's head. One `Predictor` serves
both sources and shares the per-second head code:

- a run (read through avemo.runfolder): RUN/run.json names the cache (`--cache` where it moved; its identity
  `cache_sha256` is checked either way); CACHE/media/manifest.json holds the decoding settings (1-s segments,
  key-frame histogram bins, spectrogram settings, image codec: images go through the same codec round trip
  as the media cache); the AlexNets are CACHE/models/{visual,audio}.pt (or the base AlexNet of a
  `--finetune none` cache), checked against the hashes recorded with the features; the joint approach uses
  the AlexNets of RUN/joint; RUN/<approach>/[seed-<s>/]model.pt holds the head, its settings and the train
  split's feature statistics (RUN/valence/... for valence);
- a model folder: the same pieces, copied and checked by avemo.modelfolder (AlexNets stored in fp16).

Every target the source holds for the approach (arousal, valence) is predicted. Per second t the
probabilities are the head's output on seconds 0…t (the LSTM output at step t through the MLP and softmax:
the paper's "emotion class at each time step"); second t covers [t, t+1) s from the first frame's
presentation time (`start`, `end`); the clip's are those at its last second, which is what `avemo train`
writes in predictions.csv for a cached clip. Late fusion combines the visual and audio heads per second,
p = α·p_audio + (1 − α)·p_visual with α = 0.56 (paper eq. 14). A video of any length works: frames are
decoded one second at a time, and the key frames and spectrograms kept take about 0.3 MB per second of
video. One shorter than a second, or unreadable, is reported with its reason and the other videos still
come out.
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

from avemo import modelfolder, runfolder
from avemo.approaches import default_device
from avemo.cache import check_cache
from avemo.cache.images import decode_block
from avemo.datasets.labels import CLASS_NAMES, to_label
from avemo.errors import AvemoError
from avemo.extract.embed import Embedder, cache_embedder, joint_embedder
from avemo.train.data import Standardiser, cache_identity
from avemo.train.heads import late_fusion, load_head


@dataclass
class VideoPrediction:
    path: str
    per_second: dict[str, np.ndarray]  # target → float [seconds, 3]: class probabilities from seconds 0..t
    has_audio: bool
    keyframes: np.ndarray | None = None  # uint8 [seconds, H, W, 3] when asked for (a plot), else None
    plot: str | None = None  # the timeline PNG written for it (`plot=`)

    @property
    def n_seconds(self) -> int:
        return len(next(iter(self.per_second.values())))

    @property
    def clip(self) -> dict[str, np.ndarray]:
        """target → the clip's probabilities: those at its last second."""
        return {target: p[-1] for target, p in self.per_second.items()}

    @property
    def start(self) -> np.ndarray:
        """Start of each second in seconds from the first frame's presentation time; second t is [t, t+1)."""
        return np.arange(self.n_seconds, dtype=np.float64)

    @property
    def end(self) -> np.ndarray:
        return self.start + 1


@dataclass
class Predictions:
    source: str  # the run or model folder
    kind: str  # "run" or "model"
    approach: str
    class_names: dict[str, tuple[str, ...]]  # target → class names
    videos: list[VideoPrediction] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


class Head:
    """One trained head (a run's model.pt or a model folder's head file) with its feature standardisation."""

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
        self.target = saved["settings"].get("target", "arousal")
        self.feature_dim = int(saved["settings"]["head"].get("feature_dim", 4096))
        self.checkpoint = {k: saved[k] for k in modelfolder.HEAD_KEYS if k in saved}  # what a model folder keeps

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
    """Loads a run or a model folder once; `predict(path)` then decodes, embeds and classifies one video.

    `source`: a run folder, or a model folder (it holds model.json). For a run, `approach` (default modal)
    picks the head, `seed` one seed of a multi-seed run, `cache` the cache where it moved (its identity is
    checked). A model folder holds one approach and seed and needs no cache: those options are refused."""

    def __init__(
        self,
        source: str | Path,
        approach: str | None = None,
        batch_size: int = 64,
        device: str | None = None,
        seed: int | None = None,
        cache: str | Path | None = None,
    ):
        self.source = Path(source)
        self.batch_size = batch_size
        self.device = device or default_device()
        if modelfolder.is_model(self.source):
            self._from_model(approach, seed, cache)
        else:
            self._from_run(approach or "modal", seed, cache)
        for heads in self.heads.values():
            for head in heads:
                if head.feature_dim != self.embedder.width("visual"):
                    raise AvemoError(
                        f"{head.path}: a head for {head.feature_dim}-d features, but the AlexNets give "
                        f"{self.embedder.width('visual')}-d fc7; it was not trained on these features"
                    )

    def _from_run(self, approach: str, seed: int | None, cache: str | Path | None) -> None:
        self.kind, self.approach = "run", approach
        info = runfolder.read_info(self.source)
        self.cache = Path(cache) if cache is not None else Path(info["cache"])
        if not self.cache.is_dir():
            given = "--cache" if cache is not None else f"{self.source / runfolder.RUN_JSON}"
            raise AvemoError(
                f"{self.cache}: not found (named by {given}); give the cache's new place with --cache CACHE, or predict "
                "with a model folder that needs no cache (`avemo export`, then `avemo predict --model`)"
            )
        check_cache(self.cache, "predict")  # busy or unfinished caches are refused
        targets = _targets(self.source, approach)
        self.heads = {t: [Head(p, self.device) for p in runfolder.head_paths(self.source, approach, seed, t)] for t in targets}
        self.cache_sha256 = _check_features_unchanged(self.source, self.cache, info, self.heads)
        if approach == runfolder.JOINT:  # the AlexNets tuned with the head
            self.embedder: Embedder = joint_embedder(self.source / runfolder.JOINT, self.cache, self.batch_size, self.device)
        else:
            self.embedder = cache_embedder(self.cache, self.batch_size, self.device)

    def _from_model(self, approach: str | None, seed: int | None, cache: str | Path | None) -> None:
        if seed is not None or cache is not None:
            raise AvemoError(
                f"{self.source}: a model folder holds one model and needs no cache; --seed and --cache are for a run "
                "(--run RUN): export another seed with `avemo export --seed`"
            )
        model = modelfolder.read(self.source)
        if approach is not None and approach != model.approach:
            raise AvemoError(
                f"{self.source}: holds the {model.approach} model, not {approach}; export it with "
                f"`avemo export --run RUN --approach {approach} --out MODEL`"
            )
        self.kind, self.approach, self.cache = "model", model.approach, None
        self.cache_sha256 = model.source.get("cache_sha256")
        self.heads = {t: [Head(p, self.device) for p in paths] for t, paths in model.heads.items()}
        for target, heads in self.heads.items():
            if any(h.target != target for h in heads):
                fix = modelfolder.remedy(self.source)
                raise AvemoError(f"{self.source}: a head file of {target} predicts another target; {fix}")
        self.embedder = Embedder(model.alexnets, model.spectrogram_input, model.mode, self.batch_size, self.device, model.decode)

    @property
    def class_names(self) -> dict[str, tuple[str, ...]]:
        return {target: CLASS_NAMES[target] for target in self.heads}

    def predict(self, path: str | Path, keyframes: bool = False) -> VideoPrediction:
        """Probabilities per second and per clip of every target; with `keyframes`, also the key frames (for a
        timeline). Raises AvemoError with the reason for an unusable file."""
        path = Path(path)
        if not path.is_file():
            raise AvemoError("file not found")
        with _native_stderr_silenced():  # ffmpeg's and decord's own log lines; the reason comes back as text
            decoded = self.embedder.decode_video(path)
        video = self.embedder.embed_video(decoded)
        per_second = {target: self._per_second(heads, video) for target, heads in self.heads.items()}
        frames = decode_block(decoded.key_frames) if keyframes else None
        return VideoPrediction(str(path), per_second, video.has_audio, frames)

    def _per_second(self, heads: list[Head], video) -> np.ndarray:
        probs = [head.per_second(video.fc7["visual"], video.fc7["audio"], video.has_audio) for head in heads]
        if self.approach != "late":
            return probs[0]
        return late_fusion(probs[1], probs[0], np.full(len(probs[0]), video.has_audio))

    def features(self, modality: str, images: np.ndarray) -> np.ndarray:
        """fc7 as extraction computed it (the Embedder)."""
        return self.embedder.fc7(modality, images)


def _targets(run: Path, approach: str) -> list[str]:
    """The targets RUN holds models of for `approach`; none: arousal, whose missing head then names the command
    that trains it (runfolder.head_paths)."""
    return runfolder.targets(run, approach) or ["arousal"]


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


def _check_features_unchanged(run: Path, cache: Path, info: dict, heads: dict[str, list[Head]]) -> str:
    """Refuse a cache whose features are not those the run (and each head) was trained on: their z-score
    statistics and AlexNets would not match, and every prediction would quietly be off. Returns the identity."""
    if not (cache / "features").is_dir():
        raise AvemoError(
            f"{cache / 'features'}: not found; the cache {run} was trained on is gone (see {run / runfolder.RUN_JSON}; "
            "--cache CACHE names its new place)"
        )
    identity = cache_identity(cache)
    recorded = [(run / runfolder.RUN_JSON, info.get("cache_sha256"))]
    recorded += [(h.path, h.cache_sha256) for target_heads in heads.values() for h in target_heads]
    for path, sha in recorded:
        if sha is not None and sha != identity:
            raise AvemoError(
                f"{path}: trained on features {sha[:12]}, but {cache / 'features'} now holds {identity[:12]} (another cache, "
                "or extracted again?); predictions would not be the model's: give the cache it was trained on "
                "(--cache), train again on this one (another --run), or predict with a run of this cache"
            )
    return identity


def predict_videos(
    source: str | Path,
    videos: list[str | Path],
    approach: str | None = None,
    batch_size: int = 64,
    on_error=None,
    seed: int | None = None,
    cache: str | Path | None = None,
    plot: str | Path | None = None,
    device: str | None = None,
) -> Predictions:
    """Predict every video (`videos`: files, folders, list files: avemo.inputs.expand_videos) with a run or a
    model folder; an unusable one is recorded in `failed` (and passed to `on_error(path, reason)`). With
    `plot`, a timeline PNG per video goes into that folder (`VideoPrediction.plot`)."""
    from avemo.inputs import expand_videos
    from avemo.log import progress

    paths = expand_videos([Path(v) for v in videos])
    plots = None if plot is None else _PlotNames(Path(plot))
    predictor = Predictor(source, approach, batch_size, device, seed, cache)
    out = Predictions(str(source), predictor.kind, predictor.approach, predictor.class_names)
    for video in progress(paths, desc="predict", unit="video"):
        try:
            prediction = predictor.predict(video, keyframes=plots is not None)
        except AvemoError as e:
            out.failed.append((str(video), str(e)))
            if on_error:
                on_error(str(video), str(e))
            continue
        if plots is not None:
            prediction.plot = str(plots.draw(prediction, out.class_names))
            prediction.keyframes = None  # 0.2 MB per second: not kept for every video
        out.videos.append(prediction)
    return out


class _PlotNames:
    """The timeline PNGs of one predict call: DIR/<video file name without extension>.png, with -2, -3, …
    when two videos share a name."""

    def __init__(self, folder: Path):
        from avemo.atomic import ensure_dir

        self.folder = ensure_dir(folder)
        self.taken: set[str] = set()

    def draw(self, prediction: VideoPrediction, class_names: dict[str, tuple[str, ...]]) -> Path:
        from avemo.timeline import timeline_png

        stem, n = Path(prediction.path).stem or "video", 1
        name = f"{stem}.png"
        while name.lower() in self.taken:
            n += 1
            name = f"{stem}-{n}.png"
        self.taken.add(name.lower())
        return timeline_png(self.folder / name, prediction.path, prediction.per_second, class_names, prediction.keyframes)


# -- output formats ---------------------------------------------------------------------------------------
def _target_values(p: np.ndarray, names: tuple[str, ...]) -> dict:
    k = int(p.argmax())
    return {"label": to_label(k), "class": names[k], "probabilities": {n: round(float(v), 6) for n, v in zip(names, p)}}


def _step(result: Predictions, probs: dict[str, np.ndarray]) -> dict:
    return {target: _target_values(p, result.class_names[target]) for target, p in probs.items()}


def to_json(result: Predictions) -> str:
    """{"run" or "model", "approach", "targets": {target: class names}, "videos": [{"path", "seconds",
    "has_audio", "clip": {"start", "end", <target>: {"label", "class", "probabilities"}}, "per_second":
    [{"second", "start", "end", <target>: {...}}], "plot"}], "failed": [{"path", "reason"}]} (docs/model-format.md)."""
    videos = []
    for v in result.videos:
        per_second = [
            {"second": t, "start": float(t), "end": float(t + 1), **_step(result, {k: p[t] for k, p in v.per_second.items()})}
            for t in range(v.n_seconds)
        ]
        entry = {"path": v.path, "seconds": v.n_seconds, "has_audio": v.has_audio}
        entry["clip"] = {"start": 0.0, "end": float(v.n_seconds), **_step(result, v.clip)}
        entry["per_second"] = per_second
        if v.plot is not None:
            entry["plot"] = v.plot
        videos.append(entry)
    document = {
        result.kind: result.source,
        "approach": result.approach,
        "targets": {target: list(names) for target, names in result.class_names.items()},
        "videos": videos,
        "failed": [{"path": path, "reason": reason} for path, reason in result.failed],
    }
    return json.dumps(document, indent=1) + "\n"


def csv_columns(class_names: dict[str, tuple[str, ...]]) -> list[str]:
    """path,second,start,end, then per target: <target>,<target>_class and its probabilities, p_<class> for
    arousal (as predictions.csv) and p_<target>_<class> for the others (valence's "neutral" would clash)."""
    columns = ["path", "second", "start", "end"]
    for target, names in class_names.items():
        prefix = "p_" if target == "arousal" else f"p_{target}_"
        columns += [target, f"{target}_class", *(prefix + n for n in names)]
    return columns


def to_csv(result: Predictions) -> str:
    """One row per second and one per clip (`second` = clip, start 0, end its length): `csv_columns`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns(result.class_names))
    for v in result.videos:
        rows = [(str(t), t, t + 1, {k: p[t] for k, p in v.per_second.items()}) for t in range(v.n_seconds)]
        for second, start, end, probs in [*rows, ("clip", 0, v.n_seconds, v.clip)]:
            cells = [v.path, second, f"{start:.1f}", f"{end:.1f}"]
            for target, p in probs.items():
                k = int(p.argmax())
                cells += [to_label(k), result.class_names[target][k], *(f"{x:.6f}" for x in p)]
            writer.writerow(cells)
    return buffer.getvalue()
