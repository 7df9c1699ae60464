"""`avemo extract`: videos → media cache (decode once) → feature cache (AlexNet fc7 per second).

Cache layout: `CACHE/media/` (key frames, spectrograms), `CACHE/features/` (fc7, fp16), `CACHE/errors.csv`
(clips that could not be used, with the reason). Both phases resume: clips already in completed shards are
skipped, so a killed run picks up where it stopped.

Before any decoding a run brings the cache in line with the manifest and checks it (`_survey`, `_upkeep`):
every shard is verified (sha256 and index); a damaged one is re-made (a media shard's clips decoded again, a
pool5 or features shard computed again); label, valence, split and movie changes are written into the
index of the shards holding those clips, without decoding; and whatever would change work already done is
refused before the cache is touched: train clips added, or train labels, splits or movies changed, after
the AlexNets were fine-tuned on them.
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from avemo import distributed
from avemo.atomic import write_json
from avemo.cache import NO_LABEL, DamagedShard, ShardStore, cache_lock
from avemo.cache.images import concat_blocks
from avemo.cache.store import LABEL_FIELDS, open_new, read_shard_index, writable_folder
from avemo.datasets.groups import HeldOut
from avemo.datasets.manifest import Clip
from avemo.errors import AvemoError
from avemo.extract.alexnet import FC7_DIM, SPECTROGRAM_INPUTS, Fc7, batched, build_alexnet, fc7_features, weights_sha256
from avemo.extract.decode import DecodeSettings
from avemo.extract.finetune import (
    MODALITIES,
    FinetuneSettings,
    export_pool5,
    pool5_shard_for,
    read_media_images,
    train_split_record,
    tuned_models,
    validation_split,
)
from avemo.extract.workers import EncodedClip, decode_for_cache, in_order


@dataclass(frozen=True)
class ExtractSettings:
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    weights: str = "imagenet"  # imagenet | none | PATH (see extract.alexnet); paper: fine-tunes an ImageNet AlexNet
    seed: int = 0  # for --weights none
    batch_size: int = 64
    clips_per_shard: int = 64
    workers: int = 0  # decoding processes; 0: one per CPU
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)  # see extract.finetune
    spectrogram_input: str = "resize"  # resize | crop: how spectrograms become 224×224 (see extract.alexnet)
    device: str = "cuda" if torch.cuda.is_available() else "cpu"

    def __post_init__(self) -> None:
        if self.spectrogram_input not in SPECTROGRAM_INPUTS:
            raise AvemoError(f"spectrogram input {self.spectrogram_input!r}: must be one of {', '.join(SPECTROGRAM_INPUTS)}")


def extract(clips: list[Clip], cache: str | Path, settings: ExtractSettings = ExtractSettings()) -> None:
    """Both phases, resumable; under torchrun every rank runs this with its share of the work."""
    cache = Path(cache)
    distributed.init_from_env()
    rank = distributed.rank()
    settings = replace(settings, device=distributed.device_for(settings.device))
    with cache_lock(cache, writer=rank):
        # Check the stores' settings before any work, so a mismatch never costs a decoding pass.
        _refuse_links(cache)
        media = ShardStore(cache / "media", "media", writer=rank)
        media.check_settings(asdict(settings.decode))
        alexnet = build_alexnet(settings.weights, settings.seed)
        base = {
            "weights": settings.weights,
            "weights_sha256": weights_sha256(alexnet),
            "seed": settings.seed,
            "spectrogram_input": settings.spectrogram_input,
            "media": media.settings,
        }
        features = ShardStore(cache / "features", "features", writer=rank)
        # finetune_train, validation and tuned_sha256 are known only after decoding and tuning; checked then.
        later = {k: features.settings[k] for k in ("finetune_train", "validation", "tuned_sha256") if k in features.settings}
        _check_finetune(features, settings.finetune.record())
        _check_validation(features, settings.finetune)
        features.check_settings({**base, "finetune": settings.finetune.record(), **later})
        pool5 = None
        if settings.finetune.mode == "fc":
            pool5 = ShardStore(cache / "pool5", "pool5", writer=rank)
            pool5.check_settings(base)
        workers = settings.workers or distributed.local_cpus()
        # Every rank surveys (so all refuse alike, before any change); rank 0 repairs and relabels every writer's shards.
        stores = {"media": media, **({"pool5": pool5} if pool5 is not None else {}), "features": features}
        upkeep = _survey(clips, cache, stores, settings.finetune)
        distributed.barrier()
        if rank == 0:
            _upkeep(upkeep, stores, settings.decode, workers)
        distributed.barrier()
        media, features, pool5 = _reload(media), _reload(features), pool5 and _reload(pool5)
        done = media.completed_clips()
        distributed.barrier()  # every rank has seen the same cache before anyone writes
        mine = distributed.my_share([c for c in clips if c.clip_id not in done and c.clip_id not in upkeep.not_retried])
        errors_csv = cache / ("errors.csv" if rank == 0 else f"errors-w{rank}.csv")
        carried = list(upkeep.not_retried.values()) if rank == 0 else []
        extract_media(mine, media, errors_csv, settings.decode, settings.clips_per_shard, workers, carried)
        distributed.barrier()  # all media shards are written: everyone now reads the same union
        media, pool5 = _reload(media), pool5 and _reload(pool5)
        models = {modality: alexnet for modality in MODALITIES}
        if settings.finetune.mode != "none":
            # Fine-tuning reads the train split but its validation clips; the features then depend on both.
            held = _validation(media, features, settings.finetune)
            held_out = frozenset(held.clips) if held else frozenset()
            train = train_split_record(media, held_out)
            _settle(features, "finetune_train", train)
            if held is not None:
                _settle(features, "validation", held.record())
                if rank == 0:  # the ids, for the trainer (the settings keep their count and hash)
                    writable_folder(features.folder)
                    write_json(features.folder / "validation.json", {**held.record(), "reason": held.reason, "clips": held.clips})
            recorded = features.settings.get("tuned_sha256") if features.shards() else None
            lost = _lost_models(cache, recorded)
            if media.completed_clips() <= features.completed_clips() and not lost:
                _say("fine-tune: skipped, the features of every cached clip are already exported")
            else:
                if lost:
                    _say(
                        f"fine-tune: {', '.join(lost)} missing or changed: tuning again (deterministic) and checking "
                        "the result against the tuned_sha256 recorded with the features"
                    )
                if pool5 is not None:
                    export_pool5(media, pool5, alexnet, settings.batch_size, settings.device, settings.spectrogram_input)
                    distributed.barrier()
                    pool5 = _reload(pool5)
                record = {**base, "finetune": settings.finetune.record(), "finetune_train": train}
                record |= {"validation": held.record()} if held else {}
                tuned = tuned_models(
                    cache,
                    media,
                    pool5,
                    alexnet,
                    record,
                    settings.finetune,
                    settings.device,
                    settings.spectrogram_input,
                    held_out,
                    expected=recorded,
                )
                _settle(features, "tuned_sha256", {modality: sha for modality, (_, sha) in tuned.items()})
                models = {modality: model for modality, (model, _) in tuned.items()}
        export_features(media, features, models, settings, pool5)
        distributed.barrier()


def _refuse_links(cache: Path) -> None:
    """The cache's own folders are written into: never through a symbolic link planted in a cache."""
    for name in ("media", "pool5", "features", "models"):
        if (cache / name).is_symlink():
            writable_folder(cache / name)  # raises, naming the link


