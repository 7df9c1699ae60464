"""`torchrun --nproc_per_node 2 avemo extract` (gloo on CPU) splits the work and gives the same cache.

One two-rank run (decoding, pool5, fine-tuning under DDP, fc7 export) is compared with one process: the media
and pool5 bit for bit with a one-process extraction, the features bit for bit with a one-process export by the
same tuned AlexNets. The AlexNets are `--weights tiny` ones: what is checked is how the work is shared."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from avemo.cache import ShardStore
from avemo.datasets.manifest import read_manifest, write_manifest
from avemo.extract.finetune import FinetuneSettings
from avemo.extract.pipeline import ExtractSettings, extract

from helpers import make_clip

TUNE = ("--finetune-epochs", "1", "--finetune-batch-size", "4")
SETTINGS = ExtractSettings(weights="tiny", workers=1, finetune=FinetuneSettings(epochs=1, batch_size=4))
MEDIA = ("key_frames", "spectrograms", "key_frame_index")


def torchrun_extract(manifest: Path, cache: Path, *options: str) -> subprocess.CompletedProcess:
    avemo = Path(sys.executable).parent / "avemo"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(avemo)]
    command += ["extract", "--manifest", str(manifest), "--cache", str(cache), "--workers", "1", "--weights", "tiny", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def make_corpus(folder: Path) -> Path:
    rows = []
    for i in range(7):
        make_clip(folder / f"c{i}.mp4", seconds=2.2, seed=i, audio_hz=300 + 150 * i)
        rows.append({"path": f"c{i}.mp4", "arousal": i % 3 - 1, "valence": "", "split": "test" if i % 3 == 0 else "train"})
    write_manifest(folder / "clips.csv", rows)
    return folder / "clips.csv"


def assert_same(a: Path, b: Path, kind: str, names: tuple[str, ...], seconds_by_clip) -> None:
    one, two = ShardStore(a / kind, kind), ShardStore(b / kind, kind)
    assert sorted(two.read_index()["clip_id"]) == sorted(one.read_index()["clip_id"])  # none lost or doubled
    for name in names:
        assert (seconds_by_clip(two, name) == seconds_by_clip(one, name)).all(), (kind, name)


def test_two_ranks_give_the_same_cache_as_one_process(tmp_path, capsys, seconds_by_clip):
    manifest = make_corpus(tmp_path)
    clips = read_manifest(manifest)
    two = tmp_path / "two"
    result = torchrun_extract(manifest, two, *TUNE)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[rank 0/2] decode:" in result.stdout and "[rank 1/2] decode:" in result.stdout
    assert (two / "media" / "manifest-w1.json").is_file()  # rank 1 wrote its own shards

    # fine-tuning ran under DDP on the train clips only, and both ranks exported with the same tuned weights
    models = json.loads((two / "models" / "manifest.json").read_text())["models"]
    assert models["visual"]["train_seconds"] == 8 and models["audio"]["train_seconds"] == 8  # 4 train clips × 2 s
    tuned = [json.loads(p.read_text())["settings"]["tuned_sha256"] for p in (two / "features").glob("manifest*.json")]
    assert len(tuned) == 2 and tuned[0] == tuned[1] == {m: models[m]["sha256"] for m in ("visual", "audio")}

    # decoding and pool5 as one process does them, bit for bit
    extract(clips, tmp_path / "one", SETTINGS)
    assert_same(tmp_path / "one", two, "media", MEDIA, seconds_by_clip)
    assert_same(tmp_path / "one", two, "pool5", ("visual", "audio"), seconds_by_clip)

    # the features as one process exports them with the same tuned AlexNets, bit for bit
    shutil.copytree(two, tmp_path / "export")
    shutil.rmtree(tmp_path / "export" / "features")
    capsys.readouterr()
    extract(clips, tmp_path / "export", SETTINGS)
    out = capsys.readouterr().out
    assert "fine-tune visual: reusing" in out and "fc7: 7 clips done, 0 already cached" in out
    assert_same(tmp_path / "export", two, "features", ("visual", "audio"), seconds_by_clip)

    # a single process resumes the two-rank cache without redoing anything
    extract(clips, two, SETTINGS)
    out = capsys.readouterr().out
    assert "decode: 0 clips done, 7 already cached" in out and "fc7: 0 clips done, 7 already cached" in out
    assert len(ShardStore(two / "features", "features").read_index()["clip_id"]) == 7
