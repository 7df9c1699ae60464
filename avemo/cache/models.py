"""The models store, CACHE/models/: the one writer and reader of a cache's AlexNets (docs/cache-format.md).

    CACHE/models/<modality>.pt    a plain AlexNet state dict in fp16 (`build_alexnet(PATH)` loads it as fp32)
    CACHE/models/manifest.json    {"schema_version": 1, "kind": "models", "settings": {...},
                                   "models": {<modality>: {"file": "<modality>.pt", "sha256": ..., ...}}}

`settings` is what the models were made with (extraction: the fine-tuning record; a joint export: the
features' settings with its `joint` record); `sha256` is `weights_sha256` of the parameters, which readers
check. Models hold fp16 values (extract.alexnet.build_alexnet), so their fp16 files are exact: half the
size of fp32 (a full-size AlexNet: 114 MB instead of 228 MB). A manifest of other settings is replaced,
entries and all, by the first model saved with new ones.
Every write is atomic (avemo.atomic) and never through a link; under torchrun only rank 0 calls the writers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from avemo.atomic import save_torch, write_json
from avemo.cache.store import writable_folder
from avemo.errors import AvemoError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def read_manifest(folder: Path) -> dict:
    """FOLDER/manifest.json, or {} when it is absent, unreadable or not a models manifest (its models are then
    made again: readers check every model by its hash)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_bytes()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        return {}
    return manifest


def entry(folder: Path, modality: str, settings: dict) -> dict | None:
    """The manifest entry of FOLDER/<modality>.pt when it was made with these settings, else None."""
    manifest = read_manifest(folder)
    if manifest.get("settings") != _plain(settings):
        return None
    known = manifest["models"].get(modality)
    return known if isinstance(known, dict) and isinstance(known.get("sha256"), str) else None


def load(folder: Path, modality: str, sha256: str):
    """FOLDER/<modality>.pt as an AlexNet when it is a plain file whose parameters hash to `sha256`; None
    when it is missing, a link, unloadable or other weights."""
    from avemo.extract.alexnet import build_alexnet, weights_sha256  # torch: only when models are read

    path = Path(folder) / f"{modality}.pt"
    if not path.is_file() or path.is_symlink():
        return None
    try:
        model = build_alexnet(str(path))
    except AvemoError:
        return None
    return model if weights_sha256(model) == sha256 else None


def save(folder: Path, modality: str, state: dict, sha256: str, settings: dict, **extra) -> Path:
    """Write FOLDER/<modality>.pt (the state dict, of fp16 values, as fp16: `fp16_state`) and its manifest
    entry {"file", "sha256", **extra}; the model first, so a kill between the two leaves a model the manifest
    does not vouch for, never the reverse."""
    path = writable_folder(Path(folder)) / f"{modality}.pt"
    save_torch(fp16_state(state), path)
    _record(Path(folder), modality, {"file": path.name, "sha256": sha256, **extra}, settings)
    return path


def fp16_state(state: dict) -> dict:
    """The state dict with every floating tensor as fp16, on the CPU; its values must be fp16 values already
    (`round_to_fp16_`), so that nothing is lost (ValueError otherwise: a caller forgot to round)."""
    import torch  # only when models are written

    out = {}
    for key, value in state.items():
        if value.is_floating_point():
            value = value.detach().cpu()
            half = value.to(torch.float16)
            if not bool(((half.to(value.dtype) == value) | value.isnan()).all()):
                raise ValueError(f"{key}: not fp16 values; round the AlexNet first (extract.alexnet.round_to_fp16_)")
            value = half
        out[key] = value.detach().cpu()
    return out


def place(folder: Path, modality: str, source: Path, sha256: str, settings: dict) -> Path:
    """As `save`, for a state dict already on disk (`source`): a hard link to it where the file system allows,
    else a copy."""
    path = writable_folder(Path(folder)) / f"{modality}.pt"
    path.unlink(missing_ok=True)  # (a link there: the link itself goes, never its target)
    try:
        os.link(source, path)
    except OSError:  # another file system
        shutil.copyfile(source, path)
    _record(Path(folder), modality, {"file": path.name, "sha256": sha256}, settings)
    return path


def _record(folder: Path, modality: str, value: dict, settings: dict) -> None:
    manifest = read_manifest(folder)
    if manifest.get("settings") != _plain(settings):
        manifest = {"schema_version": SCHEMA_VERSION, "kind": "models", "settings": _plain(settings), "models": {}}
    manifest["models"][modality] = value
    write_json(folder / MANIFEST, manifest)


def _plain(settings: dict) -> dict:
    """As it reads back from JSON (tuples become lists), so a record compares equal to the one written."""
    return json.loads(json.dumps(settings))
