"""What a run of `avemo extract` must do to an existing cache before decoding, found without changing it.

`survey` checks every shard (sha256 and index) and compares the cache with the manifest: damaged shards to
re-make (a media shard's clips decoded again, a pool5 or features shard computed again), label, valence,
split and movie changes to write into the index of the shards holding those clips (without decoding), and
what would change work already done, refused (AvemoError) before the cache is touched: train clips added,
or train labels, splits or movies changed, after the AlexNets were fine-tuned on them. The pipeline then
does the upkeep (`pipeline._upkeep`, rank 0).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from avemo.approaches import UNKNOWN_LABEL
from avemo.cache import DamagedShard, ShardStore
from avemo.cache.store import LABEL_FIELDS, read_shard_index
from avemo.datasets.manifest import Clip
from avemo.errors import AvemoError
from avemo.extract.finetune import FinetuneSettings, train_split_record, validation_split

KNOWN = ("arousal", "n_seconds", "has_audio", "split", "group")  # what fine-tuning's train split depends on


@dataclass
class Upkeep:
    """What a run must do to the existing cache before decoding (found by survey, done by pipeline._upkeep)."""

    damaged: dict[str, list[DamagedShard]]  # per store kind: shards to re-make
    remake: dict[str, list[Clip]]  # media shard file → its clips, to decode again
    relabel: list[tuple[str, dict, dict[str, np.ndarray]]]  # (store kind, shard entry, new index arrays)
    changed: Counter  # index field → clips whose value the manifest changes
    not_retried: dict[str, list[str]]  # train clips that failed before (errors.csv rows), not decoded on a tuned cache


def survey(clips: list[Clip], cache: Path, stores: dict[str, ShardStore], tuning: FinetuneSettings) -> Upkeep:
    """Check every shard and compare the cache with the manifest; refuse (AvemoError) what cannot be done.
    Reads only: nothing is changed here."""
    by_id = {c.clip_id: c for c in clips}
    damaged, indexes = _check_shards(stores)
    remake = _remake(damaged["media"], by_id)
    relabel, before = _relabel(indexes, by_id)
    changed = Counter()
    for fields in before.values():
        changed.update(fields.keys())
    not_retried = _check_tuned(clips, cache, stores, indexes, before, tuning)
    return Upkeep(damaged, remake, relabel, changed, not_retried)


def _check_shards(stores: dict[str, ShardStore]) -> tuple[dict[str, list[DamagedShard]], dict[str, list]]:
    """Per store kind, its damaged shards (refused unless `extract` can re-make them) and the (entry, index)
    of the intact ones."""
    damaged, indexes = {}, {}
    for kind, store in stores.items():
        bad = store.damaged()
        for shard in bad:
            if not shard.repairable:
                raise shard
        damaged[kind] = bad
        skip = {shard.entry["file"] for shard in bad}
        indexes[kind] = [(entry, _index_of(path)) for entry, path in store.shards() if entry["file"] not in skip]
    return damaged, indexes


def _index_of(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return read_shard_index(f)


def _remake(damaged: list[DamagedShard], by_id: dict[str, Clip]) -> dict[str, list[Clip]]:
    """Media shard file → the clips to decode again into it; refused when one is not in the manifest."""
    remake = {}
    for shard in damaged:
        lost = [c for c in shard.entry["clips"] if c not in by_id]
        if lost:
            raise AvemoError(
                f"{shard.path}: {shard.reason}, and its clip{'s' * (len(lost) > 1)} {', '.join(lost[:3])}"
                f"{' …' * (len(lost) > 3)} {'are' if len(lost) > 1 else 'is'} not in this manifest, so cannot be decoded "
                f"again; run with the manifest the cache was made from, or delete {shard.path.parent} to decode every clip again"
            )
        remake[shard.entry["file"]] = [by_id[c] for c in shard.entry["clips"]]
    return remake


def wanted(clip: Clip) -> dict:
    """A clip's index values that the manifest sets (LABEL_FIELDS)."""
    return {
        "arousal": int(clip.arousal),
        "valence": UNKNOWN_LABEL if clip.valence is None else int(clip.valence),
        "split": clip.split,
        "group": clip.meta.get("movie", ""),
    }


def _relabel(indexes: dict[str, list], by_id: dict[str, Clip]) -> tuple[list, dict[str, dict]]:
    """Label, valence, split and movie changes: the new index arrays of every shard holding a changed clip,
    and per changed clip, field → (old, new)."""
    relabel, before = [], {}
    for kind, shards in indexes.items():
        for entry, index in shards:
            values = {}
            for name in LABEL_FIELDS:
                old = index[name]
                new = np.array([wanted(by_id[c])[name] if c in by_id else o for c, o in zip(index["clip_id"], old)])
                new = new.astype(old.dtype) if old.dtype.kind != "U" else new.astype(str)
                if np.array_equal(old, new):
                    continue
                values[name] = new
                for c, o, n in zip(index["clip_id"], old, new):
                    if o != n:
                        before.setdefault(str(c), {})[name] = (o.item(), n.item())
            if values:
                relabel.append((kind, entry, values))
    return relabel, before


