"""A cache is never read on trust (issue 12): every fault a tester found, on a real tiny fine-tuned cache.

Each case copies one module-scoped cache (real mp4 → real HDF5 → real AlexNet tuning), breaks it the way a
tester did, and asserts the exact outcome: one AvemoError naming the file, or a repaired cache whose
contents equal the untouched one's, or the manifest's labels applied.
"""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import h5py
import numpy as np
import pytest

from avemo.cache import DamagedShard, ShardStore, cache_lock, check_cache
from avemo.datasets.manifest import read_manifest, write_manifest
from avemo.errors import AvemoError
from avemo.extract.alexnet import build_alexnet, fc7_width, pool5_width, weights_sha256
from avemo.extract.finetune import FinetuneSettings
from avemo.extract.pipeline import ExtractSettings, extract
from avemo.train.data import load_features

from helpers import make_clip

# the tiny AlexNet-shaped network: what is checked here is the cache, not the network
SETTINGS = ExtractSettings(
    weights="tiny", workers=1, clips_per_shard=2, batch_size=8, finetune=FinetuneSettings(epochs=1, batch_size=8)
)
# name, seconds, split, arousal: three media shards of two clips; 4 train clips: no validation split held out
CLIPS = [("a", 1.3, "train", -1), ("b", 1.6, "train", 1), ("c", 1.2, "train", 0), ("d", 2.1, "train", 1)]
CLIPS += [("t1", 1.4, "test", 0), ("t2", 1.2, "test", -1)]


def rows(changes=None):
    changes = changes or {}
    out = []
    for name, _, split, arousal in CLIPS:
        row = {"path": f"v/{name}.mp4", "arousal": arousal, "valence": "", "split": split, "movie": ""}
        out.append({**row, **changes.get(name, {})})
    return out


def clips_of(root, name, changes=None, extra=()):
    write_manifest(root / name, rows(changes) + list(extra))
    return read_manifest(root / name)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(video folder, the cache of one fine-tuned extraction)."""
    root = tmp_path_factory.mktemp("integrity")
    (root / "v").mkdir()
    for i, (name, seconds, _, _) in enumerate(CLIPS):
        make_clip(root / f"v/{name}.mp4", seconds=seconds, seed=i, audio_hz=300 + 150 * i)
    make_clip(root / "v/new.mp4", seconds=1.2, seed=9, audio_hz=1900)
    extract(clips_of(root, "clips.csv"), root / "cache", SETTINGS)
    return root, root / "cache"


@pytest.fixture
def cache(made, tmp_path):
    """A private copy of the module's cache."""
    shutil.copytree(made[1], tmp_path / "cache", symlinks=True)
    return tmp_path / "cache"


def by_clip(cache, kind, name):
    """clip id → its per-second rows (shard order may differ after a repair)."""
    store = ShardStore(cache / kind, kind)
    index, values = store.read_index(), store.read_seconds(name)
    return {c: values[o : o + n] for c, o, n in zip(index["clip_id"], index["offset"], index["n_seconds"])}


def assert_same(cache, reference, kind="features", names=("visual", "audio")):
    for name in names:
        a, b = by_clip(cache, kind, name), by_clip(reference, kind, name)
        assert sorted(a) == sorted(b)
        for clip in a:
            np.testing.assert_array_equal(a[clip], b[clip])


def entry(cache, kind, number=0):
    manifest = json.loads((cache / kind / "manifest.json").read_text())
    return manifest, manifest["shards"][number]


def save(cache, kind, manifest):
    (cache / kind / "manifest.json").write_text(json.dumps(manifest, indent=1))


def snapshot(cache):
    return {p: p.read_bytes() for p in sorted(cache.rglob("*")) if p.is_file()}


# -- 1. checksums: a damaged shard is named, and extract re-makes it ------------------------------------------
def flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def zero_sha(path):
    manifest = json.loads((path.parent / "manifest.json").read_text())
    next(e for e in manifest["shards"] if e["file"] == path.name)["sha256"] = "0" * 64
    (path.parent / "manifest.json").write_text(json.dumps(manifest))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


FAULTS = {"flip": flip, "zero_sha": zero_sha, "truncate": truncate, "delete": os.unlink}


