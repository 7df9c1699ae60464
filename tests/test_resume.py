"""A run killed with SIGKILL in the middle resumes and ends with the same cache as an uninterrupted one."""

import json
import signal
import subprocess
import sys
import time

import numpy as np

from avemo.cache import ShardStore
from avemo.datasets.manifest import write_manifest

from helpers import make_clip

# the tiny AlexNet-shaped network (fine-tuning fc): what is checked is resuming, not the network
SCRIPT = """
import sys
from avemo.datasets.manifest import read_manifest
from avemo.extract.pipeline import ExtractSettings, extract
extract(read_manifest(sys.argv[1]), sys.argv[2], ExtractSettings(weights="tiny", clips_per_shard=1, workers=1, batch_size=8))
"""


def run_extract(manifest, cache, kill_after_shards=None):
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(manifest), str(cache)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    if kill_after_shards is not None:
        manifest_json = cache / "media" / "manifest.json"
        while process.poll() is None:
            if manifest_json.is_file() and len(json.loads(manifest_json.read_text())["shards"]) >= kill_after_shards:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    return process.wait(timeout=300)


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    rows = []
    for i in range(10):
        make_clip(tmp_path / f"c{i}.mp4", seconds=2.2, seed=i, audio_hz=300 + 100 * i)
        rows.append({"path": f"c{i}.mp4", "arousal": i % 3 - 1, "valence": "", "split": "test" if i % 4 == 0 else "train"})
    write_manifest(tmp_path / "clips.csv", rows)

    assert run_extract(tmp_path / "clips.csv", tmp_path / "killed", kill_after_shards=3) == -signal.SIGKILL
    partial = ShardStore(tmp_path / "killed" / "media", "media").completed_clips()
    assert 3 <= len(partial) < 10
    assert run_extract(tmp_path / "clips.csv", tmp_path / "killed") == 0
    assert run_extract(tmp_path / "clips.csv", tmp_path / "whole") == 0

    killed = ShardStore(tmp_path / "killed" / "features", "features")
    whole = ShardStore(tmp_path / "whole" / "features", "features")
    assert sorted(killed.read_index()["clip_id"]) == sorted(r["path"] for r in rows)  # none lost or doubled
    for name in ("visual", "audio"):
        np.testing.assert_array_equal(seconds_by_clip(killed, name), seconds_by_clip(whole, name))


def seconds_by_clip(store, name):
    """The per-second rows of every clip, in clip-id order (shard order may differ after a resume)."""
    index, values = store.read_index(), store.read_seconds(name)
    order = np.argsort(index["clip_id"])
    return np.concatenate([values[o : o + n] for o, n in zip(index["offset"][order], index["n_seconds"][order])])
