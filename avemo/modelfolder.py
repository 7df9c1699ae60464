"""The model folder (`avemo export`): everything `avemo predict` needs to classify new videos, and nothing else,
so that a trained model travels without its cache or its run. The one owner of its format (docs/model-format.md):
`export` writes it, `read` checks and loads it.

    MODEL/model.json      format and version, avemo version, approach, targets (class names, head files), the
                          embedder (fine-tuning mode, spectrogram input, feature width, the AlexNets' files and
                          the sha256 of their fp16 tensors), the decoding settings, where it came from
    MODEL/visual.pt       the AlexNets as fp16 state dicts, only what fc7 needs (the convolutions, fc6, fc7;
    MODEL/audio.pt        not fc8); loaded back to fp32 for computing
    MODEL/<target>.pt     the head of each target with its z-score statistics (paper eq. 3-12); late fusion
                          (eq. 14): <target>-visual.pt and <target>-audio.pt
    MODEL/README.md       the model card: data, splits, test metrics beside the majority baseline, settings

Every file is written atomically (avemo.atomic); model.json last, so a folder without it is no model. Reading
checks the format version, every file's presence and sha256 and the settings' completeness, each with one
line naming the file and how to fix it.

fp16 AlexNets halve the folder (a full-size model: 248 MB instead of about 475 MB) and are exactly the run's
weights: every AlexNet avemo computes fc7 with holds fp16 values (extract.alexnet.build_alexnet), so a model
folder predicts as `avemo predict --run` does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from avemo.approaches import MODALITIES, TITLES
from avemo.atomic import ensure_dir, load_torch, read_json, save_torch, write_json, write_text
from avemo.datasets.labels import CLASS_NAMES
from avemo.errors import AvemoError

if TYPE_CHECKING:
    import torch

    from avemo.extract.decode import DecodeSettings
    from avemo.predict import Predictor

FORMAT = "avemo-model"
VERSION = 1
MODEL_JSON = "model.json"
CARD = "README.md"
HEAD_KEYS = ("model", "settings", "norm", "epoch", "cache_sha256")  # of a head's model.pt: what predict reads
FC7_PREFIXES = ("features.", "classifier.1.", "classifier.4.")  # the convolutions, fc6, fc7


@dataclass
class ModelFolder:
    """A checked model folder, ready to build a Predictor from."""

    folder: Path
    approach: str
    heads: dict[str, list[Path]]  # target → head files (late fusion: visual, audio)
    alexnets: dict[str, torch.nn.Module]  # modality → AlexNet-shaped network without fc8, fp32
    mode: str  # fine-tuning mode: fc embeds through fp16 pool5 (avemo.extract.embed)
    spectrogram_input: str
    decode: DecodeSettings
    feature_width: int
    source: dict


def is_model(path: str | Path) -> bool:
    """Whether PATH is a model folder (holds model.json)."""
    return (Path(path) / MODEL_JSON).is_file()


def remedy(folder: Path) -> str:
    return f"export it again with `avemo export --run RUN --out {folder}`"


# -- writing -------------------------------------------------------------------------------------------
def export(
    run: str | Path,
    out: str | Path,
    approach: str = "modal",
    seed: int | None = None,
    cache: str | Path | None = None,
) -> Path:
    """Write the model folder of RUN's `approach` (and `seed`) into OUT, a new or empty folder. Everything
    is loaded and checked as `avemo predict --run` loads it (the cache, its identity, the heads), then copied;
    the AlexNets in fp16, which is exact (their weights are fp16 values)."""
    from avemo.predict import Predictor

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AvemoError(f"--out {out}: exists and is not an empty folder; choose a new folder (or delete it)")
    predictor = Predictor(run, approach, seed=seed, cache=cache, device="cpu")
    ensure_dir(out)
    alexnets = {m: _write_alexnet(out / f"{m}.pt", net) for m, net in predictor.embedder.nets.items()}
    targets = {}
    for target, heads in predictor.heads.items():
        names = [f"{target}.pt"] if len(heads) == 1 else [f"{target}-{m}.pt" for m in ("visual", "audio")]
        for name, head in zip(names, heads):
            save_torch(head.checkpoint, out / name)
        targets[target] = {"classes": list(CLASS_NAMES[target]), "heads": {n: _file_sha256(out / n) for n in names}}
    document = _document(predictor, targets, alexnets, seed)
    write_text(out / CARD, model_card(document, Path(run)))
    write_json(out / MODEL_JSON, document)  # last: the folder is a model once this exists
    return out


def _document(predictor: Predictor, targets: dict, alexnets: dict, seed: int | None) -> dict:
    from avemo import __version__

    embedder = predictor.embedder
    head = next(iter(predictor.heads.values()))[-1]
    return {
        "format": FORMAT,
        "version": VERSION,
        "avemo": __version__,
        "approach": predictor.approach,
        "targets": targets,
        "embedder": {
            "mode": embedder.mode,
            "spectrogram_input": embedder.nets["visual"].spectrogram_input,
            "feature_width": embedder.width("visual"),
            "alexnets": alexnets,
        },
        "decode": asdict(embedder.decode),
        "source": {
            "run": str(predictor.source.resolve()),
            "cache": str(predictor.cache),
            "cache_sha256": predictor.cache_sha256,
            "seed": seed if seed is not None else head.checkpoint.get("settings", {}).get("seed"),
            "head_settings": head.checkpoint.get("settings", {}).get("head"),
        },
    }


def _write_alexnet(path: Path, fc7: torch.nn.Module) -> dict:
    """Save the layers of an Fc7 (avemo.extract.alexnet) as an fp16 AlexNet state dict without fc8; exact
    (`fp16_state` refuses weights that are not fp16 values)."""
    from avemo.cache.models import fp16_state

    state = {}
    for key, value in fc7.state_dict().items():
        name = key.replace("fc6_fc7.", "classifier.", 1)
        if name.startswith(FC7_PREFIXES):
            state[name] = value
    state = fp16_state(state)
    save_torch(state, path)
    return {"file": path.name, "sha256": state_sha256(state)}


def state_sha256(state: dict) -> str:
    """sha256 over a state dict's names, dtypes, shapes and values (independent of torch's file layout)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- the model card ------------------------------------------------------------------------------------
