"""`torchrun --nproc_per_node 2 avemo extract` (gloo on CPU) splits the work and gives the same cache."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from test_resume import seconds_by_clip

from avemo.cache import ShardStore
from avemo.datasets.manifest import read_manifest, write_manifest
from avemo.extract.finetune import FinetuneSettings
from avemo.extract.pipeline import ExtractSettings, extract

from helpers import make_clip


def torchrun_extract(manifest: Path, cache: Path, *options: str) -> subprocess.CompletedProcess:
    avemo = Path(sys.executable).parent / "avemo"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(avemo)]
    command += ["extract", "--manifest", str(manifest), "--cache", str(cache), "--workers", "1", "--weights", "none", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def make_corpus(folder: Path) -> Path:
    rows = []
    for i in range(7):
        make_clip(folder / f"c{i}.mp4", seconds=2.2, seed=i, audio_hz=300 + 150 * i)
        rows.append({"path": f"c{i}.mp4", "arousal": i % 3 - 1, "valence": "", "split": "test" if i % 3 == 0 else "train"})
    write_manifest(folder / "clips.csv", rows)
    return folder / "clips.csv"


def test_two_ranks_give_the_same_features_as_one_process(tmp_path):
    manifest = make_corpus(tmp_path)
    result = torchrun_extract(manifest, tmp_path / "two", "--finetune", "none")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[rank 0/2] decode:" in result.stdout and "[rank 1/2] decode:" in result.stdout
    assert (tmp_path / "two" / "media" / "manifest-w1.json").is_file()  # rank 1 wrote its own shards
    extract(
        read_manifest(manifest),
        tmp_path / "one",
        ExtractSettings(weights="none", workers=1, finetune=FinetuneSettings(mode="none")),
    )
    for kind, names in (("media", ("key_frames", "spectrograms", "key_frame_index")), ("features", ("visual", "audio"))):
        one, two = ShardStore(tmp_path / "one" / kind, kind), ShardStore(tmp_path / "two" / kind, kind)
        assert sorted(two.read_index()["clip_id"]) == sorted(one.read_index()["clip_id"])  # none lost or doubled
        for name in names:
            np.testing.assert_array_equal(seconds_by_clip(two, name), seconds_by_clip(one, name))


def test_fine_tuning_runs_under_ddp_with_two_ranks(tmp_path):
    manifest = make_corpus(tmp_path)
    result = torchrun_extract(manifest, tmp_path / "c", "--finetune-epochs", "1", "--finetune-batch-size", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    models = json.loads((tmp_path / "c" / "models" / "manifest.json").read_text())["models"]
    assert models["visual"]["train_seconds"] == 8 and models["audio"]["train_seconds"] == 8  # 4 train clips × 2 s
    tuned = [json.loads(p.read_text())["settings"]["tuned_sha256"] for p in (tmp_path / "c" / "features").glob("manifest*.json")]
    assert len(tuned) == 2 and tuned[0] == tuned[1] == {m: models[m]["sha256"] for m in ("visual", "audio")}
    features = ShardStore(tmp_path / "c" / "features", "features")
    assert sorted(features.read_index()["clip_id"]) == [f"c{i}.mp4" for i in range(7)]
    # a single process resumes the two-rank cache without redoing anything
    extract(
        read_manifest(manifest),
        tmp_path / "c",
        ExtractSettings(weights="none", workers=1, finetune=FinetuneSettings(epochs=1, batch_size=4)),
    )
    assert len(ShardStore(tmp_path / "c" / "features", "features").read_index()["clip_id"]) == 7
