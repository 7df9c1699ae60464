"""The end of the joint pass: the class probabilities of every clip and, with `export=OUT`, a feature cache
of the tuned backbones: OUT/features (fc7 through the one embedder, avemo.extract.embed, as extraction
computes it), OUT/models (through the models store, avemo.cache.models) and links to the cache's media
(and, layers fc, pool5)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from avemo import distributed
from avemo.approaches import MODALITIES
from avemo.cache import ShardStore, models
from avemo.errors import AvemoError
from avemo.extract.embed import Embedder
from avemo.log import progress
from avemo.train.joint.clips import Inputs
from avemo.train.joint.model import JointModel, head_logits

PREDICT_CLIPS = 256  # clips per head forward pass when predicting
JOINT_RECORD = ("settings", "head", "head_sha256", "alexnets_sha256", "train_clips", "validation_clips")


def export_settings(features: dict, record: dict, hashes: dict[str, str]) -> dict:
    """The manifest settings of OUT/features and OUT/models: CACHE/features' with `tuned_sha256` set to these
    backbones' hashes and a `joint` record."""
    joint = {k: record[k] for k in JOINT_RECORD}
    return json.loads(json.dumps({**features, "tuned_sha256": hashes, "joint": joint}))


def check_export(export: Path, features: dict, record: dict, source_hashes: dict[str, str]) -> None:
    """Refuse, before training, an OUT/features of another cache or pass (its shards would be mixed with ours)."""
    existing = ShardStore(Path(export) / "features", "features")
    if existing.shards() and existing.settings.get("joint") != export_settings(features, record, source_hashes)["joint"]:
        raise AvemoError(
            f"{existing.folder}: holds features of another cache or joint pass; choose another export folder or delete it"
        )


def open_export(export: Path | None, settings: dict) -> ShardStore | None:
    """This rank's writer of OUT/features (None without `export`), partial shards of a killed run removed."""
    if export is None:
        return None
    store = ShardStore(Path(export) / "features", "features", writer=distributed.rank())
    store.check_settings(settings)
    store.remove_partial_shards()
    return store


@torch.inference_mode()
def predict_and_export(model: JointModel, inputs: Inputs, embedder: Embedder, store: ShardStore | None) -> np.ndarray:
    """Class probabilities of every clip (gathered on every rank) and, with `store`, the new fc7 shards; the
    shards are shared between ranks."""
    model.eval()
    clips, used, probabilities = inputs.clips, list(model.backbones), {}
    done = store.completed_clips() if store is not None else set()
    started, n_seconds = time.perf_counter(), 0
    for s in progress(distributed.my_share(list(range(len(clips.shards)))), desc="joint predict", unit="shard"):
        shard = clips.shards[s]
        fc7 = {m: _fc7(embedder, inputs, s, m) for m in used}
        probabilities |= _probabilities(model, inputs, s, fc7)
        if store is not None and not set(shard.index["clip_id"]) <= done:
            for m in MODALITIES:
                if m not in used:  # untouched backbone: its features are the cache's, exactly
                    with h5py.File(shard.features, "r") as f:
                        fc7[m] = f[m][()]
            store.add_shard(shard.index, fc7)
        n_seconds += int(shard.index["n_seconds"].sum())
    if distributed.world() > 1:
        parts: list[dict] = [None] * distributed.world()  # type: ignore[list-item]
        torch.distributed.all_gather_object(parts, probabilities)
        probabilities = {c: p for part in parts for c, p in part.items()}
    what = "predict and export" if store is not None else "predict"
    print(f"{distributed.tag()}joint {what}: {n_seconds} s of video in {time.perf_counter() - started:.1f} s")
    return np.stack([probabilities[c] for c in range(len(clips.ids))])


def _fc7(embedder: Embedder, inputs: Inputs, s: int, modality: str) -> np.ndarray:
    """fp16 fc7 of every second of shard `s` from the tuned backbone: from its pool5 rows (layers fc) or its
    images (all)."""
    rows = inputs.shard_inputs(s, modality)
    return embedder.fc7(modality, rows) if inputs.from_images else embedder.fc7_from_pool5(modality, rows)


def _probabilities(model: JointModel, inputs: Inputs, s: int, fc7: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Clip number → class probabilities (eq. 12) of the clips of shard `s`, from its fc7 rows."""
    clips, device, out = inputs.clips, inputs.device, {}
    z = {m: model.zscore(m, torch.from_numpy(v).float().to(device)) for m, v in fc7.items()}
    for batch in torch.from_numpy(np.flatnonzero(clips.shard == s)).split(PREDICT_CLIPS):
        lengths = clips.lengths[batch]
        rows = torch.cat([torch.arange(int(clips.offset[c]), int(clips.offset[c] + clips.lengths[c])) for c in batch])
        logits = head_logits(model.head, {m: v[rows.to(v.device)] for m, v in z.items()}, lengths, clips.has_audio[batch])
        out |= dict(zip(batch.tolist(), torch.softmax(logits, 1).cpu().numpy()))
    return out


def export_extras(cache: Path, export: Path, out: Path, settings: dict, pool5: bool, hashes: dict[str, str]) -> None:
    """OUT/models (the tuned AlexNets: hard links to RUN/joint's where possible, and the models manifest) and
    links to the cache's media (and, layers fc, pool5: the convolutions did not change)."""
    for m in MODALITIES:
        models.place(export / "models", m, out / f"{m}.pt", hashes[m], settings)
    for name in ["media"] + (["pool5"] if pool5 else []):  # pool5 only when the pass read it
        link = export / name
        if not link.exists() and not link.is_symlink():
            link.symlink_to((cache / name).resolve(), target_is_directory=True)
