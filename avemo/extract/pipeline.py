"""`avemo extract`: videos → media cache (decode once) → feature cache (AlexNet fc7 per second).

Cache layout: `CACHE/media/` (key frames, spectrograms), `CACHE/features/` (fc7, fp16), `CACHE/errors.csv`
(clips that could not be used, with the reason). Both phases resume: clips already in completed shards are
skipped, so a killed run picks up where it stopped.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from avemo.cache import NO_LABEL, ShardStore, cache_lock
from avemo.cache.store import read_shard_index
from avemo.datasets.manifest import Clip
from avemo.extract.alexnet import Fc7, build_alexnet, fc7_features, weights_sha256
from avemo.extract.decode import ClipError, ClipMedia, DecodeSettings, decode_clip


@dataclass(frozen=True)
class ExtractSettings:
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    weights: str = "none"  # imagenet | none | PATH (see extract.alexnet)
    seed: int = 0  # for --weights none
    batch_size: int = 64
    clips_per_shard: int = 64
    device: str = "cuda" if torch.cuda.is_available() else "cpu"


def extract(clips: list[Clip], cache: str | Path, settings: ExtractSettings = ExtractSettings()) -> None:
    cache = Path(cache)
    with cache_lock(cache):
        # Check both stores' settings before any work, so a mismatch never costs a decoding pass.
        media = ShardStore(cache / "media", "media")
        media.check_settings(asdict(settings.decode))
        alexnet = build_alexnet(settings.weights, settings.seed)
        features = ShardStore(cache / "features", "features")
        features.check_settings(
            {
                "weights": settings.weights,
                "weights_sha256": weights_sha256(alexnet),
                "seed": settings.seed,
                "media": media.settings,
            }
        )
        extract_media(clips, media, cache / "errors.csv", settings.decode, settings.clips_per_shard)
        export_features(media, features, alexnet, settings)


def extract_media(clips: list[Clip], media: ShardStore, errors_csv: Path, settings: DecodeSettings, clips_per_shard: int) -> None:
    """Phase 1: decode each clip not yet cached into key frames and spectrograms."""
    media.remove_partial_shards()
    done = media.completed_clips()
    todo = [c for c in clips if c.clip_id not in done]
    started, failed, seconds = time.perf_counter(), 0, 0
    buffer: list[tuple[Clip, ClipMedia]] = []
    with open(errors_csv, "w", newline="") as err_file:
        errors = csv.writer(err_file)
        errors.writerow(["clip_id", "path", "reason"])
        for clip in tqdm(todo, desc="decode", unit="clip"):
            try:
                decoded = decode_clip(str(clip.path), settings)
            except ClipError as e:
                errors.writerow([clip.clip_id, str(clip.path), str(e)])
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
        f"decode: {len(todo) - failed} clips done, {len(done)} already cached, {failed} failed{note}; "
        f"{seconds} s of video in {wall:.1f} s"
    )


def export_features(media: ShardStore, features: ShardStore, alexnet: torch.nn.Module, settings: ExtractSettings) -> None:
    """Phase 2: fc7 of every key frame and spectrogram, one feature shard per media shard."""
    features.remove_partial_shards()
    done = features.completed_clips()
    model = Fc7(alexnet).to(settings.device, memory_format=torch.channels_last)
    started, n_clips, n_seconds = time.perf_counter(), 0, 0
    pending = [
        (entry, path) for entry, path in zip(media.manifest["shards"], media.shard_paths()) if not set(entry["clips"]) <= done
    ]
    total = sum(len(entry["clips"]) for entry, _ in pending)
    with tqdm(total=total, desc="fc7", unit="clip") as bar:
        for entry, path in pending:
            with h5py.File(path, "r") as f:
                index = read_shard_index(f)
                frames, spectrograms = f["key_frames"][()], f["spectrograms"][()]
            visual = fc7_features(model, frames, settings.batch_size, settings.device)
            audio = fc7_features(model, spectrograms, settings.batch_size, settings.device)
            features.add_shard(index, {"visual": visual, "audio": audio})
            n_clips += len(entry["clips"])
            n_seconds += len(frames)
            bar.update(len(entry["clips"]))
    wall = time.perf_counter() - started
    print(f"fc7: {n_clips} clips done, {len(done)} already cached; {n_seconds} s of video in {wall:.1f} s")


def _write_media_shard(media: ShardStore, items: list[tuple[Clip, ClipMedia]]) -> None:
    counts = np.array([m.n_seconds for _, m in items], np.int64)
    index = {
        "clip_id": np.array([c.clip_id for c, _ in items], dtype=str),
        "offset": np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
        "n_seconds": counts,
        "arousal": np.array([c.arousal for c, _ in items], np.int8),
        "valence": np.array([NO_LABEL if c.valence is None else c.valence for c, _ in items], np.int8),
        "split": np.array([c.split for c, _ in items], dtype=str),
        "has_audio": np.array([m.has_audio for _, m in items], np.uint8),
    }
    seconds = {
        "key_frames": np.concatenate([m.key_frames for _, m in items]),
        "spectrograms": np.concatenate([m.spectrograms for _, m in items]),
        "key_frame_index": np.concatenate([m.key_frame_index for _, m in items]),
        "key_frame_time": np.concatenate([m.key_frame_time for _, m in items]),
    }
    media.add_shard(index, seconds, compression={"key_frames": "lzf", "spectrograms": "lzf"})
