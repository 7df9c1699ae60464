"""The contract between the stages: HDF5 shards, their manifest and schema (docs/cache-format.md)."""

from avemo.cache.images import ImageBlock, encode_block, read_images
from avemo.cache.ready import check_cache
from avemo.cache.store import NO_LABEL, SCHEMA_VERSION, DamagedShard, ShardStore, cache_lock

__all__ = [
    "ImageBlock",
    "encode_block",
    "read_images",
    "check_cache",
    "NO_LABEL",
    "SCHEMA_VERSION",
    "DamagedShard",
    "ShardStore",
    "cache_lock",
]
