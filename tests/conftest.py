"""Shared fixtures: a tiny sample corpus of real mp4 files, and how to compare caches whose shard order differs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> Path:
    """18 clips of the built-in sample corpus (each of the nine level pairs twice); returns clips.csv."""
    from avemo.datasets.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("sample"), clips=18, seed=7)


def _seconds_by_clip(store, name: str) -> np.ndarray:
    """The per-second rows `name` of every clip of a ShardStore, in clip-id order."""
    index, values = store.read_index(), store.read_seconds(name)
    order = np.argsort(index["clip_id"])
    return np.concatenate([values[o : o + n] for o, n in zip(index["offset"][order], index["n_seconds"][order])])


@pytest.fixture(scope="session")
def seconds_by_clip():
    """seconds_by_clip(store, name): a store's per-second rows in clip-id order (shard order may differ after a
    resume, and between one process and several ranks)."""
    return _seconds_by_clip
