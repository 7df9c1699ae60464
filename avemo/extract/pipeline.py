"""`avemo extract`: videos → media cache (decode once) → feature cache (AlexNet fc7 per second).

Cache layout: `CACHE/media/` (key frames, spectrograms), `CACHE/pool5/` (fine-tuning mode fc),
`CACHE/models/` (the tuned AlexNets), `CACHE/features/` (fc7, fp16), `CACHE/errors.csv` (clips that could
not be used, with the reason). Both phases resume: clips already in completed shards are skipped, so a
killed run picks up where it stopped.

Steps of `extract`: open the stores and check their settings (`_open_stores`); bring the cache in line with
the manifest (`survey.survey` finds, `_upkeep` does); decode new clips (`extract_media`); fine-tune the
AlexNets on the train split (`_export_alexnets`, extract.finetune); export fc7 with the one Embedder
(`export_features`, extract.embed), which `avemo predict` and the joint pass use too.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np
import torch

from avemo import distributed
from avemo.approaches import MODALITIES, UNKNOWN_LABEL, default_device
from avemo.atomic import write_json
from avemo.cache import ShardStore, cache_lock, models
from avemo.cache.images import concat_blocks
from avemo.cache.store import WIDTH, open_new, read_shard_index, writable_folder
from avemo.datasets.groups import HeldOut
from avemo.datasets.manifest import Clip
from avemo.errors import AvemoError
from avemo.extract.alexnet import (
    PRECISION,
    SPECTROGRAM_INPUTS,
    build_alexnet,
    check_precision,
    fc7_width,
    pool5_width,
    weights_sha256,
)
from avemo.extract.decode import DecodeSettings, media_settings
from avemo.extract.embed import Embedder
from avemo.extract.finetune import (
    FinetuneSettings,
    export_pool5,
    pool5_shard_for,
    read_media_images,
    train_split_record,
    tuned_models,
    validation_split,
)
from avemo.extract.survey import Upkeep, survey
from avemo.extract.workers import EncodedClip, decode_for_cache, in_order
from avemo.log import progress


@dataclass(frozen=True)
class ExtractSettings:
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    # imagenet | none | tiny | PATH (see extract.alexnet); paper: fine-tunes an ImageNet AlexNet
    weights: str = "imagenet"
    seed: int = 0  # for --weights none and tiny
    batch_size: int = 64
    clips_per_shard: int = 64
    workers: int = 0  # decoding processes; 0: one per CPU
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)  # see extract.finetune
    spectrogram_input: str = "resize"  # resize | crop: how spectrograms become 224×224 (see extract.alexnet)
    device: str = field(default_factory=default_device)

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
        stores, base, alexnet = _open_stores(cache, settings, rank)
        workers = settings.workers or distributed.local_cpus()
        # Every rank surveys (so all refuse alike, before any change); rank 0 repairs and relabels every writer's shards.
        upkeep = survey(clips, cache, stores, settings.finetune)
        distributed.barrier()
        if rank == 0:
            _upkeep(upkeep, stores, settings.decode, workers)
        distributed.barrier()
        stores = {kind: _reload(store) for kind, store in stores.items()}
        _decode_new(clips, cache, stores["media"], upkeep, settings, workers)
        distributed.barrier()  # all media shards are written: everyone now reads the same union
        stores |= {kind: _reload(stores[kind]) for kind in ("media", "pool5") if kind in stores}
        models = _export_alexnets(cache, stores, alexnet, base, settings)
        embedder = Embedder(models, settings.spectrogram_input, settings.finetune.mode, settings.batch_size, settings.device)
        export_features(stores["media"], stores["features"], embedder, stores.get("pool5"))
        distributed.barrier()


def _open_stores(cache: Path, settings: ExtractSettings, rank: int) -> tuple[dict[str, ShardStore], dict, torch.nn.Module]:
    """The media, pool5 (fine-tuning mode fc) and features stores of this writer, their settings checked
    against the run's; the settings every store shares (`base`); the base AlexNet."""
    media = ShardStore(cache / "media", "media", writer=rank)
    media.check_settings(media_settings(media.settings, settings.decode, media.folder))  # one decoder per cache
    alexnet = build_alexnet(settings.weights, settings.seed)
    base = {
        "weights": settings.weights,
        "weights_sha256": weights_sha256(alexnet),
        "seed": settings.seed,
        "spectrogram_input": settings.spectrogram_input,
        "alexnet_precision": PRECISION,  # fp16-valued AlexNets (extract.alexnet.build_alexnet)
        "media": media.settings,
    }
    features = ShardStore(cache / "features", "features", writer=rank)
    if features.settings:  # features of unrounded AlexNets: one line, not a settings mismatch
        check_precision(features.settings, features.folder)
    # finetune_train, validation and tuned_sha256 are known only after decoding and tuning; checked then.
    later = {k: features.settings[k] for k in ("finetune_train", "validation", "tuned_sha256") if k in features.settings}
    _check_finetune(features, settings.finetune.record())
    _check_validation(features, settings.finetune)
    width = _width_setting(features, fc7_width(alexnet))
    features.check_settings({**base, **width, "finetune": settings.finetune.record(), **later})
    stores = {"media": media}
    if settings.finetune.mode == "fc":
        pool5 = ShardStore(cache / "pool5", "pool5", writer=rank)
        if pool5.settings:
            check_precision(pool5.settings, pool5.folder)
        pool5.check_settings({**base, **_width_setting(pool5, pool5_width(alexnet))})
        stores["pool5"] = pool5
    stores["features"] = features
    return stores, base, alexnet