def model_card(document: dict, run: Path) -> str:
    """MODEL/README.md: what the model is, what it was trained on, how well it did (RUN/results.json of `avemo
    evaluate`, beside the majority baseline; "not evaluated" without it), its settings and how to use it."""
    source, embedder = document["source"], document["embedder"]
    from avemo.runfolder import read_listing

    info = read_listing(run) or {}
    targets = ", ".join(f"{t} ({' / '.join(v['classes'])})" for t, v in document["targets"].items())
    lines = [
        f"# avemo model: {TITLES.get(document['approach'], document['approach'])}",
        "",
        f"Classifies {targets} of a video, per second and per clip, from its key frames and spectrograms (AlexNet fc7, "
        f"then the `{document['approach']}` head of *Video emotion analysis with modal fusion*). Made by avemo "
        f"{document['avemo']} with `avemo export` from the run `{source['run']}` (seed {source['seed']}).",
        "",
        "## Data",
        "",
        f"- Cache: `{source['cache']}` (features {str(source['cache_sha256'])[:12]})",
        f"- Train clips per class: {_counts(info.get('train_counts'))}; of them {len(info.get('validation_clips') or [])} "
        f"held out for model selection ({(info.get('validation') or {}).get('split', '')})",
        "",
        "## Test metrics",
        "",
        *_metrics(run, document),
        "",
        "## Settings",
        "",
        f"- Embedder: fine-tuning mode `{embedder['mode']}`, spectrogram input `{embedder['spectrogram_input']}`, "
        f"fc7 width {embedder['feature_width']}; AlexNets stored in fp16 (exactly the run's weights)",
        f"- Decoding: `{json.dumps(document['decode'])}`",
        f"- Head: `{json.dumps(source['head_settings'])}`",
        "",
        "## Use",
        "",
        "```sh",
        "avemo predict --model MODEL video.mp4 folder/ list.txt --plot plots/",
        "```",
        "",
        'In Python: `avemo.load_model("MODEL").predict("video.mp4")`. Format: docs/model-format.md of avemo.',
        "",
    ]
    return "\n".join(lines)


