"""The Python API: what the `avemo` commands do, callable from Python with the same settings dataclasses
(`avemo extract|train|evaluate|predict` only parse options into them and call these).

    from avemo import api, ExtractSettings, TrainSettings, JointSettings

    api.extract("corpus/clips.csv", "cache", ExtractSettings(weights="none"))
    api.train("cache", "run", "all", TrainSettings(epochs=40), joint=JointSettings())
    results = api.evaluate("run")
    api.export("run", "model")                       # everything predict needs, without the run or cache
    predictions = api.predict("model", ["video.mp4", "folder/"])

extract and train append what they print (settings, phases, times, warnings, errors) to CACHE/log.txt and
RUN/log.txt. No torch at import: the heavy modules are imported when a function runs.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from avemo.errors import AvemoError
from avemo.log import logged

if TYPE_CHECKING:
    from avemo.datasets.dataset import Dataset
    from avemo.datasets.manifest import Clip
    from avemo.extract.pipeline import ExtractSettings
    from avemo.predict import Predictions, Predictor
    from avemo.train.settings import JointSettings, TrainSettings


def dataset(**options) -> Dataset:
    """The dataset that `avemo extract`'s options name (manifest=, dataset=, root=, lists=, videos=, maps=;
    docs/datasets.md), checked as extract checks it: every video present, both splits non-empty. No torch."""
    from avemo.datasets.load import check_ready, load_dataset

    ds = load_dataset(**options)
    check_ready(ds)
    return ds


def extract(data: Dataset | list[Clip] | str | Path, cache: str | Path, settings: ExtractSettings | None = None) -> Path:
    """Decode each clip once and export its AlexNet fc7 features into CACHE (resumable; docs/cache-format.md).
    `data`: a CSV manifest's path, a Dataset (`dataset(...)`), or a list of Clips. Returns CACHE."""
    from avemo.datasets.dataset import Dataset
    from avemo.datasets.load import check_ready, load_dataset

    if isinstance(data, str | Path):
        data = load_dataset(manifest=Path(data))
    elif not isinstance(data, Dataset):
        data = Dataset("the clips given", list(data))
    from avemo.extract.pipeline import ExtractSettings
    from avemo.extract.pipeline import extract as run_extract

    settings = settings or ExtractSettings()
    record = {"clips": f"{len(data.clips)} from {data.description}", "cache": _where(cache), **asdict(settings)}
    with logged(cache, "extract", record):
        check_ready(data)
        run_extract(data.clips, cache, settings)
    return Path(cache)


def train(
    cache: str | Path,
    run: str | Path,
    approaches: str | list[str] = "modal",
    settings: TrainSettings | None = None,
    seeds: list[int] | None = None,
    lstm_sizes: list[int] | None = None,
    memory: str = "auto",
    joint: JointSettings | None = None,
    joint_from: str = "modal",
    joint_seed: int | None = None,
    export: str | Path | None = None,
    targets: str | list[str] | None = None,
    stacked: bool = False,
) -> Path:
    """Train the approaches (a name, "all", or a list) on the cache's train split into RUN, for every seed
    (default: settings.seed), LSTM size (default: settings.head.lstm_hidden) and target ("arousal", "valence",
    "both" or a list; default: settings.target; valence models go to RUN/valence/); finished models are reused,
    an interrupted run resumes. With `joint`, then tune the arousal head of RUN/<joint_from> and the cache's
    AlexNets end to end into RUN/joint (docs/joint.md): a head already trained there is tuned as it is, else
    it is trained first, with the approaches; `export` then writes the tuned AlexNets' features as a new cache.
    `stacked`: the heads are trained all at once (fast on a GPU; docs/training.md), into the same files.
    Returns RUN."""
    from avemo.approaches import APPROACHES
    from avemo.runfolder import has_head
    from avemo.train.settings import TrainSettings

    if export is not None and joint is None:
        raise AvemoError(f"export {export}: the features of the joint pass; ask for it (--joint, joint=JointSettings())")
    settings = settings or TrainSettings()
    targets = _targets(targets, settings.target, joint is not None)
    approaches = list(APPROACHES) if approaches == "all" else [approaches] if isinstance(approaches, str) else list(approaches)
    seeds = list(seeds or [settings.seed])
    run = Path(run)
    record = {"cache": _where(cache), "run": _where(run), "approaches": approaches, "seeds": seeds, "lstm_sizes": lstm_sizes}
    record |= {"memory": memory, **asdict(settings), "targets": targets} | ({"stacked": True} if stacked else {})
    if joint is not None:
        record |= {"joint": {"from": joint_from, "seed": joint_seed, "export": export, **asdict(joint)}}
    with logged(run, "train", record), _exported(export, record):
        if joint is not None and has_head(run, joint_from):
            print(f"joint: tuning the trained head in {run / joint_from}")
            targets = [t for t in targets if t != "arousal"]  # the other targets are trained all the same
        else:
            approaches += [joint_from] if joint is not None and joint_from not in approaches else []
        if targets:
            from avemo.train.trainer import train as run_train

            options = {"seeds": seeds, "lstm_sizes": lstm_sizes, "memory": memory, "targets": targets, "stacked": stacked}
            run_train(cache, run, approaches, settings, **options)
        if joint is not None:
            from avemo.train.joint import joint_train

            joint_train(cache, run, joint, approach=joint_from, export=export, seed=joint_seed)
    return run