@pytest.mark.parametrize(
    "kind, fault",
    [("features", "flip"), ("features", "zero_sha"), ("media", "truncate"), ("media", "delete")],
)
def test_a_damaged_shard_is_named_before_use_then_re_made_by_extract(made, cache, kind, fault, capsys):
    root, reference = made
    _, listed = entry(cache, kind, 1)
    path = cache / kind / listed["file"]
    FAULTS[fault](path)
    reason = "missing" if fault == "delete" else "damaged: its sha256"
    # the readers: train (features), the joint pass (every store)
    with pytest.raises(DamagedShard, match=f"{path}: {reason}.*avemo extract --cache {cache}"):
        check_cache(cache, "the joint pass", verify=("features", "pool5", "media"))
    if kind == "features":
        with pytest.raises(AvemoError, match=f"{path}: {reason}"):
            load_features(cache)
    capsys.readouterr()
    extract(clips_of(root, "clips.csv"), cache, SETTINGS)
    out = capsys.readouterr().out
    again = "its 2 clips decoded again" if kind == "media" else "dropped, its features are computed again below"
    assert f"repair: {path}: {reason}" in out and again in out
    assert "decode: 0 clips done, 6 already cached" in out
    assert_same(cache, reference)
    if kind == "media":
        assert_same(cache, reference, "media", ("key_frames", "spectrograms", "key_frame_index"))
    check_cache(cache, "the joint pass", verify=("features", "pool5", "media"))


def test_a_damaged_pool5_shard_is_computed_again(made, cache, capsys):
    root, reference = made
    _, listed = entry(cache, "pool5", 2)
    flip(cache / "pool5" / listed["file"])
    shutil.rmtree(cache / "features")  # as if killed before the features: tuning reads pool5
    extract(clips_of(root, "clips.csv"), cache, SETTINGS)
    out = capsys.readouterr().out
    assert f"repair: {cache / 'pool5' / listed['file']}: damaged" in out and "pool5: 2 clips done, 4 already cached" in out
    assert_same(cache, reference, "pool5")
    assert_same(cache, reference)


# -- 2. the cache follows the manifest ------------------------------------------------------------------------
def test_label_changes_are_applied_without_decoding_and_train_changes_refused(made, cache, capsys):
    root, reference = made
    before = load_features(reference)
    capsys.readouterr()
    # a test clip's arousal and a train clip's valence: the tuned AlexNets do not depend on them
    changes = {"t1": {"arousal": 1}, "b": {"valence": -1}}
    extract(clips_of(root, "labels.csv", changes), cache, SETTINGS)
    out = capsys.readouterr().out
    assert "manifest: arousal of 1 clip, valence of 1 clip changed; written into the media, pool5, features shards" in out
    assert "decode: 0 clips done, 6 already cached" in out and "fine-tune: skipped" in out
    data = load_features(cache)
    ids = list(data.clip_ids)
    assert int(data.labels[ids.index("v/t1.mp4")]) == 2  # active
    assert (data.labels == before.labels).sum() == len(ids) - 1
    for kind in ("media", "pool5", "features"):
        index = ShardStore(cache / kind, kind).read_index()
        valence = dict(zip(index["clip_id"], index["valence"]))
        assert valence["v/b.mp4"] == -1 and valence["v/a.mp4"] == -128
    assert_same(cache, reference)

    # a train clip's label, split or movie: the AlexNets were tuned on them; refused before any change
    kept = snapshot(cache)
    for change, said in [
        ({"a": {"arousal": 1}}, r"v/a.mp4 \(arousal -1 → 1\)"),
        ({"t2": {"split": "train"}}, r"v/t2.mp4 \(split 'test' → 'train'\)"),
    ]:
        with pytest.raises(AvemoError, match=f"fine-tuned on the train clips.*{said}.*delete {cache / 'features'}"):
            extract(clips_of(root, "train.csv", {**changes, **change}), cache, SETTINGS)
        assert snapshot(cache) == kept


