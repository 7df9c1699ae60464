"""`avemo extract`: videos → media cache (decode once) → feature cache (AlexNet fc7 per second).

Cache layout: `CACHE/media/` (key frames, spectrograms), `CACHE/features/` (fc7, fp16), `CACHE/errors.csv`
(clips that could not be used, with the reason). Both phases resume: clips already in completed shards are
skipped, so a killed run picks up where it stopped.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from avemo import distributed
from avemo.atomic import write_json
from avemo.cache import NO_LABEL, ShardStore, cache_lock
from avemo.cache.images import concat_blocks
from avemo.cache.store import read_shard_index
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
        done = media.completed_clips()
        distributed.barrier()  # every rank has seen the same cache before anyone writes
        mine = distributed.my_share([c for c in clips if c.clip_id not in done])
        errors_csv = cache / ("errors.csv" if rank == 0 else f"errors-w{rank}.csv")
        workers = settings.workers or distributed.local_cpus()
        extract_media(mine, media, errors_csv, settings.decode, settings.clips_per_shard, workers)
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
                    features.folder.mkdir(parents=True, exist_ok=True)
                    write_json(features.folder / "validation.json", {**held.record(), "reason": held.reason, "clips": held.clips})
            if media.completed_clips() <= features.completed_clips():
                _say("fine-tune: skipped, the features of every cached clip are already exported")
            else:
                if pool5 is not None:
                    export_pool5(media, pool5, alexnet, settings.batch_size, settings.device, settings.spectrogram_input)
                    distributed.barrier()
                    pool5 = _reload(pool5)
                record = {**base, "finetune": settings.finetune.record(), "finetune_train": train}
                record |= {"validation": held.record()} if held else {}
                tuned = tuned_models(
                    cache, media, pool5, alexnet, record, settings.finetune, settings.device, settings.spectrogram_input, held_out
                )
                _settle(features, "tuned_sha256", {modality: sha for modality, (_, sha) in tuned.items()})
                models = {modality: model for modality, (model, _) in tuned.items()}
        export_features(media, features, models, settings, pool5)
        distributed.barrier()


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
    clips: list[Clip], media: ShardStore, errors_csv: Path, settings: DecodeSettings, clips_per_shard: int, workers: int = 0
) -> None:
    """Phase 1: decode each clip not yet cached into key frames and spectrograms, in parallel processes."""
    media.remove_partial_shards()
    done = media.completed_clips()
    todo = [c for c in clips if c.clip_id not in done]
    started, failed, seconds = time.perf_counter(), 0, 0
    buffer: list[tuple[Clip, EncodedClip]] = []
    with open(errors_csv, "w", newline="") as err_file:
        errors = csv.writer(err_file)
        errors.writerow(["clip_id", "path", "reason"])
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
