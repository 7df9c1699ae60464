"""The contract between the stages: HDF5 shards, their manifest and schema (docs/cache-format.md)."""

from avemo.cache.images import ImageBlock, encode_block, read_images
from avemo.cache.store import NO_LABEL, SCHEMA_VERSION, ShardStore, cache_lock

__all__ = ["ImageBlock", "encode_block", "read_images", "NO_LABEL", "SCHEMA_VERSION", "ShardStore", "cache_lock"]