# -- 3. busy or unfinished caches -----------------------------------------------------------------------------
def test_busy_and_unfinished_caches_are_refused_by_readers(made, cache):
    root, _ = made
    with cache_lock(cache), pytest.raises(AvemoError, match=r"an `avemo extract` is writing this cache now .*\.lock"):
        load_features(cache)
    manifest, _ = entry(cache, "features")
    manifest["shards"] = manifest["shards"][:1]  # export killed after one shard of three
    save(cache, "features", manifest)
    with pytest.raises(AvemoError, match=f"features of 4 of the 6 decoded clips are missing .*avemo extract --cache {cache}"):
        load_features(cache)
    with pytest.raises(AvemoError, match="features of 4 of the 6"):
        check_cache(cache, "predict")
    extract(clips_of(root, "clips.csv"), cache, SETTINGS)
    assert len(load_features(cache).clip_ids) == 6


# -- 6. deleted models are tuned again and checked; a train clip added is refused before decoding ---------------
def test_deleted_models_are_tuned_again_and_match_the_features(made, cache, capsys):
    root, reference = made
    (cache / "models" / "visual.pt").unlink()
    missing = f"{cache / 'models' / 'visual.pt'}: the fine-tuned AlexNet is missing.*avemo extract --cache"
    with pytest.raises(AvemoError, match=missing):
        load_features(cache)
    capsys.readouterr()
    extract(clips_of(root, "clips.csv"), cache, SETTINGS)
    out = capsys.readouterr().out
    assert "visual.pt missing or changed: tuning again" in out and "fine-tune audio: reusing" in out
    recorded = ShardStore(cache / "features", "features").settings["tuned_sha256"]
    assert weights_sha256(build_alexnet(str(cache / "models" / "visual.pt"))) == recorded["visual"]
    assert_same(cache, reference)


def test_a_train_clip_added_to_a_tuned_cache_is_refused_before_decoding(made, cache, capsys):
    root, _ = made
    kept = snapshot(cache)
    new = {"path": "v/new.mp4", "arousal": 0, "valence": "", "split": "train", "movie": ""}
    with pytest.raises(AvemoError, match=r"adds train clip v/new.mp4, .*nothing was decoded.*make it a test clip"):
        extract(clips_of(root, "more.csv", extra=[new]), cache, SETTINGS)
    assert snapshot(cache) == kept  # not wedged: the original manifest still runs
    capsys.readouterr()
    extract(clips_of(root, "clips.csv"), cache, SETTINGS)
    assert "decode: 0 clips done, 6 already cached" in capsys.readouterr().out


# -- 4. manifest entries are confined to their store and must agree with their shard ---------------------------
def outside(cache):
    manifest, listed = entry(cache, "features")
    pool5 = entry(cache, "pool5")[1]
    listed |= {"file": "../pool5/" + pool5["file"], "sha256": pool5["sha256"]}
    return manifest, "not a plain shard file name inside the store folder"


def shortened(cache):
    manifest, listed = entry(cache, "features", 1)
    listed["clips"] = listed["clips"][:1]
    return manifest, "lists other clips than the shard holds"


def pool5_copied_in(cache):
    manifest, listed = entry(cache, "features")
    pool5 = entry(cache, "pool5")[1]
    shutil.copy(cache / "pool5" / pool5["file"], cache / "features" / listed["file"])
    listed["sha256"] = pool5["sha256"]
    return manifest, "a 'pool5' shard listed among the features shards"


