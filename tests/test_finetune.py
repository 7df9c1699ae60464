"""Per-modality AlexNet fine-tuning on real mp4, real HDF5 and real (tiny) training.

The AlexNets are `--weights tiny` ones (AlexNet's layers, few channels, 64-d fc7): what is checked is which
layers and clips tuning uses; full-size fine-tuning and its 4096-d fc7 run end to end in test_cli.py."""

import json
import shutil

import numpy as np
import pytest
import torch

from avemo.cache import ShardStore
from avemo.datasets.manifest import read_manifest, write_manifest
from avemo.errors import AvemoError
from avemo.extract.alexnet import TINY_WIDTH, Fc7, build_alexnet, fc7_features, is_fp16_valued, weights_sha256
from avemo.extract.embed import cache_embedder, feature_alexnets
from avemo.extract.finetune import FinetuneSettings
from avemo.extract.pipeline import ExtractSettings, extract

from helpers import make_clip

TUNE = FinetuneSettings(epochs=3, lr=0.05, batch_size=8)  # one step per epoch
TINY = ExtractSettings(weights="tiny", clips_per_shard=2, batch_size=8, workers=1, finetune=TUNE)
TRAIN = [("a", -1), ("b", 1), ("c", 0), ("mute", 1)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Four train clips (one mute) and two pairs of test clips of equal lengths but other content."""
    root = tmp_path_factory.mktemp("videos")
    (root / "v").mkdir()
    for i, (name, seconds) in enumerate([("a", 2.2), ("b", 2.4), ("c", 1.5), ("t1", 2.1), ("t2", 1.2)]):
        make_clip(root / f"v/{name}.mp4", seconds=seconds, seed=i, audio_hz=300 + 200 * i)
        if name.startswith("t"):  # same length, other pictures and sound
            make_clip(root / f"v/u{name[1]}.mp4", seconds=seconds, seed=50 + i, audio_hz=2000 + 100 * i)
    make_clip(root / "v/mute.mp4", seconds=1.3, audio_hz=None, seed=9)
    return root


def manifest(root, name, train=TRAIN, test=(("t1", 1), ("t2", -1))):
    rows = [{"path": f"v/{n}.mp4", "arousal": a, "valence": "", "split": "train"} for n, a in train]
    rows += [{"path": f"v/{n}.mp4", "arousal": a, "valence": "", "split": "test"} for n, a in test]
    write_manifest(root / name, rows)
    return read_manifest(root / name)


@pytest.fixture(scope="module")
def tuned(videos, tmp_path_factory):
    """The cache of one default-mode (fc) extraction with TUNE."""
    cache = tmp_path_factory.mktemp("tuned") / "cache"
    extract(manifest(videos, "a.csv"), cache, TINY)
    return cache


def rows_of(store, split):
    index = store.read_index()
    keep = index["split"] == split
    return np.concatenate([np.arange(o, o + n) for o, n in zip(index["offset"][keep], index["n_seconds"][keep])])


def models_manifest(cache):
    return json.loads((cache / "models" / "manifest.json").read_text())


def test_fine_tuning_never_sees_test_clips_but_does_see_train_labels(videos, tuned, tmp_path):
    other_tests = manifest(videos, "b.csv", test=(("u1", -1), ("u2", 0)))  # other content and labels
    extract(other_tests, tmp_path / "b", TINY)
    a, b = models_manifest(tuned), models_manifest(tmp_path / "b")
    for modality in ("visual", "audio"):
        assert a["models"][modality]["sha256"] == b["models"][modality]["sha256"]
        fa = ShardStore(tuned / "features", "features").read_seconds(modality)
        fb = ShardStore(tmp_path / "b" / "features", "features").read_seconds(modality)
        train, test = (
            rows_of(ShardStore(tuned / "features", "features"), "train"),
            rows_of(ShardStore(tuned / "features", "features"), "test"),
        )
        assert np.array_equal(fa[train], fb[train])  # bit for bit
        assert not np.array_equal(fa[test], fb[test])  # the test clips did differ
    assert (
        a["models"]["visual"]["train_seconds"] == 2 + 2 + 1 + 1 and a["models"]["audio"]["train_seconds"] == 5
    )  # mute: no audio

    flipped = manifest(videos, "c.csv", train=[("a", 1), *TRAIN[1:]])  # one train label changed
    extract(flipped, tmp_path / "c", TINY)
    c = models_manifest(tmp_path / "c")
    for modality in ("visual", "audio"):
        assert c["models"][modality]["sha256"] != a["models"][modality]["sha256"]


def test_tuned_models_are_3_way_alexnets_whose_fc7_are_the_features(tuned):
    media, features = ShardStore(tuned / "media", "media"), ShardStore(tuned / "features", "features")
    base = build_alexnet("tiny", seed=0)
    settings = features.settings
    assert settings["finetune"]["mode"] == "fc" and settings["finetune"]["epochs"] == 3
    assert settings["finetune_train"]["clips"] == 4 and settings["weights_sha256"] == weights_sha256(base)
    for modality, images in (("visual", "key_frames"), ("audio", "spectrograms")):
        stored = torch.load(tuned / "models" / f"{modality}.pt", weights_only=True)
        model = build_alexnet(str(tuned / "models" / f"{modality}.pt"))
        assert model.classifier[6].out_features == 3
        assert weights_sha256(model) == settings["tuned_sha256"][modality] != weights_sha256(base)
        # stored in fp16, and exactly so: the tuned weights were rounded to fp16 values before hashing and export
        assert {v.dtype for v in stored.values()} == {torch.float16} and is_fp16_valued(model)
        assert all(torch.equal(model.state_dict()[k], v.float()) for k, v in stored.items())
        # mode fc tunes fc6-fc8 only: the convolutions are the base model's
        assert torch.equal(model.features[0].weight, base.features[0].weight)
        assert not torch.equal(model.classifier[1].weight, base.classifier[1].weight)
        direct = fc7_features(Fc7(model), media.read_seconds(images))
        exported = features.read_seconds(modality)
        assert exported.dtype == np.float16 and exported.shape == (direct.shape[0], TINY_WIDTH)
        np.testing.assert_allclose(exported.astype(np.float32), direct.astype(np.float32), rtol=2e-2, atol=2e-4)


def test_loss_decreases(tuned):
    for modality in ("visual", "audio"):
        loss = models_manifest(tuned)["models"][modality]["loss"]
        assert len(loss) == 3 and loss[-1] < loss[0], loss


def test_a_rerun_skips_finished_work_and_other_settings_are_refused(videos, tuned, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(tuned, cache)
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file() and p.suffix in (".h5", ".pt")}
    capsys.readouterr()
    extract(manifest(videos, "a.csv"), cache, TINY)
    out = capsys.readouterr().out
    assert "fine-tune: skipped" in out and "fc7: 0 clips done, 6 already cached" in out
    assert {p: p.stat().st_mtime_ns for p in before} == before

    # as if killed after tuning, before the features: the saved models and pool5 are reused
    shutil.rmtree(cache / "features")
    extract(manifest(videos, "a.csv"), cache, TINY)
    out = capsys.readouterr().out
    assert "fine-tune visual: reusing" in out and "fine-tune audio: reusing" in out
    assert "pool5: 0 clips done, 6 already cached" in out and "fc7: 6 clips done, 0 already cached" in out
    for modality in ("visual", "audio"):
        again = ShardStore(cache / "features", "features").read_seconds(modality)
        assert np.array_equal(again, ShardStore(tuned / "features", "features").read_seconds(modality))

    with pytest.raises(AvemoError, match="made with finetune epochs=3, not 5; .*delete"):
        extract(
            manifest(videos, "a.csv"),
            cache,
            ExtractSettings(
                weights="tiny", clips_per_shard=2, workers=1, finetune=FinetuneSettings(epochs=5, lr=0.05, batch_size=8)
            ),
        )
    with pytest.raises(AvemoError, match="made with finetune mode='fc', not 'none'"):
        extract(
            manifest(videos, "a.csv"),
            cache,
            ExtractSettings(weights="tiny", clips_per_shard=2, workers=1, finetune=FinetuneSettings(mode="none")),
        )
    # the tuned weights depend on every train clip: a train clip added later is refused before tuning
    more = manifest(videos, "more.csv", train=[*TRAIN, ("u1", 0)])
    with pytest.raises(AvemoError, match="the manifest adds train clip v/u1.mp4, .*nothing was decoded"):
        extract(more, cache, TINY)
    assert "v/u1.mp4" not in ShardStore(cache / "media", "media").completed_clips()  # refused before decoding


def test_mode_all_tunes_every_layer(videos, tmp_path):
    settings = ExtractSettings(
        weights="tiny", clips_per_shard=4, batch_size=8, workers=1, finetune=FinetuneSettings(mode="all", epochs=1, batch_size=8)
    )
    extract(manifest(videos, "a.csv"), tmp_path / "cache", settings)
    assert not (tmp_path / "cache" / "pool5").exists()
    base = build_alexnet("tiny", seed=0)
    model = build_alexnet(str(tmp_path / "cache" / "models" / "visual.pt"))
    assert not torch.equal(model.features[0].weight, base.features[0].weight)
    media, features = ShardStore(tmp_path / "cache" / "media", "media"), ShardStore(tmp_path / "cache" / "features", "features")
    direct = fc7_features(Fc7(model), media.read_seconds("key_frames")[:4])
    np.testing.assert_allclose(
        features.read_seconds("visual")[:4].astype(np.float32), direct.astype(np.float32), rtol=1e-2, atol=1e-4
    )


def test_bad_mode_is_one_clear_line():
    with pytest.raises(AvemoError, match="--finetune best: must be one of fc, all, none"):
        FinetuneSettings(mode="best")


def test_a_cache_made_before_fp16_alexnets_is_refused_in_one_line(videos, tuned, tmp_path):
    """Features of a manifest without `alexnet_precision` came from AlexNets not rounded to fp16: new videos
    would be embedded by other weights, so extract, predict, export and the joint pass refuse the cache."""
    cache = tmp_path / "cache"
    shutil.copytree(tuned, cache)
    path = cache / "features" / "manifest.json"
    manifest_json = json.loads(path.read_text())
    assert manifest_json["settings"].pop("alexnet_precision") == "fp16"
    path.write_text(json.dumps(manifest_json))
    expected = f"{cache / 'features'}: made by an older avemo (AlexNet weights not in fp16): extract again into a new cache"
    with pytest.raises(AvemoError) as refused:
        extract(manifest(videos, "a.csv"), cache, TINY)
    assert str(refused.value) == expected
    settings = ShardStore(cache / "features", "features").settings
    for refuse in (lambda: cache_embedder(cache), lambda: feature_alexnets(cache, settings)):
        with pytest.raises(AvemoError) as refused:
            refuse()
        assert str(refused.value) == expected
