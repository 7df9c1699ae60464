"""A run killed with SIGKILL in the middle resumes and ends with the same cache as an uninterrupted one."""

import json
import signal
import subprocess
import sys
import time

import numpy as np

from avemo.cache import ShardStore
from avemo.datasets.manifest import read_manifest, write_manifest
from avemo.extract.pipeline import ExtractSettings, extract

from helpers import make_clip

# the tiny AlexNet-shaped network (fine-tuning fc): what is checked is resuming, not the network
SETTINGS = ExtractSettings(weights="tiny", clips_per_shard=1, workers=1, batch_size=8)
# only the killed run is a process of its own; the names its repr uses are imported
SCRIPT = f"""
import sys
from avemo.datasets.manifest import read_manifest
from avemo.extract.decode import DecodeSettings
from avemo.extract.finetune import FinetuneSettings
from avemo.extract.pipeline import ExtractSettings, extract
from avemo.extract.spectrogram import SpectrogramSettings
extract(read_manifest(sys.argv[1]), sys.argv[2], {SETTINGS!r})
"""


def killed_extract(manifest, cache, after_shards, log):
    """Run extract in a process of its own, SIGKILLed as soon as `after_shards` media shards are listed."""
    with open(log, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(manifest), str(cache)], stdout=stderr, stderr=stderr)
    manifest_json = cache / "media" / "manifest.json"
    while process.poll() is None:
        if manifest_json.is_file() and len(json.loads(manifest_json.read_text())["shards"]) >= after_shards:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    return process.wait(timeout=300)


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, capsys, seconds_by_clip):
    rows = []
    for i in range(8):
        make_clip(tmp_path / f"c{i}.mp4", seconds=1.2 + i % 3 * 0.5, seed=i, audio_hz=300 + 100 * i)
        rows.append({"path": f"c{i}.mp4", "arousal": i % 3 - 1, "valence": "", "split": "test" if i % 4 == 0 else "train"})
    write_manifest(tmp_path / "clips.csv", rows)
    clips = read_manifest(tmp_path / "clips.csv")

    code = killed_extract(tmp_path / "clips.csv", tmp_path / "killed", 3, tmp_path / "killed.log")
    assert code == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    partial = ShardStore(tmp_path / "killed" / "media", "media").completed_clips()
    assert 3 <= len(partial) < len(rows)
    (tmp_path / "killed" / "media" / "shard-00099.h5.tmp").write_bytes(b"half written")  # as a kill mid-write leaves
    capsys.readouterr()
    extract(clips, tmp_path / "killed", SETTINGS)  # the resumed run
    assert f"decode: {len(rows) - len(partial)} clips done, {len(partial)} already cached, 0 failed" in capsys.readouterr().out
    assert not list((tmp_path / "killed").rglob("*.tmp"))
    extract(clips, tmp_path / "whole", SETTINGS)  # an uninterrupted one

    for kind, names in (("media", ("key_frames", "spectrograms", "key_frame_index")), ("features", ("visual", "audio"))):
        killed, whole = (ShardStore(tmp_path / run / kind, kind) for run in ("killed", "whole"))
        assert sorted(killed.read_index()["clip_id"]) == sorted(r["path"] for r in rows)  # none lost or doubled
        for name in names:
            np.testing.assert_array_equal(seconds_by_clip(killed, name), seconds_by_clip(whole, name))