def _width_setting(store: ShardStore, width: int) -> dict:
    """The per-second width a pool5 or features store records (`width`: readers check every shard against
    it); a store made before widths were recorded (AlexNet's, implied) keeps its settings without it."""
    stored = store.settings
    if stored and "width" not in stored and width == WIDTH[store.kind]:
        return {}
    return {"width": width}


def _decode_new(
    clips: list[Clip], cache: Path, media: ShardStore, upkeep: Upkeep, settings: ExtractSettings, workers: int
) -> None:
    """Phase 1 for this rank's share of the clips not yet decoded (nor failed before on a tuned cache)."""
    rank = distributed.rank()
    done = media.completed_clips()
    distributed.barrier()  # every rank has seen the same cache before anyone writes
    mine = distributed.my_share([c for c in clips if c.clip_id not in done and c.clip_id not in upkeep.not_retried])
    errors_csv = cache / ("errors.csv" if rank == 0 else f"errors-w{rank}.csv")
    carried = list(upkeep.not_retried.values()) if rank == 0 else []
    extract_media(mine, media, errors_csv, settings.decode, settings.clips_per_shard, workers, carried)


def _export_alexnets(
    cache: Path, stores: dict[str, ShardStore], alexnet: torch.nn.Module, base: dict, settings: ExtractSettings
) -> dict[str, torch.nn.Module]:
    """Per modality, the AlexNet that exports the features: the base one (`--finetune none`, or every
    feature already exported), else tuned on the train split (reused from CACHE/models when it was tuned
    with the same settings and clips)."""
    base_models = {modality: alexnet for modality in MODALITIES}
    if settings.finetune.mode == "none":
        return base_models
    media, features = stores["media"], stores["features"]
    held, train = _tuning_split(media, features, settings.finetune)
    recorded = features.settings.get("tuned_sha256") if features.shards() else None
    lost = _lost_models(cache, recorded)
    if media.completed_clips() <= features.completed_clips() and not lost:
        _say("fine-tune: skipped, the features of every cached clip are already exported")
        return base_models
    if lost:
        _say(
            f"fine-tune: {', '.join(lost)} missing or changed: tuning again (deterministic) and checking "
            "the result against the tuned_sha256 recorded with the features"
        )
    if "pool5" in stores:
        export_pool5(media, stores["pool5"], alexnet, settings.batch_size, settings.device, settings.spectrogram_input)
        distributed.barrier()
        stores["pool5"] = _reload(stores["pool5"])
    record = {**base, "finetune": settings.finetune.record(), "finetune_train": train}
    record |= {"validation": held.record()} if held else {}
    held_out = frozenset(held.clips) if held else frozenset()
    tuned = tuned_models(
        cache,
        media,
        stores.get("pool5"),
        alexnet,
        record,
        settings.finetune,
        settings.device,
        settings.spectrogram_input,
        held_out,
        expected=recorded,
    )
    _settle(features, "tuned_sha256", {modality: sha for modality, (_, sha) in tuned.items()})
    return {modality: model for modality, (model, _) in tuned.items()}


