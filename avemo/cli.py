"""The `avemo` command: sample | datasets | extract | train | evaluate | predict | export | bench."""

from __future__ import annotations

from dataclasses import MISSING, Field, fields, replace
from pathlib import Path

import click
from click.core import ParameterSource

from avemo.approaches import APPROACHES
from avemo.errors import AvemoError
from avemo.train.settings import JointSettings, TrainSettings

CONTEXT = {"help_option_names": ["-h", "--help"]}  # every command: -h as --help (subcommands inherit it)


class _Group(click.Group):
    """Turns the errors a user can cause into one line (`Error: ...`, exit status 1), never a traceback: our
    AvemoError, and as a safety net any OSError (a full disk, a read-only folder, a missing permission), named
    by its file and the system's reason."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AvemoError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            raise click.ClickException(_os_error(e)) from None


def _os_error(e: OSError) -> str:
    """'FILE: reason (what to check)' for an OSError."""
    reason = e.strerror or (str(e).strip().splitlines() or [type(e).__name__])[0]
    where = f"{e.filename}" + (f" → {e.filename2}" if e.filename2 else "") if e.filename else ""
    check = "check the path, its permissions and the free disk space"
    return f"{where}: {reason} ({check})" if where else f"{reason} ({type(e).__name__}; {check})"


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(package_name="avemo")
def main() -> None:
    """Audio-visual emotion analysis of videos: extract → train → evaluate (see README.md)."""


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--clips", default=150, show_default=True, type=click.IntRange(min=2), help="Number of clips.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--workers", default=0, show_default=True, type=click.IntRange(min=0), help="Processes writing clips (0: one per CPU)."
)
@click.option("--size", default="160x120", show_default=True, help="Frame size WxH (larger: decoding as slow as real video).")
def sample(out: Path, clips: int, seed: int, workers: int, size: str) -> None:
    """Write the sample corpus: OUT/data/*.mp4, OUT/annotations/ (MediaEval format), OUT/clips.csv."""
    from avemo.datasets.sample import write_sample

    try:
        width, height = (int(v) for v in size.lower().split("x"))
        manifest = write_sample(out, clips=clips, seed=seed, workers=workers or None, size=(width, height))
    except ValueError as e:
        raise click.BadParameter(str(e) if "sample frame size" in str(e) else f"{size!r}: expected WxH, e.g. 640x360") from None
    click.echo(f"sample: {clips} clips, manifest {manifest}")


def _dataset_options(command):
    """The ways to name a dataset (docs/datasets.md): --manifest, --dataset mediaeval --root, or --list."""
    options = [
        click.option("--manifest", type=click.Path(path_type=Path), help="CSV manifest."),
        click.option(
            "--dataset", type=click.Choice(["csv", "mediaeval"]), help="mediaeval: the MediaEval 2015 release in --root."
        ),
        click.option("--root", type=click.Path(path_type=Path), help="Folder of the MediaEval 2015 release."),
        click.option("--list", "lists", multiple=True, help="List file (SHOT_id valence arousal); train=FILE / test=FILE."),
        click.option("--videos", type=click.Path(path_type=Path), help="With --list: folder of <id>.mp4."),
        click.option("--map", "maps", multiple=True, type=click.Path(path_type=Path), help="With --list: id→file map."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command()
@_dataset_options
@click.option("--cache", required=True, type=click.Path(file_okay=False, path_type=Path), help="Cache directory.")
@click.option(
    "--weights",
    default="imagenet",
    show_default=True,
    help="AlexNet weights: imagenet (torchvision's, as the paper) | none (random init) | PATH to a state dict.",
)
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
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0), help="Decoding processes (0: one per CPU).")
@click.option(
    "--image-codec",
    default="jpeg",
    show_default=True,
    type=click.Choice(["jpeg", "png", "raw"]),
    help="How the media cache stores key frames and spectrograms (png and raw are lossless).",
)
@click.option(
    "--spectrogram-input",
    default="resize",
    show_default=True,
    type=click.Choice(["resize", "crop"]),
    help="256×256 spectrogram → AlexNet's 224×224: resize keeps 0-8 kHz and the whole second; crop drops < 480 Hz.",
)
@click.option(
    "--finetune",
    default="fc",
    show_default=True,
    type=click.Choice(["fc", "all", "none"]),
    help="Fine-tune AlexNet per modality on the train split: fc = fc6-fc8 on cached pool5, all = every layer, none = as given.",
)
@click.option("--finetune-epochs", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--finetune-lr", default=0.001, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--finetune-batch-size", default=128, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--validation",
    default=0.1,
    show_default=True,
    type=click.FloatRange(min=0, max=1, max_open=True),
    help="Fraction of the train clips (whole movies when known) left out of fine-tuning; `avemo train` selects its "
    "epoch on them. 0: none.",
)
@click.option("--validation-seed", default=0, show_default=True, type=int, help="Seed of the validation split.")
def extract(
    cache: Path,
    weights: str,
    seed: int,
    hist_bins: str,
    sample_rate: int,
    batch_size: int,
    workers: int,
    image_codec: str,
    spectrogram_input: str,
    finetune: str,
    finetune_epochs: int,
    finetune_lr: float,
    finetune_batch_size: int,
    validation: float,
    validation_seed: int,
    **dataset_options,
) -> None:
    """Decode each clip once (key frames, spectrograms) and export AlexNet fc7 features into CACHE; what it
    prints is also appended to CACHE/log.txt."""
    from avemo import api

    # every file present, both splits non-empty: refused now (before importing torch), not hours later
    dataset = api.dataset(**dataset_options)
    from avemo.extract.decode import DecodeSettings
    from avemo.extract.finetune import FinetuneSettings
    from avemo.extract.pipeline import ExtractSettings
    from avemo.extract.spectrogram import SpectrogramSettings

    spectrogram = SpectrogramSettings(sample_rate=sample_rate)
    decode = DecodeSettings(hist_bins=int(hist_bins), spectrogram=spectrogram, image_codec=image_codec)
    tuning = FinetuneSettings(
        mode=finetune,
        epochs=finetune_epochs,
        lr=finetune_lr,
        batch_size=finetune_batch_size,
        validation=validation,
        validation_seed=validation_seed,
    )
    settings = ExtractSettings(
        decode=decode,
        weights=weights,
        seed=seed,
        batch_size=batch_size,
        workers=workers,
        finetune=tuning,
        spectrogram_input=spectrogram_input,
    )
    api.extract(dataset, cache, settings)


def _option_fields(cls) -> list[Field]:
    """The fields of a settings dataclass that are command-line options (their metadata holds the help)."""
    return [f for f in fields(cls) if "help" in f.metadata]


def _click_type(kind: str, spec: dict):
    """The click type of a field: its choices, or its type within its bounds."""
    if "choices" in spec:
        return click.Choice(list(spec["choices"]))
    bounds = {k: spec[k] for k in ("min", "max", "min_open", "max_open") if k in spec}
    if kind == "int":
        return click.IntRange(**bounds) if bounds else int
    if kind == "float":
        return click.FloatRange(**bounds) if bounds else float
    return str


def _settings_options(cls, prefix: str = ""):
    """One option per field of `cls` with option metadata: --<prefix><field-name>, its help, default and bounds;
    a bool field is a flag. The parameter is named <prefix><field_name> (dashes as underscores)."""

    def decorate(command):
        for f in reversed(_option_fields(cls)):
            kind = str(f.type).replace(" ", "").split("|")[0]
            name, param = f"--{prefix}{f.name}".replace("_", "-"), f"{prefix}{f.name}".replace("-", "_")
            default = None if f.default is MISSING else f.default
            if kind == "bool":
                option = click.option(name, param, is_flag=True, help=f.metadata["help"])
            else:
                kind_of = _click_type(kind, f.metadata)
                option = click.option(
                    name, param, default=default, show_default=default is not None, type=kind_of, help=f.metadata["help"]
                )
            command = option(command)
        return command

    return decorate


@main.command()
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A settings.json of `avemo train` (RUN/<approach>/settings.json): train with its settings (and its approach, "
    "seed, LSTM size and target; the device is this machine's); the options given here override them.",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="Cache written by `avemo extract` [required; with --config: the cache of the run it comes from].",
)
@click.option(
    "--run",
    "--run-dir",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory to write (under torchrun write --run-dir: torchrun takes --run for its --run-path).",
)
@click.option("--approach", default="modal", show_default=True, type=click.Choice([*APPROACHES, "all"]))
@click.option(
    "--target",
    type=click.Choice(["arousal", "valence", "both"]),
    help="What the models predict: arousal (the paper's task), valence (into RUN/valence/), or both (a model for "
    "each) [default: arousal, or the --config file's].",
)
@click.option(
    "--lstm-hidden",
    default="256",
    show_default=True,
    help="LSTM units (paper: 256); a comma list such as 64,128,256,512 runs the paper's Fig. 2 sweep.",
)
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(min=1), help="Repeat with seeds SEED … SEED+N-1.")
@click.option(
    "--stacked",
    is_flag=True,
    help="Train all the models asked for at once (batched: much faster on a GPU, not on a CPU); the same run files.",
)
@_settings_options(TrainSettings)
@click.option(
    "--alpha",
    default="learned",
    show_default=True,
    type=click.Choice(["learned", "fixed"]),
    help="Modal fusion weights α_a, α_v of eq. 3.",
)
@click.option(
    "--alpha-audio", default=0.5, show_default=True, type=float, help="α_a: start value, or the value with --alpha fixed."
)
@click.option(
    "--alpha-visual", default=0.5, show_default=True, type=float, help="α_v: start value, or the value with --alpha fixed."
)
@click.option(
    "--dropout", default=0.5, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="MLP dropout (paper: 0.5)."
)
@click.option(
    "--memory",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "ram", "mmap"]),
    help="Features in RAM, or memory-mapped from a copy in RUN (auto: mmap when larger than half the free memory).",
)
@click.option("--joint", is_flag=True, help="Then tune a trained head and the cache's AlexNets end to end (docs/joint.md).")
@click.option(
    "--joint-from",
    default="modal",
    show_default=True,
    type=click.Choice(["modal", "early", "visual", "audio"]),
    help="Head of RUN to tune (trained first if RUN has none).",
)
@click.option("--joint-seed", default=None, type=int, help="Seed folder to tune in a run trained with several seeds.")
@_settings_options(JointSettings, "joint-")
@click.option(
    "--export-features",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --joint: write fc7 of the tuned AlexNets as a cache DIR for `avemo train --cache DIR`.",
)
@click.pass_context
def train(
    ctx: click.Context,
    config: Path | None,
    cache: Path | None,
    run_dir: Path,
    approach: str,
    target: str | None,
    lstm_hidden: str,
    seeds: int,
    stacked: bool,
    memory: str,
    joint: bool,
    joint_from: str,
    joint_seed: int | None,
    export_features: Path | None,
    **options,
) -> None:
    """Train the paper's heads on the cache's train split; write predictions into RUN (an interrupted run
    resumes when started again with the same command). With --joint, then run the joint end-to-end pass
    from RUN's trained arousal head (training that head first if RUN has none) into RUN/joint. What it prints
    is also appended to RUN/log.txt."""
    given = set(ctx.params) if config is None else _given(ctx)
    sizes = _lstm_sizes(lstm_hidden) if "lstm_hidden" in given else None
    if export_features and not joint:
        raise click.BadParameter("needs --joint", param_hint="--export-features")
    base = _config(config) if config else None
    if cache is None:
        cache = _recorded_cache(config)
    settings = _train_settings(base, options | {"target": target}, given)
    if "approach" not in given:
        approach = settings.head.approach
    tuning = None
    if joint:
        values = {f.name: options[f"joint_{f.name}"] for f in _option_fields(JointSettings)}
        tuning = JointSettings(**values, seed=settings.seed, device=settings.device)
    from avemo import api

    api.train(
        cache,
        run_dir,
        approach,
        settings,
        seeds=list(range(settings.seed, settings.seed + seeds)),
        lstm_sizes=sizes or [settings.head.lstm_hidden],
        memory=memory,
        joint=tuning,
        joint_from=joint_from,
        joint_seed=joint_seed,
        export=export_features,
        targets=target or settings.target,
        stacked=stacked,
    )


def _given(ctx: click.Context) -> set[str]:
    """The parameters given on the command line (or by the environment), not left at their defaults."""
    return {name for name in ctx.params if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)}


def _lstm_sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma list of integers", param_hint="--lstm-hidden") from None
    if min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise click.BadParameter("sizes must be positive and distinct", param_hint="--lstm-hidden")
    return sizes


def _recorded_cache(config: Path | None) -> Path:
    """The cache named by the run.json of the run a --config file belongs to (RUN/<model>[/seed-<s>]/settings.json)."""
    from avemo.runfolder import RUN_JSON, cache_of

    for folder in list(config.resolve().parents)[:3] if config else []:
        if (folder / RUN_JSON).is_file():
            return cache_of(folder)
    where = f" (no {RUN_JSON} above {config} names one)" if config else ""
    raise click.UsageError(f"Missing option '--cache'{where}.")


def _config(path: Path) -> TrainSettings:
    """The TrainSettings of a settings.json, checked: a head's (late fusion's per-second classifiers are parts
    of RUN/late, not approaches)."""
    base = TrainSettings.from_json(path)
    if base.head.temporal != "lstm" or base.head.approach not in APPROACHES:
        raise AvemoError(
            f"{path}: the settings of one of late fusion's per-second classifiers, not of an approach; give "
            "RUN/late/settings.json"
        )
    return base


def _train_settings(base: TrainSettings | None, options: dict, given: set[str]) -> TrainSettings:
    """The options given, over the --config file's settings (`base`) or the defaults. The file's device is not
    used: the device is where a run trains, not how (a resumed run ignores it too)."""
    from avemo.approaches import default_device
    from avemo.train.heads import HeadSettings

    values = {f.name: options[f.name] for f in _option_fields(TrainSettings) if f.name in given}
    if options.get("target") in ("arousal", "valence"):  # --target both: api.train trains a model of each
        values["target"] = options["target"]
    if values.get("device") is None:
        values["device"] = default_device()
    head = base.head if base else HeadSettings()
    changes = {k: options[k] for k in ("dropout", "alpha_audio", "alpha_visual") if k in given}
    if "alpha" in given:
        changes["learn_alpha"] = options["alpha"] == "learned"
    head = replace(head, **changes)
    return replace(base, head=head, **values) if base else TrainSettings(head=head, **values)


@main.command()
@click.option(
    "--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory of `avemo train`."
)
@click.option("--bootstrap", default=1000, show_default=True, type=click.IntRange(min=100), help="Bootstrap resamples (95% CI).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the bootstrap resampling.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG figures.")
def evaluate(run_dir: Path, bootstrap: int, seed: int, no_plots: bool) -> None:
    """Score the run's test predictions next to the majority-class baseline (accuracy with 95% CI, balanced
    accuracy, macro-F1, per-class precision/recall, McNemar tests, the modality weights α) for arousal and, when
    trained, valence; write results.json, results.csv, report.md, plots/*.png (confusion matrices, learning
    curves) and mediaeval/*.txt run files into RUN, and print the tables."""
    from avemo import api

    api.evaluate(run_dir, resamples=bootstrap, seed=seed, plots=not no_plots)


@main.command()
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), help="Run directory of `avemo train`.")
@click.option("--model", type=click.Path(file_okay=False, path_type=Path), help="Model folder of `avemo export`.")
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--approach",
    default=None,
    help="With --run: the head (visual, audio, early, modal [default], late, joint, or a folder such as modal-lstm64); "
    "late = visual and audio heads, α = 0.56.",
)
@click.option("--seed", type=int, help="With --run: the seed of a run trained with several seeds.")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), help="With --run: its cache, where it moved.")
@click.option("--format", "fmt", default="json", show_default=True, type=click.Choice(["json", "csv"]))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
@click.option("--plot", type=click.Path(file_okay=False, path_type=Path), help="Write a timeline PNG per video into this folder.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
def predict(
    run_dir: Path | None,
    model: Path | None,
    videos: tuple[Path, ...],
    approach: str | None,
    seed: int | None,
    cache: Path | None,
    fmt: str,
    output: Path | None,
    plot: Path | None,
    batch_size: int,
) -> None:
    """Class probabilities per second and per clip for new VIDEOs (files, folders of videos, .txt/.list files
    of paths), for every target the model was trained for (arousal; valence too when trained), with a run's
    AlexNets and head (--run) or a model folder (--model).

    \b
    JSON (default): {"run" or "model", "approach", "targets": {target: class names}, "videos": [{"path",
    "seconds", "has_audio", "clip", "per_second": [{"second", "start", "end", TARGET: {"label" (-1/0/1),
    "class", "probabilities"}}], "plot"}], "failed": [{"path", "reason"}]}.
    CSV: one row per second and one per clip (second = clip): path,second,start,end, then per target
    TARGET,TARGET_class and its probabilities (arousal: p_calm,p_neutral,p_active; valence:
    p_valence_negative,p_valence_neutral,p_valence_positive).
    Second t covers [t, t+1) s from the first frame's presentation time.

    A file that cannot be used gets one `Error:` line on stderr; the others still come out, and the exit
    status is 1 if any failed."""
    from avemo import api
    from avemo.atomic import check_writable, write_text
    from avemo.predict import to_csv, to_json

    if (run_dir is None) == (model is None):
        raise AvemoError("name the model: --run RUN (a run of `avemo train`) or --model MODEL (of `avemo export`), one of them")
    if model is not None and not (model / "model.json").is_file():
        raise AvemoError(f"{model / 'model.json'}: not found; is {model} a model folder of `avemo export`? (a run folder: --run)")
    if output is not None:
        check_writable(output)  # before any decoding: all the work would be lost at the end
    result = api.predict(
        run_dir or model,
        list(videos),
        approach,
        batch_size,
        on_error=lambda path, reason: click.echo(f"Error: {path}: {reason}", err=True),
        seed=seed,
        cache=cache,
        plot=plot,
    )
    text = to_json(result) if fmt == "json" else to_csv(result)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_text(output, text)
        click.echo(f"predict: {len(result.videos)} videos → {output}", err=True)
    if plot is not None:
        click.echo(f"predict: {len(result.videos)} timelines → {plot}", err=True)
    if result.failed:
        raise click.exceptions.Exit(1)


@main.command()
@click.option(
    "--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory of `avemo train`."
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="The model folder to write.")
@click.option("--approach", default="modal", show_default=True, help="The head to export (as `avemo predict --approach`).")
@click.option("--seed", type=int, help="The seed of a run trained with several seeds.")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), help="The run's cache, where it moved.")
def export(run_dir: Path, out: Path, approach: str, seed: int | None, cache: Path | None) -> None:
    """Write a model folder: everything `avemo predict --model` needs and nothing else (the head, the tuned
    AlexNets in fp16, exactly the run's, decoding and feature settings, z-score statistics, class names) and a
    model card (README.md). It predicts as the run does, on another machine without the run or its cache
    (docs/model-format.md)."""
    from avemo import api

    folder = api.export(run_dir, out, approach, seed=seed, cache=cache)
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    click.echo(f"export: {approach} model of {run_dir} → {folder} ({size / 1e6:.1f} MB)")


@main.group()
def datasets() -> None:
    """Inspect datasets (docs/datasets.md)."""


@datasets.command()
@_dataset_options
@click.option("--group", help="Metadata column that groups clips, e.g. a CSV column [default: movie, when present].")
def summary(group: str | None, **dataset_options) -> None:
    """Clips per split, class counts and proportions, majority-class accuracy, missing files."""
    from avemo.datasets.load import load_dataset
    from avemo.datasets.summary import summarize

    click.echo(summarize(load_dataset(**dataset_options, group=group), group=group or "movie"))


@main.group()
def bench() -> None:
    """Benchmarks that report speed as ratios measured in one run."""


@bench.command("train")
@click.option(
    "--clips", default=10900, show_default=True, type=click.IntRange(min=10), help="Synthetic clips (MediaEval: 10,900)."
)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
def bench_train_command(clips: int, batch_size: int) -> None:
    """Time one modal-fusion epoch against the bare matmuls it needs; print `ratio: epoch/matmuls`."""
    from avemo.train.bench import bench_train

    bench_train(clips=clips, batch_size=batch_size)


@bench.command("table")
@click.option(
    "--clips", default=10900, show_default=True, type=click.IntRange(min=10), help="Synthetic clips (MediaEval: 10,900)."
)
@click.option("--seeds", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--epochs", default=40, show_default=True, type=click.IntRange(min=1), help="Every run trains this many.")
@click.option("--device", default=None, help="cpu, cuda … (default: cuda when present).")
@click.option(
    "--stacked", is_flag=True, help="Train every model of the table at once (avemo.train.stacked; in memory, no run folder)."
)
def bench_table_command(clips: int, seeds: int, epochs: int, device: str | None, stacked: bool) -> None:
    """Time the paper's whole Table 1 over several seeds (`avemo train --approach all --seeds N`, or --stacked)."""
    from avemo.train.bench import bench_table

    bench_table(clips=clips, seeds=seeds, epochs=epochs, device=device, stacked=stacked)


@bench.command("step")
@click.option("--clips", default=2000, show_default=True, type=click.IntRange(min=10), help="Synthetic clips.")
@click.option("--seeds", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--steps", default=20, show_default=True, type=click.IntRange(min=1), help="Steps timed and profiled.")
@click.option("--device", default=None, help="cpu, cuda … (default: cuda when present).")
def bench_step_command(clips: int, seeds: int, steps: int, device: str | None) -> None:
    """Profile a step of stacked training (Table 1 × seeds): wall time, operators and GPU kernels per step."""
    from avemo.train.bench import bench_step

    bench_step(clips=clips, seeds=seeds, steps=steps, device=device)


@bench.command("extract")
@click.option("--clips", default=40, show_default=True, type=click.IntRange(min=2), help="Sample clips to make and use.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), help="Use these clips instead of sample ones.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0), help="Decoding processes (0: one per CPU).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--image-codec", default="jpeg", show_default=True, type=click.Choice(["jpeg", "png", "raw"]))
@click.option("--device", default=None, help="AlexNet's device: cpu, cuda … (default: cuda when present).")
def bench_extract(clips: int, manifest: Path | None, workers: int, batch_size: int, image_codec: str, device: str | None) -> None:
    """Time decode only (a), AlexNet forward only (b) and the full extraction (c); print `ratio: (c)/((a)+(b))`."""
    import tempfile

    from avemo.datasets.manifest import check_files, read_manifest
    from avemo.extract.bench import bench_extract as run_bench
    from avemo.extract.decode import DecodeSettings
    from avemo.extract.pipeline import ExtractSettings

    # the time does not depend on the weights: a random AlexNet, so the bench needs no download
    decode = DecodeSettings(image_codec=image_codec)
    settings = ExtractSettings(decode=decode, weights="none", workers=workers, batch_size=batch_size)
    settings = settings if device is None else replace(settings, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        if manifest is None:
            from avemo.datasets.sample import write_sample

            manifest = write_sample(Path(tmp) / "sample", clips=clips, seed=0, workers=workers or None)
        listed = read_manifest(manifest)
        check_files(listed, manifest)
        run_bench(listed, settings)