def _counts(counts: object) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) if isinstance(counts, dict) else "unknown"


def _metrics(run: Path, document: dict) -> list[str]:
    """The test rows of results.json for this model's approach and seed, with the majority baseline."""
    path = run / "results.json"
    if not path.is_file():
        return [f"Not evaluated (no {path.name} in the run: `avemo evaluate --run RUN`, then export again)."]
    tasks = json.loads(path.read_text()).get("tasks") or {}
    rows = ["| Target | Accuracy (%) | 95% CI (%) | Majority class (%) | Balanced accuracy (%) | Macro-F1 (%) |"]
    rows.append("|---|---:|---:|---:|---:|---:|")
    for target in document["targets"]:
        task = tasks.get(target) or {}
        entry = _entry(task.get("entries") or [], document["approach"], document["source"]["seed"])
        if entry is None:
            rows.append(f"| {target} | not evaluated | | | | |")
            continue
        low, high = entry.get("ci95") or (float("nan"), float("nan"))
        majority = f"{100 * task['majority_accuracy']:.2f} (always '{task['majority_class']}')"
        rows.append(
            f"| {target} | {100 * entry['accuracy']:.2f} | {100 * low:.1f}–{100 * high:.1f} | {majority} "
            f"| {100 * entry['balanced_accuracy']:.2f} | {100 * entry['macro_f1']:.2f} |"
        )
    counts = (tasks.get("arousal") or {}).get("test_counts")
    return [f"Test split: {_counts(counts)} (global accuracy Nc/Nt, paper eq. 13).", "", *rows]


def _entry(entries: list[dict], approach: str, seed: int | None) -> dict | None:
    found = [e for e in entries if e.get("approach") == approach and not e.get("variant")]
    return next((e for e in found if e.get("seed") == seed), found[0] if len(found) == 1 else None)


# -- reading -------------------------------------------------------------------------------------------
def read(folder: str | Path) -> ModelFolder:
    """MODEL checked (format version, files and their sha256, settings complete) and loaded."""
    folder = Path(folder)
    document = _read_document(folder)
    embedder = _section(document, "embedder", dict, folder)
    width = _section(embedder, "feature_width", int, folder)
    entries = {m: _section(embedder["alexnets"], m, dict, folder) for m in MODALITIES}
    alexnets = {m: _read_alexnet(folder, entry, width) for m, entry in entries.items()}
    return ModelFolder(
        folder=folder,
        approach=_section(document, "approach", str, folder),
        heads=_read_targets(folder, _section(document, "targets", dict, folder)),
        alexnets=alexnets,
        mode=_choice(embedder, "mode", ("fc", "all", "none"), folder),
        spectrogram_input=_choice(embedder, "spectrogram_input", ("resize", "crop"), folder),
        decode=_read_decode(folder, _section(document, "decode", dict, folder)),
        feature_width=width,
        source=document.get("source") or {},
    )


def _read_document(folder: Path) -> dict:
    path = folder / MODEL_JSON
    if not path.is_file():
        raise AvemoError(f"{path}: not found; is {folder} a model folder of `avemo export`? {remedy(folder)}")
    document = read_json(path, remedy(folder))
    if document.get("format") != FORMAT:
        raise AvemoError(f"{path}: not an avemo model folder (format {document.get('format')!r}); {remedy(folder)}")
    version = document.get("version")
    if version != VERSION:
        newer = isinstance(version, int) and version > VERSION
        fix = "upgrade avemo to read it" if newer else remedy(folder)
        raise AvemoError(f"{path}: model format version {version!r}, this avemo reads version {VERSION}; {fix}")
    return document


def _section(document: dict, key: str, kind: type, folder: Path):
    value = document.get(key) if isinstance(document, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) or (hasattr(value, "__len__") and not value):
        raise AvemoError(f"{folder / MODEL_JSON}: no valid {key!r} entry; {remedy(folder)}")
    return value


def _choice(document: dict, key: str, choices: tuple[str, ...], folder: Path) -> str:
    value = _section(document, key, str, folder)
    if value not in choices:
        raise AvemoError(f"{folder / MODEL_JSON}: {key} {value!r} is not one of {', '.join(choices)}; {remedy(folder)}")
    return value