def pool5_as_features(cache):
    manifest, listed = entry(cache, "features")
    path = cache / "features" / listed["file"]
    shutil.copy(cache / "pool5" / entry(cache, "pool5")[1]["file"], path)
    with h5py.File(path, "r+") as f:
        f.attrs["kind"] = "features"
    listed["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    alexnet = build_alexnet(SETTINGS.weights, SETTINGS.seed)
    return manifest, rf"'visual' is \[\d+, {pool5_width(alexnet)}\] float16, not \[seconds, {fc7_width(alexnet)}\] float16"


def clip_twice(cache):
    manifest, listed = entry(cache, "features", 1)
    manifest["shards"][2]["clips"][0] = listed["clips"][0]
    return manifest, "is listed in both"


@pytest.mark.parametrize("fault", [outside, shortened, pool5_copied_in, pool5_as_features, clip_twice])
def test_manifest_entries_are_confined_to_their_store_and_shard(made, cache, fault):
    manifest, said = fault(cache)
    save(cache, "features", manifest)
    with pytest.raises(AvemoError, match=said):
        load_features(cache)
    if fault in (outside, shortened):  # extract refuses too, before any work
        kept = snapshot(cache)
        with pytest.raises(AvemoError, match=said):
            extract(clips_of(made[0], "clips.csv"), cache, SETTINGS)
        assert snapshot(cache) == kept


# -- 5. what used to be a traceback --------------------------------------------------------------------------
def test_a_truncated_manifest_is_one_line(made, cache):
    path = cache / "media" / "manifest.json"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(AvemoError, match=f"{path}: not valid JSON, cut short or edited .*delete {cache / 'media'}"):
        extract(clips_of(made[0], "clips.csv"), cache, SETTINGS)
    with pytest.raises(AvemoError, match=f"{path}: not valid JSON"):
        check_cache(cache, "predict")


@contextlib.contextmanager
def mounted(*commands):
    """Run mount commands (root only: skipped elsewhere); unmount the last target at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    for command in commands:
        if subprocess.run(["mount", *command], capture_output=True).returncode:
            pytest.skip(f"mount {' '.join(command)} is not permitted here")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", commands[-1][-1]], check=False)


def test_a_read_only_cache_is_one_line_for_extract_and_still_trains(made, cache, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    with mounted(["--bind", str(cache), str(ro)], ["-o", "remount,bind,ro", str(ro)]):
        with pytest.raises(AvemoError, match=f"{ro}: cannot write in this cache .*Read-only.*another --cache"):
            extract(clips_of(made[0], "clips.csv"), ro, SETTINGS)
        assert len(load_features(ro).clip_ids) == 6  # readers never write


def test_a_full_disk_is_one_line_naming_the_cache_and_the_free_space(made, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    with mounted(["-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)]):
        (small / "filler").write_bytes(bytes(shutil.disk_usage(small).free - 300_000))
        settings = replace(SETTINGS, finetune=FinetuneSettings(mode="none"))
        with pytest.raises(
            AvemoError, match=f"{small / 'cache'}: the disk is full \\(0.[0-9] MB free\\): writing shard-00000.h5"
        ):
            extract(clips_of(made[0], "clips.csv"), small / "cache", settings)
        assert not list((small / "cache").rglob("*.tmp"))
        (small / "filler").unlink()  # room again: the run resumes
        extract(clips_of(made[0], "clips.csv"), small / "cache", settings)
        assert len(load_features(small / "cache").clip_ids) == 6


# -- 7. decode workers end with the process that started them ------------------------------------------------
WORKERS = """
import time
from avemo.extract.workers import in_order
for _ in in_order(time.sleep, [120] * 4, 2):
    pass
"""


def children_of(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry))
    return found


def alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_decode_workers_and_the_resource_tracker_die_with_a_killed_parent():
    parent = subprocess.Popen([sys.executable, "-c", WORKERS])
    deadline = time.time() + 60
    while len(children_of(parent.pid)) < 3 and time.time() < deadline:  # 2 workers and the resource tracker
        time.sleep(0.1)
    children = children_of(parent.pid)
    assert len(children) >= 3, children
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while any(alive(c) for c in children) and time.time() < deadline:
        time.sleep(0.1)
    assert not [c for c in children if alive(c)]


# -- 8. links planted in a cache are never written through ---------------------------------------------------
@pytest.mark.parametrize("name", [".lock", "errors.csv", "media/manifest.json.tmp", "features"])
def test_links_planted_in_a_cache_are_not_followed(made, cache, tmp_path, name, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's own file\n")
    link = cache / name
    if link.is_dir():
        shutil.rmtree(link)
        (tmp_path / "elsewhere").mkdir()
        link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    else:
        link.unlink(missing_ok=True)
        link.symlink_to(victim)
    if name.endswith(".tmp"):  # a temporary name: the link itself is removed, the run goes on
        extract(clips_of(made[0], "t1.csv", {"t1": {"arousal": 1}}), cache, SETTINGS)  # rewrites the manifest
        assert not link.is_symlink() and "manifest: arousal of 1 clip changed" in capsys.readouterr().out
    else:
        with pytest.raises(AvemoError, match=f"{link}: is a symbolic link"):
            extract(clips_of(made[0], "clips.csv"), cache, SETTINGS)
    assert victim.read_text() == "the user's own file\n"
    assert not list((tmp_path / "elsewhere").glob("*")) if name == "features" else True
