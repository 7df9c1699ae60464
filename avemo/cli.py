"""The `avemo` command: sample | extract | train | evaluate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from avemo.errors import AvemoError


class _Group(click.Group):
    """Turns the errors a user can cause into one line (`Error: ...`, exit status 1), never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AvemoError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=_Group)
@click.version_option(package_name="avemo")
def main() -> None:
    """Audio-visual emotion analysis of videos: extract → train → evaluate (see README.md)."""


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--clips", default=150, show_default=True, type=click.IntRange(min=2), help="Number of clips.")
@click.option("--seed", default=0, show_default=True, type=int)
def sample(out: Path, clips: int, seed: int) -> None:
    """Write the sample corpus: OUT/data/*.mp4, OUT/annotations/ (MediaEval format), OUT/clips.csv."""
    from avemo.datasets.sample import write_sample

    manifest = write_sample(out, clips=clips, seed=seed)
    click.echo(f"sample: {clips} clips, manifest {manifest}")


@main.command()
@click.option("--manifest", required=True, type=click.Path(dir_okay=False, path_type=Path), help="CSV manifest.")
@click.option("--cache", required=True, type=click.Path(file_okay=False, path_type=Path), help="Cache directory.")
@click.option("--weights", default="none", show_default=True, help="AlexNet weights: imagenet | none | PATH to a state dict.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random init for --weights none.")
@click.option(
    "--hist-bins",
    default=32,
    show_default=True,
    type=click.Choice(["8", "16", "32", "64", "128", "256"]),
    help="RGB histogram bins per channel for key frames.",
)
@click.option(
    "--sample-rate",
    default=16000,
    show_default=True,
    type=click.IntRange(min=2000),
    help="Audio sample rate (Hz) of the spectrograms.",
)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
def extract(manifest: Path, cache: Path, weights: str, seed: int, hist_bins: str, sample_rate: int, batch_size: int) -> None:
    """Decode each clip once (key frames, spectrograms) and export AlexNet fc7 features into CACHE."""
    from avemo.datasets.manifest import check_files, read_manifest
    from avemo.extract.decode import DecodeSettings
    from avemo.extract.pipeline import ExtractSettings
    from avemo.extract.pipeline import extract as run_extract
    from avemo.extract.spectrogram import SpectrogramSettings

    clips = read_manifest(manifest)
    check_files(clips, manifest)
    decode = DecodeSettings(hist_bins=int(hist_bins), spectrogram=SpectrogramSettings(sample_rate=sample_rate))
    run_extract(clips, cache, ExtractSettings(decode=decode, weights=weights, seed=seed, batch_size=batch_size))


@main.command()
@click.option(
    "--cache", required=True, type=click.Path(file_okay=False, path_type=Path), help="Cache written by `avemo extract`."
)
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory to write.")
@click.option(
    "--approach", default="modal", show_default=True, type=click.Choice(["visual", "audio", "early", "late", "modal", "all"])
)
@click.option("--epochs", default=40, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=0.01, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--lstm-hidden", default=256, show_default=True, type=click.IntRange(min=1), help="LSTM units (paper: 256).")
@click.option("--seed", default=0, show_default=True, type=int)
def train(
    cache: Path, run_dir: Path, approach: str, epochs: int, lr: float, batch_size: int, lstm_hidden: int, seed: int
) -> None:
    """Train the paper's heads on the cache's train split; write predictions into RUN."""
    from avemo.train.heads import APPROACHES
    from avemo.train.trainer import TrainSettings
    from avemo.train.trainer import train as run_train

    settings = TrainSettings(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    settings = replace(settings, head=replace(settings.head, lstm_hidden=lstm_hidden))
    run_train(cache, run_dir, list(APPROACHES) if approach == "all" else [approach], settings)


@main.command()
@click.option(
    "--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory of `avemo train`."
)
def evaluate(run_dir: Path) -> None:
    """Score the run on the test split next to the majority-class baseline; write results.json, report.md."""
    from avemo.evaluate.report import evaluate as run_evaluate

    run_evaluate(run_dir)