def _targets(targets: str | list[str] | None, default: str, joint: bool) -> list[str]:
    """The targets asked for ("both": arousal and valence), checked; the joint pass tunes an arousal head."""
    from avemo.train.settings import TARGETS

    if targets is None:
        targets = default
    asked = list(TARGETS) if targets == "both" else [targets] if isinstance(targets, str) else list(targets)
    wrong = [t for t in asked if t not in TARGETS]
    if wrong or not asked:
        raise AvemoError(f"target {', '.join(map(str, wrong)) or 'none'}: choose arousal, valence or both")
    if joint and "arousal" not in asked:
        raise AvemoError(
            "--joint tunes an arousal head (the joint pass is arousal-only): drop --joint, or give --target arousal or both"
        )
    return asked


def _where(path: str | Path) -> str:
    """A folder as the log records it: absolute, so that the log still says which one when read elsewhere."""
    return str(Path(path).absolute())


def _exported(export: str | Path | None, record: dict):
    """The export folder of a joint pass is a cache: it gets its log.txt too."""
    import contextlib

    return logged(export, "train --joint: features exported here", record) if export is not None else contextlib.nullcontext()


def evaluate(run: str | Path, resamples: int = 1000, seed: int = 0, plots: bool = True, quiet: bool = False) -> dict:
    """Score RUN's test predictions beside the majority class; write results.json, results.csv, report.md,
    plots/ and mediaeval/ into RUN, print the table unless `quiet`; returns the results."""
    from avemo.evaluate.report import evaluate as run_evaluate

    return run_evaluate(run, resamples=resamples, seed=seed, plots=plots, quiet=quiet)


def predict(
    source: str | Path,
    videos: list[str | Path],
    approach: str | None = None,
    batch_size: int = 64,
    on_error=None,
    seed: int | None = None,
    cache: str | Path | None = None,
    plot: str | Path | None = None,
) -> Predictions:
    """Probabilities per second and per clip of every target the model predicts (arousal, valence) for new
    videos (files, folders, .txt/.list files). `source`: a run folder (`approach`, default modal; `seed` for a
    multi-seed run; `cache` where its cache moved) or a model folder of `export` (recognised by its model.json).
    A video that cannot be used is listed in `.failed` (and passed to `on_error(path, reason)`); `plot`: a folder
    for one timeline PNG per video."""
    from avemo.predict import predict_videos

    return predict_videos(source, list(videos), approach, batch_size, on_error=on_error, seed=seed, cache=cache, plot=plot)


def export(
    run: str | Path,
    out: str | Path,
    approach: str = "modal",
    seed: int | None = None,
    cache: str | Path | None = None,
) -> Path:
    """Write the model folder of RUN's `approach` into OUT (a new or empty folder): the AlexNets (fp16, exactly
    the run's weights), the head(s) with their z-score statistics, the decoding and feature settings, a model
    card (docs/model-format.md). It predicts as the run does, without the run or its cache (`load_model`,
    `predict`). Returns OUT."""
    from avemo.modelfolder import export as run_export

    return run_export(run, out, approach, seed=seed, cache=cache)


def load_model(source: str | Path, batch_size: int = 64, device: str | None = None) -> Predictor:
    """A model folder (or a run folder, its modal head) loaded once: `.predict(path)` gives a VideoPrediction
    (`per_second[target]`: probabilities [seconds, 3]; `clip`; `start`, `end`)."""
    from avemo.predict import Predictor

    return Predictor(source, batch_size=batch_size, device=device)
