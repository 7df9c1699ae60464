"""Is a cache ready to be read? One check for every reader of a cache (train, predict, the joint pass).

A cache is refused, in one line naming what is wrong and the command that fixes it, when an extract is
writing it now (it holds `.lock`), or when extraction has not finished: no features, features missing for
clips the media store holds (an export killed or still running), or a fine-tuned AlexNet missing from
`models/`. With `verify`, the shards of those stores are checked too (sha256 and index: see store.py)
before the caller opens them itself.
"""

from __future__ import annotations

from pathlib import Path

from avemo.cache.store import MANIFEST, ShardStore, busy_lock
from avemo.errors import AvemoError

STORES = ("media", "pool5", "features")


def finish_command(cache: Path) -> str:
    return f"`avemo extract --cache {cache}` with the manifest and options the cache was made with"


def check_cache(cache: str | Path, reader: str = "train", verify: tuple[str, ...] = ()) -> None:
    """Raise AvemoError unless `cache` is finished and not being written; `reader` names the command refused."""
    cache = Path(cache)
    finish = finish_command(cache)
    held = busy_lock(cache)
    if held:
        raise AvemoError(
            f"{cache}: an `avemo extract` is writing this cache now (it holds {cache / held}); {reader} reads it only "
            "once extraction has finished: wait for it to end, then run again"
        )
    features = ShardStore(cache / "features", "features")
    if not features.shards():
        raise AvemoError(
            f"{cache / 'features'}: no features shards here; run `avemo extract` first (if it ran, it has not finished: "
            f"run {finish})"
        )
    if _has_store(cache / "media"):
        decoded = ShardStore(cache / "media", "media").completed_clips()
        missing = sorted(decoded - features.completed_clips())
        if missing:
            features.verify()  # a manifest edited after the export (fewer clips listed) is named as such
            raise AvemoError(
                f"{cache}: extraction has not finished: the features of {len(missing)} of the {len(decoded)} decoded clips "
                f"are missing (e.g. {missing[0]}); run {finish} to finish it"
            )
    for modality in sorted(features.settings.get("tuned_sha256") or {}):
        path = cache / "models" / f"{modality}.pt"
        if not path.is_file():
            raise AvemoError(
                f"{path}: the fine-tuned AlexNet is missing (the {modality} one that made the features); run {finish}: "
                "it tunes it again and checks it against the features"
            )
    for kind in verify:
        if kind == "features" or _has_store(cache / kind):
            ShardStore(cache / kind, kind).verify()


def _has_store(folder: Path) -> bool:
    return (folder / MANIFEST).is_file() or any(folder.glob("manifest-w*.json"))
