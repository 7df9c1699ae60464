import contextlib
import csv
import hashlib
import io
import json
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch

from avemo.cache import ShardStore, cache_lock
from avemo.datasets.manifest import read_manifest, write_manifest
from avemo.errors import AvemoError
from avemo.extract.alexnet import TINY_WIDTH, Fc7, build_alexnet, fc7_features, round_to_fp16_, weights_sha256
from avemo.extract.decode import DecodeSettings
from avemo.extract.finetune import FinetuneSettings
from avemo.extract.pipeline import ExtractSettings, extract
from avemo.train.trainer import TrainSettings, train

from helpers import make_clip

# fc7 of the given weights (no fine-tuning: tests/test_finetune.py), so clips can be added to a cache later; the
# tiny AlexNet-shaped network: these tests check the plumbing (a full-size AlexNet: test_finetune.py, test_cli.py)
SMALL = ExtractSettings(weights="tiny", clips_per_shard=2, batch_size=8, workers=1, finetune=FinetuneSettings(mode="none"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four good clips (one mute), one corrupt file and one clip under a second (read only)."""
    tmp_path = tmp_path_factory.mktemp("corpus")
    (tmp_path / "v").mkdir()
    make_clip(tmp_path / "v/a.mp4", seconds=2.5, seed=1)
    make_clip(tmp_path / "v/b.mp4", seconds=3.1, seed=2)
    make_clip(tmp_path / "v/mute.mp4", seconds=2.0, audio_hz=None, seed=3)
    make_clip(tmp_path / "v/d.mp4", seconds=1.4, seed=4)
    make_clip(tmp_path / "v/short.mp4", seconds=0.5, seed=5)
    (tmp_path / "v/corrupt.mp4").write_bytes(b"not a video at all" * 100)
    rows = [
        {"path": f"v/{name}.mp4", "arousal": arousal, "valence": "", "split": split}
        for name, arousal, split in [
            ("a", -1, "train"),
            ("corrupt", 0, "train"),
            ("b", 1, "test"),
            ("short", 0, "train"),
            ("mute", 0, "train"),
            ("d", 1, "test"),
        ]
    ]
    write_manifest(tmp_path / "clips.csv", rows)
    return read_manifest(tmp_path / "clips.csv")


@pytest.fixture(scope="module")
def extracted(corpus, tmp_path_factory):
    """(the cache of one SMALL extraction of the corpus, what it printed); tests that change it use a copy."""
    cache = tmp_path_factory.mktemp("extracted") / "cache"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        extract(corpus, cache, SMALL)
    return cache, out.getvalue()


def test_extract_writes_shards_logs_bad_clips_and_resumes(extracted, corpus, capsys):
    cache, out = extracted
    assert "decode: 4 clips done, 0 already cached, 2 failed" in out

    errors = {r["clip_id"]: r["reason"] for r in csv.DictReader(open(cache / "errors.csv"))}
    assert set(errors) == {"v/corrupt.mp4", "v/short.mp4"}
    assert "cannot read video" in errors["v/corrupt.mp4"] and "shorter than one second" in errors["v/short.mp4"]

    media, features = ShardStore(cache / "media", "media"), ShardStore(cache / "features", "features")
    assert len(media.manifest["shards"]) == len(features.manifest["shards"]) == 2
    for entry in media.manifest["shards"] + features.manifest["shards"]:
        folder = cache / ("media" if entry in media.manifest["shards"] else "features")
        assert hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    index = features.read_index()
    assert list(index["clip_id"]) == ["v/a.mp4", "v/b.mp4", "v/mute.mp4", "v/d.mp4"]
    assert list(index["n_seconds"]) == [2, 3, 2, 1] and list(index["offset"]) == [0, 2, 5, 7]
    assert list(index["has_audio"]) == [1, 1, 0, 1] and list(index["arousal"]) == [-1, 1, 0, 1]
    assert list(index["split"]) == ["train", "test", "train", "test"] and set(index["valence"]) == {-128}
    visual, audio = features.read_seconds("visual"), features.read_seconds("audio")
    assert visual.shape == audio.shape == (8, TINY_WIDTH) and visual.dtype == np.float16
    assert np.isfinite(visual).all() and not np.array_equal(visual, audio)

    # the features are AlexNet fc7 of the cached key frames
    key_frames = media.read_seconds("key_frames")
    model = Fc7(build_alexnet("tiny", seed=0))
    np.testing.assert_allclose(fc7_features(model, key_frames[:3]), visual[:3], rtol=1e-2, atol=1e-4)
    with h5py.File(cache / "media" / media.manifest["shards"][0]["file"]) as f:
        assert f.attrs["schema_version"] == 1 and f["key_frame_time"].shape == (5,)

    # a second run decodes nothing again, and the shards stay untouched
    before = {p.name: p.stat().st_mtime_ns for p in cache.rglob("*.h5")}
    extract(corpus, cache, SMALL)
    out = capsys.readouterr().out
    assert "decode: 0 clips done, 4 already cached, 2 failed" in out and "fc7: 0 clips done, 4 already cached" in out
    assert {p.name: p.stat().st_mtime_ns for p in cache.rglob("*.h5")} == before


def test_parallel_decoding_gives_the_same_cache_as_one_process(tmp_path, corpus, extracted):
    one_cache = extracted[0]  # one decoding process (workers=1)
    extract(corpus, tmp_path / "two", replace(SMALL, workers=2))
    for kind in ("media", "features"):
        one, two = ShardStore(one_cache / kind, kind), ShardStore(tmp_path / "two" / kind, kind)
        assert [s["clips"] for s in one.manifest["shards"]] == [s["clips"] for s in two.manifest["shards"]]
        for name in ("key_frames", "spectrograms", "key_frame_index") if kind == "media" else ("visual", "audio"):
            np.testing.assert_array_equal(one.read_seconds(name), two.read_seconds(name))
    assert (one_cache / "errors.csv").read_text() == (tmp_path / "two" / "errors.csv").read_text()


def test_image_codecs_round_trip(tmp_path, corpus):
    extract(corpus[:1], tmp_path / "raw", replace(SMALL, decode=DecodeSettings(image_codec="raw")))
    extract(corpus[:1], tmp_path / "png", replace(SMALL, decode=DecodeSettings(image_codec="png")))
    extract(corpus[:1], tmp_path / "jpeg", SMALL)
    for name in ("key_frames", "spectrograms"):
        raw = ShardStore(tmp_path / "raw" / "media", "media").read_seconds(name)
        png = ShardStore(tmp_path / "png" / "media", "media").read_seconds(name)
        jpeg = ShardStore(tmp_path / "jpeg" / "media", "media").read_seconds(name)
        np.testing.assert_array_equal(raw, png)  # lossless
        assert jpeg.shape == raw.shape and np.abs(jpeg.astype(int) - raw).mean() < 6  # close
    sizes = {c: sum(p.stat().st_size for p in (tmp_path / c / "media").glob("*.h5")) for c in ("raw", "png", "jpeg")}
    assert sizes["jpeg"] < sizes["png"] < sizes["raw"]


# a killed run resuming from its completed shards (SIGKILL for real, bit-identical result): test_resume.py


def test_other_settings_on_the_same_cache_are_refused(tmp_path, corpus):
    cache = tmp_path / "cache"
    extract(corpus[:1], cache, SMALL)
    other = replace(SMALL, decode=DecodeSettings(hist_bins=16))
    with pytest.raises(AvemoError, match="made with hist_bins=32, not 16"):
        extract(corpus, cache, other)
    with pytest.raises(AvemoError, match="made with seed=0, not 1"):
        extract(corpus, cache, replace(SMALL, seed=1))
    assert ShardStore(cache / "media", "media").completed_clips() == {"v/a.mp4"}  # refused before decoding


def test_a_second_run_on_a_busy_cache_is_refused(tmp_path, corpus):
    with cache_lock(tmp_path / "cache"):
        with pytest.raises(AvemoError, match="another avemo run is using this cache"):
            extract(corpus, tmp_path / "cache", SMALL)


def test_newer_schema_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99, "kind": "media", "settings": None, "shards": []}))
    with pytest.raises(AvemoError, match="cache schema 99"):
        ShardStore(tmp_path, "media")


def test_weights_from_a_local_state_dict(tmp_path):
    """--weights PATH loads the given state dict with its values rounded to fp16 (as every AlexNet avemo uses)."""
    state = {k: v + 1e-5 for k, v in build_alexnet("none", seed=3).state_dict().items()}  # not all fp16 values
    torch.save(state, tmp_path / "alexnet.pt")
    model = build_alexnet(str(tmp_path / "alexnet.pt"))
    assert all(torch.equal(model.state_dict()[k], v.half().float()) for k, v in state.items())
    assert weights_sha256(build_alexnet("none", seed=4)) != weights_sha256(model)
    # a fine-tuned 3-way AlexNet (classifier.6 is 4096 → 3) loads as well
    model.classifier[6] = torch.nn.Linear(4096, 3)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "finetuned.pt")
    assert build_alexnet(str(tmp_path / "finetuned.pt")).classifier[6].out_features == 3
    # so does a tiny one: the layer widths come from the state dict
    tiny = build_alexnet("tiny", seed=3)
    tiny.classifier[6] = torch.nn.Linear(TINY_WIDTH, 3)
    torch.save(tiny.state_dict(), tmp_path / "tiny.pt")
    loaded = build_alexnet(str(tmp_path / "tiny.pt"))
    assert weights_sha256(loaded) == weights_sha256(round_to_fp16_(tiny)) and loaded.classifier[4].out_features == TINY_WIDTH


def test_bad_weights_get_one_clear_line(tmp_path):
    with pytest.raises(AvemoError, match="not 'imagenet', 'none', 'tiny' or an existing state-dict file"):
        build_alexnet(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(AvemoError, match="cannot load a state dict"):
        build_alexnet(str(tmp_path / "junk.pt"))
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(AvemoError, match="not an AlexNet state dict"):
        build_alexnet(str(tmp_path / "other.pt"))


def test_a_tiny_backbone_gives_features_of_its_width_and_train_accepts_them(tmp_path, extracted):
    """--weights tiny: an AlexNet-shaped network with few channels and a narrow fc7, for plumbing tests."""
    cache = tmp_path / "cache"
    shutil.copytree(extracted[0], cache)  # extracted with weights tiny
    tiny = build_alexnet("tiny", seed=0)
    width = tiny.classifier[4].out_features
    assert width == TINY_WIDTH < 4096 and [type(m).__name__ for m in tiny.classifier] == [
        "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear",
    ]  # fmt: skip
    features = ShardStore(cache / "features", "features")
    assert features.settings["weights"] == "tiny" and features.settings["width"] == width
    visual, audio = features.read_seconds("visual"), features.read_seconds("audio")
    assert visual.shape == audio.shape == (8, width) and visual.dtype == np.float16 and np.isfinite(visual).all()
    key_frames = ShardStore(cache / "media", "media").read_seconds("key_frames")
    np.testing.assert_allclose(fc7_features(Fc7(tiny), key_frames[:3]), visual[:3], rtol=1e-2, atol=1e-4)

    train(cache, tmp_path / "run", ["modal"], TrainSettings(epochs=2, batch_size=2))
    saved = torch.load(tmp_path / "run" / "modal" / "model.pt", weights_only=True)
    assert saved["settings"]["head"]["feature_dim"] == width

    # readers check the width the store records
    manifest = json.loads((cache / "features" / "manifest.json").read_text())
    manifest["settings"]["width"] = width + 1
    (cache / "features" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AvemoError, match=f"'visual' is \\[5, {width}\\] float16, not \\[seconds, {width + 1}\\] float16"):
        ShardStore(cache / "features", "features").read_seconds("visual")