def _lost_models(cache: Path, recorded: dict | None) -> list[str]:
    """The tuned AlexNets the features were made with (`recorded`: tuned_sha256) that are missing from
    CACHE/models or are not those weights any more."""
    lost = []
    for modality, sha in sorted((recorded or {}).items()):
        path = cache / "models" / f"{modality}.pt"
        try:
            intact = path.is_file() and not path.is_symlink() and weights_sha256(build_alexnet(str(path))) == sha
        except AvemoError:
            intact = False
        if not intact:
            lost.append(str(path))
    return lost


@dataclass
class _Upkeep:
    """What a run must do to the existing cache before decoding (found by _survey, done by _upkeep)."""

    damaged: dict[str, list[DamagedShard]]  # per store kind: shards to re-make
    remake: dict[str, list[Clip]]  # media shard file → its clips, to decode again
    relabel: list[tuple[str, dict, dict[str, np.ndarray]]]  # (store kind, shard entry, new index arrays)
    changed: Counter  # index field → clips whose value the manifest changes
    not_retried: dict[str, list[str]]  # train clips that failed before (errors.csv rows), not decoded on a tuned cache


def _index_of(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return read_shard_index(f)


def _wanted(clip: Clip) -> dict:
    """A clip's index values that the manifest sets (LABEL_FIELDS)."""
    return {
        "arousal": int(clip.arousal),
        "valence": NO_LABEL if clip.valence is None else int(clip.valence),
        "split": clip.split,
        "group": clip.meta.get("movie", ""),
    }


def _survey(clips: list[Clip], cache: Path, stores: dict[str, ShardStore], tuning: FinetuneSettings) -> _Upkeep:
    """Check every shard and compare the cache with the manifest; refuse (AvemoError) what cannot be done.
    Reads only: nothing is changed here."""
    by_id = {c.clip_id: c for c in clips}
    damaged, indexes = {}, {}
    for kind, store in stores.items():
        bad = store.damaged()
        for shard in bad:
            if not shard.repairable:
                raise shard
        damaged[kind] = bad
        skip = {shard.entry["file"] for shard in bad}
        indexes[kind] = [(entry, _index_of(path)) for entry, path in store.shards() if entry["file"] not in skip]

    remake = {}
    for shard in damaged["media"]:
        lost = [c for c in shard.entry["clips"] if c not in by_id]
        if lost:
            raise AvemoError(
                f"{shard.path}: {shard.reason}, and its clip{'s' * (len(lost) > 1)} {', '.join(lost[:3])}"
                f"{' …' * (len(lost) > 3)} {'are' if len(lost) > 1 else 'is'} not in this manifest, so cannot be decoded "
                f"again; run with the manifest the cache was made from, or delete {shard.path.parent} to decode every clip again"
            )
        remake[shard.entry["file"]] = [by_id[c] for c in shard.entry["clips"]]

    # label, valence, split and movie changes: the new index arrays of every shard holding a changed clip
    relabel, changed, before = [], Counter(), {}
    for kind, shards in indexes.items():
        for entry, index in shards:
            values = {}
            for name in LABEL_FIELDS:
                old = index[name]
                new = np.array([_wanted(by_id[c])[name] if c in by_id else o for c, o in zip(index["clip_id"], old)])
                new = new.astype(old.dtype) if old.dtype.kind != "U" else new.astype(str)
                if not np.array_equal(old, new):
                    values[name] = new
                    for c, o, n in zip(index["clip_id"], old, new):
                        if o != n:
                            before.setdefault(str(c), {})[name] = (o.item(), n.item())
            if values:
                relabel.append((kind, entry, values))
    for fields in before.values():
        changed.update(fields.keys())

    not_retried = _check_tuned(clips, cache, stores, indexes, damaged, before, tuning)
    return _Upkeep(damaged, remake, relabel, changed, not_retried)


def _check_tuned(
    clips: list[Clip],
    cache: Path,
    stores: dict[str, ShardStore],
    indexes: dict[str, list],
    damaged: dict[str, list[DamagedShard]],
    before: dict[str, dict],
    tuning: FinetuneSettings,
) -> dict[str, list[str]]:
    """On features whose AlexNets were fine-tuned: refuse, before decoding, train clips added and changes that
    would give another train split or validation split than the one tuned on. Returns the errors.csv rows of
    train clips that failed before (they are not tried again: decoded now, they would change the train split)."""
    features, media = stores["features"], stores["media"]
    if tuning.mode == "none" or not features.shards() or "finetune_train" not in features.settings:
        return {}
    folder = features.folder
    way_out = f"or delete {folder} to tune again with them (decoded media and pool5 are reused)"
    failed_before = _previous_errors(cache)
    decoded = media.completed_clips()
    added = [c for c in clips if c.split == "train" and c.clip_id not in decoded and c.clip_id not in failed_before]
    if added:
        many = len(added) > 1
        remove = "them from the manifest or make them test clips" if many else "it from the manifest or make it a test clip"
        names = ", ".join(c.clip_id for c in added[:3]) + (f" and {len(added) - 3} more" if len(added) > 3 else "")
        raise AvemoError(
            f"{folder}: its AlexNets were fine-tuned on the train clips the cache holds; the manifest adds train "
            f"clip{'s' * (len(added) > 1)} {names}, which would change that work (nothing was decoded): remove "
            f"{remove}, {way_out}"
        )
    # the media index as it will be: intact media shards, clips of damaged ones as the other stores know them
    known: dict[str, dict] = {}
    for kind in ("features", "pool5", "media"):
        for _, index in indexes.get(kind, []):
            for i, clip in enumerate(index["clip_id"]):
                known[str(clip)] = {key: index[key][i].item() for key in ("arousal", "n_seconds", "has_audio", "split", "group")}
    wanted = {c.clip_id: _wanted(c) for c in clips}
    order = [c for entry, _ in media.shards() for c in entry["clips"]]
    if any(c not in known for c in order):
        return _not_retried(clips, decoded, failed_before)  # not knowable before decoding: checked after (_settle)
    rows = [{**known[c], **{k: v for k, v in wanted.get(c, {}).items() if k != "valence"}} for c in order]
    index = {key: np.array([r[key] for r in rows]) for key in ("arousal", "n_seconds", "has_audio", "split", "group")}
    index["clip_id"] = np.array(order, dtype=str)
    held = validation_split(index, tuning) if "validation" in features.settings else None
    train = train_split_record(index, frozenset(held.clips) if held else frozenset())
    same = json.loads(json.dumps(train)) == features.settings["finetune_train"]
    if held is not None:
        same &= json.loads(json.dumps(held.record())) == features.settings["validation"]
    if not same:
        tuned_on = {c for c, k in known.items() if k["split"] == "train"}
        culprits = [
            f"{c} ({', '.join(f'{f} {o!r} → {n!r}' for f, (o, n) in sorted(fields.items()) if f != 'valence')})"
            for c, fields in sorted(before.items())
            if (c in tuned_on or wanted.get(c, {}).get("split") == "train") and set(fields) - {"valence"}
        ]
        what = "; ".join(culprits[:3]) + (f" and {len(culprits) - 3} more" if len(culprits) > 3 else "")
        raise AvemoError(
            f"{folder}: its AlexNets were fine-tuned on the train clips (and validation split) as the cache holds them; "
            f"the manifest changes {what or 'the train clips'}, which would change that work (nothing was changed): "
            f"restore those values in the manifest, {way_out}"
        )
    return _not_retried(clips, decoded, failed_before)


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


def _upkeep(upkeep: _Upkeep, stores: dict[str, ShardStore], decode: DecodeSettings, workers: int) -> None:
    """Relabel, and re-make damaged shards, in every writer's manifest (rank 0, before anyone decodes)."""
    owners: dict[tuple[str, int], ShardStore] = {}

    def owner(kind: str, entry: dict) -> tuple[ShardStore, dict]:
        store = stores[kind]
        writer = store.writer_of(entry)
        if (kind, writer) not in owners:
            mine = ShardStore(store.folder, kind, writer=writer)
            mine.manifest["settings"] = mine.manifest["settings"] or store.settings
            owners[kind, writer] = mine
        mine = owners[kind, writer]
        return mine, next(e for e in mine.manifest["shards"] if e["file"] == entry["file"])

    for kind, entry, values in upkeep.relabel:
        store, own = owner(kind, entry)
        store.rewrite_index(own, values)
    if upkeep.changed:
        counts = ", ".join(f"{field} of {n} clip{'s' * (n > 1)}" for field, n in sorted(upkeep.changed.items()))
        kinds = sorted({kind for kind, _, _ in upkeep.relabel}, key=list(stores).index)
        print(f"manifest: {counts} changed; written into the {', '.join(kinds)} shards holding them (nothing decoded again)")
    for shard in upkeep.damaged["media"]:
        items = upkeep.remake[shard.entry["file"]]
        results = list(in_order(decode_for_cache, [(str(c.path), decode) for c in items], workers))
        for clip, decoded in zip(items, results):
            if isinstance(decoded, str):
                raise AvemoError(
                    f"{shard.path}: {shard.reason}, and its clip {clip.clip_id} cannot be decoded again ({decoded}); "
                    f"restore {clip.path}, or delete {shard.path.parent} to decode every clip again"
                )
        store, own = owner("media", shard.entry)
        store.drop(own)
        _write_media_shard(store, list(zip(items, results)))
        print(f"repair: {shard.path}: {shard.reason.split(' (')[0]}; its {len(items)} clips decoded again")
    for kind in ("pool5", "features"):
        for shard in upkeep.damaged.get(kind, []):
            store, own = owner(kind, shard.entry)
            store.drop(own)
            print(f"repair: {shard.path}: {shard.reason.split(' (')[0]}; dropped, its {kind} are computed again below")


def _reload(store: ShardStore) -> ShardStore:
    """The store as it is on disk now, other writers' shards included (this writer's settings kept)."""
    fresh = ShardStore(store.folder, store.kind, writer=store.writer)
    fresh.manifest["settings"] = fresh.manifest["settings"] or store.manifest["settings"]
    return fresh


def _say(line: str) -> None:
    """Summary lines: once, from rank 0, under torchrun."""
    if distributed.rank() == 0:
        print(line)


def _check_finetune(features: ShardStore, record: dict) -> None:
    """Name the fine-tuning option that differs (the generic check would print the whole dict)."""
    stored = features.settings.get("finetune")
    if not features.shards() or stored is None or stored == record:
        return
    for key in ["mode", *sorted((set(stored) | set(record)) - {"mode"})]:
        if stored.get(key) != record.get(key):
            raise AvemoError(
                f"{features.folder}: existing features shards were made with finetune {key}={stored.get(key)!r}, "
                f"not {record.get(key)!r}; use the same settings, another --cache, or delete {features.folder} "
                "to tune again (decoded media and pool5 are reused)"
            )


def _check_validation(features: ShardStore, tuning: FinetuneSettings) -> None:
    """Refuse, before any work, a validation split other than the one the existing features were tuned without."""
    stored = features.settings.get("validation")
    if tuning.mode == "none" or not features.shards() or stored is None:
        return
    if (stored["fraction"], stored["seed"]) != (tuning.validation, tuning.validation_seed):
        raise AvemoError(
            f"{features.folder}: existing features shards were made with --validation {stored['fraction']:g} "
            f"--validation-seed {stored['seed']} (fine-tuning left those {stored['clips']} clips out), not "
            f"--validation {tuning.validation:g} --validation-seed {tuning.validation_seed}; use the same, another "
            f"--cache, or delete {features.folder} to tune again (decoded media and pool5 are reused)"
        )


def _validation(media: ShardStore, features: ShardStore, tuning: FinetuneSettings) -> HeldOut | None:
    """The train clips fine-tuning leaves out for the trainer's epoch selection, printed; None for features
    tuned before validation splits were fixed at extraction (they keep tuning on every train clip)."""
    if features.shards() and "finetune_train" in features.settings and "validation" not in features.settings:
        _say(
            f"validation: none held out of fine-tuning: {features.folder} was tuned on every train clip before "
            f"extraction fixed a validation split (avemo train will note it); delete {features.folder} to tune "
            "again without the validation clips (decoded media and pool5 are reused)"
        )
        return None
    held = validation_split(media, tuning)
    _say(f"validation: {held.describe()}" + (", left out of fine-tuning for the trainer's epoch selection" * bool(held.clips)))
    return held


def _settle(store: ShardStore, key: str, value: dict) -> None:
    """Record a setting known only after some work; refuse when the store's shards were made with another."""
    value = json.loads(json.dumps(value))
    if store.shards() and store.settings.get(key) != value:
        raise AvemoError(
            f"{store.folder}: existing {store.kind} shards were made with {key}={store.settings.get(key)!r}, "
            f"not {value!r}; use the same clips and settings, another --cache, or delete {store.folder} to redo it"
        )
    store.manifest["settings"][key] = value


def extract_media(
    clips: list[Clip],
    media: ShardStore,
    errors_csv: Path,
    settings: DecodeSettings,
    clips_per_shard: int,
    workers: int = 0,
    carried: list[list[str]] = (),
) -> None:
    """Phase 1: decode each clip not yet cached into key frames and spectrograms, in parallel processes.
    `carried`: errors.csv rows of clips not tried again (kept in the new errors.csv)."""
    media.remove_partial_shards()
    done = media.completed_clips()
    todo = [c for c in clips if c.clip_id not in done]
    started, failed, seconds = time.perf_counter(), 0, 0
    buffer: list[tuple[Clip, EncodedClip]] = []
    with open_new(errors_csv) as err_file:
        errors = csv.writer(err_file)
        errors.writerow(["clip_id", "path", "reason"])
        errors.writerows(carried)
        results = in_order(decode_for_cache, [(str(c.path), settings) for c in todo], workers)
        for clip, decoded in zip(
            todo, tqdm(results, total=len(todo), desc="decode", unit="clip", disable=distributed.rank() > 0)
        ):
            if isinstance(decoded, str):
                errors.writerow([clip.clip_id, str(clip.path), decoded])
                err_file.flush()
                failed += 1
                continue
            buffer.append((clip, decoded))
            seconds += decoded.n_seconds
            if len(buffer) == clips_per_shard:
                _write_media_shard(media, buffer)
                buffer = []
        if buffer:
            _write_media_shard(media, buffer)
    wall = time.perf_counter() - started
    note = f", see {errors_csv}" if failed else ""
    if carried:
        note += (
            f"; {len(carried)} train clip{'s' * (len(carried) > 1)} that failed before not tried again (the AlexNets "
            f"were tuned without {'them' if len(carried) > 1 else 'it'}; delete {media.folder.parent / 'features'} to "
            "tune again)"
        )
    print(
        f"{distributed.tag()}decode: {len(todo) - failed} clips done, {len(done)} already cached, {failed} failed{note}; "
        f"{seconds} s of video in {wall:.1f} s"
    )


def export_features(
    media: ShardStore,
    features: ShardStore,
    models: dict[str, torch.nn.Module],
    settings: ExtractSettings,
    pool5: ShardStore | None = None,
) -> None:
    """Phase 2: fc7 (post-ReLU) of every key frame and spectrogram, one feature shard per media shard.

    `models` maps visual/audio to its AlexNet. With a `pool5` store (fine-tuning mode fc, where the
    convolutions are unchanged), fc7 = fc6 → fc7 of the cached pool5, so no image goes through the
    convolutions twice; otherwise a full forward of the media images."""
    features.remove_partial_shards()
    done = features.completed_clips()
    media.verify()  # every shard checked (sha256, index) before its contents are used
    nets = {
        m: Fc7(models[m], settings.spectrogram_input).to(settings.device, memory_format=torch.channels_last).eval()
        for m in MODALITIES
    }
    started, n_clips, n_seconds = time.perf_counter(), 0, 0
    pending = [(entry, path) for entry, path in distributed.my_share(media.shards()) if not set(entry["clips"]) <= done]
    total = sum(len(entry["clips"]) for entry, _ in pending)
    with tqdm(total=total, desc="fc7", unit="clip", disable=distributed.rank() > 0) as bar:
        for entry, path in pending:
            out = {}
            if pool5 is not None:
                with h5py.File(pool5_shard_for(pool5, entry["clips"]), "r") as f:
                    index = read_shard_index(f)
                    for m, net in nets.items():
                        out[m] = batched(
                            lambda x, net=net: net.fc6_fc7(x.float()), f[m][()], FC7_DIM, settings.batch_size, settings.device
                        )
            else:
                with h5py.File(path, "r") as f:
                    index = read_shard_index(f)
                for m, net in nets.items():
                    out[m] = fc7_features(net, read_media_images(path, MODALITIES[m]), settings.batch_size, settings.device)
            features.add_shard(index, out)
            n_clips += len(entry["clips"])
            n_seconds += int(index["n_seconds"].sum())
            bar.update(len(entry["clips"]))
    wall = time.perf_counter() - started
    print(f"{distributed.tag()}fc7: {n_clips} clips done, {len(done)} already cached; {n_seconds} s of video in {wall:.1f} s")


def _write_media_shard(media: ShardStore, items: list[tuple[Clip, EncodedClip]]) -> None:
    counts = np.array([m.n_seconds for _, m in items], np.int64)
    index = {
        "clip_id": np.array([c.clip_id for c, _ in items], dtype=str),
        "offset": np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
        "n_seconds": counts,
        "arousal": np.array([c.arousal for c, _ in items], np.int8),
        "valence": np.array([NO_LABEL if c.valence is None else c.valence for c, _ in items], np.int8),
        "split": np.array([c.split for c, _ in items], dtype=str),
        "has_audio": np.array([m.has_audio for _, m in items], np.uint8),
        "group": np.array([c.meta.get("movie", "") for c, _ in items], dtype=str),
    }
    seconds = {
        "key_frames": concat_blocks([m.key_frames for _, m in items]),
        "spectrograms": concat_blocks([m.spectrograms for _, m in items]),
        "key_frame_index": np.concatenate([m.key_frame_index for _, m in items]),
        "key_frame_time": np.concatenate([m.key_frame_time for _, m in items]),
    }
    media.add_shard(index, seconds)