def _check_tuned(
    clips: list[Clip],
    cache: Path,
    stores: dict[str, ShardStore],
    indexes: dict[str, list],
    before: dict[str, dict],
    tuning: FinetuneSettings,
) -> dict[str, list[str]]:
    """On features whose AlexNets were fine-tuned: refuse, before decoding, train clips added and changes that
    would give another train split or validation split than the one tuned on. Returns the errors.csv rows of
    train clips that failed before (they are not tried again: decoded now, they would change the train split)."""
    features, media = stores["features"], stores["media"]
    if tuning.mode == "none" or not features.shards() or "finetune_train" not in features.settings:
        return {}
    failed_before = _previous_errors(cache)
    decoded = media.completed_clips()
    _refuse_added(clips, features, decoded, failed_before)
    # the media index as it will be: intact media shards, clips of damaged ones as the other stores know them
    known: dict[str, dict] = {}
    for kind in ("features", "pool5", "media"):
        for _, index in indexes.get(kind, []):
            for i, clip in enumerate(index["clip_id"]):
                known[str(clip)] = {key: index[key][i].item() for key in KNOWN}
    order = [c for entry, _ in media.shards() for c in entry["clips"]]
    if all(c in known for c in order):  # else not knowable before decoding: checked after (pipeline._settle)
        _refuse_retuning(clips, features, known, order, before, tuning)
    return _not_retried(clips, decoded, failed_before)


def _refuse_added(clips: list[Clip], features: ShardStore, decoded: set[str], failed_before: dict) -> None:
    """Train clips not in the cache (and not failed before) would change the split the AlexNets were tuned on."""
    added = [c for c in clips if c.split == "train" and c.clip_id not in decoded and c.clip_id not in failed_before]
    if not added:
        return
    many = len(added) > 1
    remove = "them from the manifest or make them test clips" if many else "it from the manifest or make it a test clip"
    names = ", ".join(c.clip_id for c in added[:3]) + (f" and {len(added) - 3} more" if len(added) > 3 else "")
    raise AvemoError(
        f"{features.folder}: its AlexNets were fine-tuned on the train clips the cache holds; the manifest adds train "
        f"clip{'s' * many} {names}, which would change that work (nothing was decoded): remove "
        f"{remove}, {_way_out(features)}"
    )


def _way_out(features: ShardStore) -> str:
    return f"or delete {features.folder} to tune again with them (decoded media and pool5 are reused)"


def _refuse_retuning(
    clips: list[Clip], features: ShardStore, known: dict, order: list[str], before: dict, tuning: FinetuneSettings
) -> None:
    """Refuse manifest changes that give another train split (or validation split) than the one recorded."""
    wanted_by_id = {c.clip_id: wanted(c) for c in clips}
    rows = [{**known[c], **{k: v for k, v in wanted_by_id.get(c, {}).items() if k != "valence"}} for c in order]
    index = {key: np.array([r[key] for r in rows]) for key in KNOWN}
    index["clip_id"] = np.array(order, dtype=str)
    held = validation_split(index, tuning) if "validation" in features.settings else None
    train = train_split_record(index, frozenset(held.clips) if held else frozenset())
    same = json.loads(json.dumps(train)) == features.settings["finetune_train"]
    if held is not None:
        same &= json.loads(json.dumps(held.record())) == features.settings["validation"]
    if same:
        return
    tuned_on = {c for c, k in known.items() if k["split"] == "train"}
    culprits = [
        f"{c} ({', '.join(f'{f} {o!r} → {n!r}' for f, (o, n) in sorted(fields.items()) if f != 'valence')})"
        for c, fields in sorted(before.items())
        if (c in tuned_on or wanted_by_id.get(c, {}).get("split") == "train") and set(fields) - {"valence"}
    ]
    what = "; ".join(culprits[:3]) + (f" and {len(culprits) - 3} more" if len(culprits) > 3 else "")
    raise AvemoError(
        f"{features.folder}: its AlexNets were fine-tuned on the train clips (and validation split) as the cache holds "
        f"them; the manifest changes {what or 'the train clips'}, which would change that work (nothing was changed): "
        f"restore those values in the manifest, {_way_out(features)}"
    )


def _not_retried(clips: list[Clip], decoded: set[str], failed_before: dict[str, list[str]]) -> dict[str, list[str]]:
    return {
        c.clip_id: failed_before[c.clip_id]
        for c in clips
        if c.split == "train" and c.clip_id not in decoded and c.clip_id in failed_before
    }


def _previous_errors(cache: Path) -> dict[str, list[str]]:
    """clip id → its row in the last run's errors.csv (errors-wN.csv under torchrun)."""
    rows = {}
    for path in sorted(cache.glob("errors*.csv")):
        try:
            with open(path, newline="") as handle:
                for row in csv.reader(handle):
                    if len(row) >= 3 and row[:3] != ["clip_id", "path", "reason"]:
                        rows[row[0]] = row[:3]
        except (OSError, csv.Error, UnicodeDecodeError):
            continue
    return rows
