"""Shared fixtures: a tiny sample corpus of real mp4 files."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> Path:
    """18 clips of the built-in sample corpus (each of the nine level pairs twice); returns clips.csv."""
    from avemo.datasets.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("sample"), clips=18, seed=7)
