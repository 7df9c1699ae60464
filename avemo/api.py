"""The Python API: what the `avemo` commands do, callable from Python with the same settings dataclasses
(`avemo extract|train|evaluate|predict` only parse options into them and call these).

    from avemo import api, ExtractSettings, TrainSettings, JointSettings

    api.extract("corpus/clips.csv", "cache", ExtractSettings(weights="none"))
    api.train("cache", "run", "all", TrainSettings(epochs=40), joint=JointSettings())
    results = api.evaluate("run")

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
    from avemo.predict import Predictions
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
) -> Path:
    """Train the approaches (a name, "all", or a list) on the cache's train split into RUN, for every seed
    (default: settings.seed) and LSTM size (default: settings.head.lstm_hidden); finished models are reused,
    an interrupted run resumes. With `joint`, then tune the head of RUN/<joint_from> and the cache's AlexNets
    end to end into RUN/joint (docs/joint.md): a head already trained there is tuned as it is, else it is
    trained first, with the approaches; `export` then writes the tuned AlexNets' features as a new cache.
    Returns RUN."""
    from avemo.approaches import APPROACHES
    from avemo.runfolder import has_head
    from avemo.train.settings import TrainSettings

    if export is not None and joint is None:
        raise AvemoError(f"export {export}: the features of the joint pass; ask for it (--joint, joint=JointSettings())")
    settings = settings or TrainSettings()
    approaches = list(APPROACHES) if approaches == "all" else [approaches] if isinstance(approaches, str) else list(approaches)
    seeds = list(seeds or [settings.seed])
    run = Path(run)
    record = {"cache": _where(cache), "run": _where(run), "approaches": approaches, "seeds": seeds, "lstm_sizes": lstm_sizes}
    record |= {"memory": memory, **asdict(settings)}
    if joint is not None:
        record |= {"joint": {"from": joint_from, "seed": joint_seed, "export": export, **asdict(joint)}}
    with logged(run, "train", record), _exported(export, record):
        if joint is not None and has_head(run, joint_from):
            print(f"joint: tuning the trained head in {run / joint_from}")
        else:
            from avemo.train.trainer import train as run_train

            approaches += [joint_from] if joint is not None and joint_from not in approaches else []
            run_train(cache, run, approaches, settings, seeds=seeds, lstm_sizes=lstm_sizes, memory=memory)
        if joint is not None:
            from avemo.train.joint import joint_train

            joint_train(cache, run, joint, approach=joint_from, export=export, seed=joint_seed)
    return run


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
    run: str | Path, videos: list[str | Path], approach: str = "modal", batch_size: int = 64, on_error=None
) -> Predictions:
    """Arousal probabilities per second and per clip for new videos with RUN's AlexNets and head; a video that
    cannot be used is listed in `.failed` (and passed to `on_error(path, reason)`)."""
    from avemo.predict import predict_videos

    return predict_videos(run, list(videos), approach, batch_size, on_error=on_error)