def _file(folder: Path, name: object) -> Path:
    """A file of the model folder named in model.json: a plain name (never a path out of the folder), present."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise AvemoError(f"{folder / MODEL_JSON}: names a file outside the folder ({name!r}); {remedy(folder)}")
    path = folder / name
    if not path.is_file():
        raise AvemoError(f"{path}: missing from the model folder; copy the whole folder, or {remedy(folder)}")
    return path


def _read_targets(folder: Path, targets: dict) -> dict[str, list[Path]]:
    out = {}
    for target, entry in targets.items():
        if target not in CLASS_NAMES or not isinstance(entry, dict) or entry.get("classes") != list(CLASS_NAMES[target]):
            raise AvemoError(f"{folder / MODEL_JSON}: target {target!r} or its class names are not avemo's; {remedy(folder)}")
        heads = entry.get("heads")
        if not isinstance(heads, dict) or len(heads) not in (1, 2):
            raise AvemoError(f"{folder / MODEL_JSON}: target {target} names no head files; {remedy(folder)}")
        for name, sha in heads.items():
            if _file_sha256(_file(folder, name)) != sha:
                raise AvemoError(f"{folder / name}: its sha256 differs from model.json's (changed or damaged); {remedy(folder)}")
        out[target] = [folder / name for name in heads]
    return out


def _read_alexnet(folder: Path, entry: dict, width: int) -> torch.nn.Module:
    """One stored AlexNet of the folder (every tensor fp16), hash checked, as an fp32 AlexNet-shaped network
    without fc8 (the same values: exact)."""
    import torch

    from avemo.extract.alexnet import alexnet_shaped, fc7_width

    path = _file(folder, entry.get("file"))
    state = load_torch(path, remedy(folder))
    if not all(isinstance(v, torch.Tensor) and v.dtype == torch.float16 for v in state.values()):
        raise AvemoError(f"{path}: not fp16 tensors as a model folder holds; {remedy(folder)}")
    if state_sha256(state) != entry.get("sha256"):
        raise AvemoError(f"{path}: its tensors' sha256 differs from model.json's (changed or damaged); {remedy(folder)}")
    try:
        channels = tuple(int(state[f"features.{i}.weight"].shape[0]) for i in (0, 3, 6, 8, 10))
        with torch.device("meta"):
            model = alexnet_shaped(channels, int(state["classifier.4.weight"].shape[0]))
        model.classifier = model.classifier[:6]  # fc8 is not stored: fc7 does not need it
        model.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)
    except (KeyError, RuntimeError, IndexError) as e:
        raise AvemoError(f"{path}: not an AlexNet state dict ({str(e).splitlines()[0][:100]}); {remedy(folder)}") from None
    if fc7_width(model) != width:
        raise AvemoError(f"{path}: fc7 is {fc7_width(model)} wide, model.json says {width}; {remedy(folder)}")
    return model.eval()


def _read_decode(folder: Path, values: dict) -> DecodeSettings:
    """The DecodeSettings of model.json, every field present (a missing one would decode differently)."""
    from avemo.extract.decode import DecodeSettings, decodable_here
    from avemo.extract.spectrogram import SpectrogramSettings

    spectrogram = values.get("spectrogram")
    missing = sorted({f.name for f in fields(DecodeSettings)} - set(values))
    if isinstance(spectrogram, dict):
        missing += sorted(f"spectrogram.{f.name}" for f in fields(SpectrogramSettings) if f.name not in spectrogram)
    if missing or not isinstance(spectrogram, dict):
        raise AvemoError(f"{folder / MODEL_JSON}: decode settings incomplete (no {', '.join(missing)}); {remedy(folder)}")
    try:
        known = {f.name for f in fields(DecodeSettings)} - {"spectrogram"}
        settings = DecodeSettings(**{k: values[k] for k in known}, spectrogram=SpectrogramSettings(**spectrogram))
    except (TypeError, ValueError) as e:
        raise AvemoError(f"{folder / MODEL_JSON}: decode settings invalid ({e}); {remedy(folder)}") from None
    return decodable_here(settings, folder / MODEL_JSON)  # PyAV where the exporting machine's decoder is missing