def _tuning_split(media: ShardStore, features: ShardStore, tuning: FinetuneSettings) -> tuple[HeldOut | None, dict]:
    """The validation clips fine-tuning leaves out and the record of the train split it tunes on, both
    settled in the features settings (refused when existing features were tuned on others)."""
    # Fine-tuning reads the train split but its validation clips; the features then depend on both.
    held = _validation(media, features, tuning)
    train = train_split_record(media, frozenset(held.clips) if held else frozenset())
    _settle(features, "finetune_train", train)
    if held is not None:
        _settle(features, "validation", held.record())
        if distributed.rank() == 0:  # the ids, for the trainer (the settings keep their count and hash)
            writable_folder(features.folder)
            write_json(features.folder / "validation.json", {**held.record(), "reason": held.reason, "clips": held.clips})
    return held, train


def _refuse_links(cache: Path) -> None:
    """The cache's own folders are written into: never through a symbolic link planted in a cache."""
    for name in ("media", "pool5", "features", "models"):
        if (cache / name).is_symlink():
            writable_folder(cache / name)  # raises, naming the link


def _lost_models(cache: Path, recorded: dict | None) -> list[str]:
    """The tuned AlexNets the features were made with (`recorded`: tuned_sha256) that are missing from
    CACHE/models or are not those weights any more."""
    folder = cache / "models"
    return [str(folder / f"{m}.pt") for m, sha in sorted((recorded or {}).items()) if models.load(folder, m, sha) is None]


def _upkeep(upkeep: Upkeep, stores: dict[str, ShardStore], decode: DecodeSettings, workers: int) -> None:
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
        for clip, decoded in zip(todo, progress(results, total=len(todo), desc="decode", unit="clip")):
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


def export_features(media: ShardStore, features: ShardStore, embedder: Embedder, pool5: ShardStore | None = None) -> None:
    """Phase 2: fc7 (post-ReLU) of every key frame and spectrogram, one feature shard per media shard, by
    `embedder` (its AlexNet per modality). With a `pool5` store (fine-tuning mode fc, where the convolutions
    are unchanged), fc7 = fc6 → fc7 of the cached pool5, so no image goes through the convolutions twice;
    otherwise from the media images."""
    features.remove_partial_shards()
    done = features.completed_clips()
    media.verify()  # every shard checked (sha256, index) before its contents are used
    started, n_clips, n_seconds = time.perf_counter(), 0, 0
    pending = [(entry, path) for entry, path in distributed.my_share(media.shards()) if not set(entry["clips"]) <= done]
    total = sum(len(entry["clips"]) for entry, _ in pending)
    with progress(total=total, desc="fc7", unit="clip") as bar:
        for entry, path in pending:
            index, out = _shard_fc7(entry, path, embedder, pool5)
            features.add_shard(index, out)
            n_clips += len(entry["clips"])
            n_seconds += int(index["n_seconds"].sum())
            bar.update(len(entry["clips"]))
    wall = time.perf_counter() - started
    print(f"{distributed.tag()}fc7: {n_clips} clips done, {len(done)} already cached; {n_seconds} s of video in {wall:.1f} s")


def _shard_fc7(
    entry: dict, path: Path, embedder: Embedder, pool5: ShardStore | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The index and fc7 per modality of one media shard (from its pool5 shard when there is a pool5 store)."""
    if pool5 is not None:
        with h5py.File(pool5_shard_for(pool5, entry["clips"]), "r") as f:
            return read_shard_index(f), {m: embedder.fc7_from_pool5(m, f[m][()]) for m in MODALITIES}
    with h5py.File(path, "r") as f:
        index = read_shard_index(f)
    return index, {m: embedder.fc7(m, read_media_images(path, name)) for m, name in MODALITIES.items()}


def _write_media_shard(media: ShardStore, items: list[tuple[Clip, EncodedClip]]) -> None:
    counts = np.array([m.n_seconds for _, m in items], np.int64)
    index = {
        "clip_id": np.array([c.clip_id for c, _ in items], dtype=str),
        "offset": np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
        "n_seconds": counts,
        "arousal": np.array([c.arousal for c, _ in items], np.int8),
        "valence": np.array([UNKNOWN_LABEL if c.valence is None else c.valence for c, _ in items], np.int8),
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
