"""The contract between the stages: HDF5 shards, their manifest and schema (docs/cache-format.md)."""

from avemo.cache.store import NO_LABEL, SCHEMA_VERSION, ShardStore, cache_lock

__all__ = ["NO_LABEL", "SCHEMA_VERSION", "ShardStore", "cache_lock"]
