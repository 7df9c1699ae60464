"""The validation split: fixed at extraction, left out of fine-tuning, used by the trainer; small data."""

import contextlib
import io
import json
import random
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from avemo.cache import ShardStore
from avemo.cli import main
from avemo.datasets.groups import hold_out
from avemo.datasets.manifest import read_manifest, write_manifest
from avemo.errors import AvemoError
from avemo.extract.alexnet import build_alexnet
from avemo.extract.finetune import FinetuneSettings
from avemo.extract.pipeline import ExtractSettings, extract
from avemo.train.heads import HeadSettings
from avemo.train.trainer import TrainSettings, train

from helpers import make_clip

# 11 train clips from 3 movies (every movie holds every class and a clip with sound), one test clip
MOVIES = {"M1": [-1, 0, 1, -1], "M2": [0, 1, -1, 1], "M3": [1, -1, 0]}
CLIPS = [(f"{m.lower()}{k}", m, a) for m, labels in MOVIES.items() for k, a in enumerate(labels)]
MUTE = "m31"  # a clip without an audio stream
FRACTION = 0.4  # at 10% no whole movie fits (see test_small_data_*): 40% holds out one whole movie
TUNE = FinetuneSettings(epochs=1, batch_size=8, validation=FRACTION)
# the tiny AlexNet-shaped network (fc7 64 wide): the split's plumbing, not AlexNet, is what is tested here
SETTINGS = ExtractSettings(weights="tiny", clips_per_shard=4, batch_size=8, workers=1, finetune=TUNE)
HEAD = TrainSettings(head=HeadSettings(hidden=16, lstm_hidden=8, mlp_hidden=8), epochs=1, batch_size=4, device="cpu")


def write_corpus(root, changed=()):
    """The corpus in root/; the clips in `changed` get other pictures, other sound and another label."""
    (root / "v").mkdir(parents=True)
    rows = []
    for i, (name, movie, arousal) in enumerate(CLIPS):
        other = name in changed
        audio = None if name == MUTE else (2500 if other else 300) + 100 * i
        make_clip(root / f"v/{name}.mp4", seconds=1.2, seed=100 + i if other else i, audio_hz=audio)
        rows.append({"path": f"v/{name}.mp4", "arousal": (arousal + 2) % 3 - 1 if other else arousal, "split": "train"})
        rows[-1] |= {"valence": "", "movie": movie}
    make_clip(root / "v/t.mp4", seconds=1.2, seed=50, audio_hz=700)
    rows.append({"path": "v/t.mp4", "arousal": 0, "valence": "", "split": "test", "movie": "M4"})
    write_manifest(root / "clips.csv", rows)
    return read_manifest(root / "clips.csv")


def expected_split(fraction=FRACTION):
    ids = [f"v/{n}.mp4" for n, _, _ in CLIPS]
    return hold_out(ids, [a for _, _, a in CLIPS], [m for _, m, _ in CLIPS], [n != MUTE for n, _, _ in CLIPS], fraction, 0)


def extract_quietly(clips, cache, settings=SETTINGS):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        extract(clips, cache, settings)
    return out.getvalue()


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """Cache `a` of the corpus, and cache `b` of the same corpus but with every validation clip changed."""
    root = tmp_path_factory.mktemp("validation")
    held = expected_split()
    out = {"a": root / "a" / "cache", "b": root / "b" / "cache"}
    out["a_output"] = extract_quietly(write_corpus(root / "a"), out["a"])
    extract_quietly(write_corpus(root / "b", changed={c.split("/")[1][:-4] for c in held.clips}), out["b"])
    return out


def settings_of(cache):
    return ShardStore(cache / "features", "features").settings


def test_the_split_is_recorded_and_fine_tuning_never_reads_a_validation_clip(caches):
    held = expected_split()
    assert held.method == "movies" and held.movies == 1 and 0 < len(held.clips) <= 2 * FRACTION * 11
    a, b = settings_of(caches["a"]), settings_of(caches["b"])
    assert a["validation"] == held.record() == b["validation"]  # same ids and labels' counts do not matter
    listed = json.loads((caches["a"] / "features" / "validation.json").read_text())
    assert listed["clips"] == list(held.clips) and listed["sha256"] == held.sha256
    assert f"validation: {held.describe()}, left out of fine-tuning" in caches["a_output"]
    # other pictures, sound and labels of every validation clip: bit-identical tuned weights and train features
    assert a["tuned_sha256"] == b["tuned_sha256"] and a["finetune_train"] == b["finetune_train"]
    tuned, start = torch.load(caches["a"] / "models" / "visual.pt", weights_only=True), build_alexnet("tiny").state_dict()
    assert not torch.equal(tuned["classifier.4.weight"], start["classifier.4.weight"])  # and tuning did move fc7
    models = json.loads((caches["a"] / "models" / "manifest.json").read_text())
    fitting = 11 - len(held.clips)  # one second each
    assert models["models"]["visual"]["train_seconds"] == fitting and models["models"]["audio"]["train_seconds"] == fitting - (
        f"v/{MUTE}.mp4" not in held.clips
    )
    assert models["settings"]["validation"] == held.record()
    index = ShardStore(caches["a"] / "features", "features").read_index()
    for modality in ("visual", "audio"):
        fa = ShardStore(caches["a"] / "features", "features").read_seconds(modality)
        fb = ShardStore(caches["b"] / "features", "features").read_seconds(modality)
        for clip, offset in zip(index["clip_id"], index["offset"]):
            same = np.array_equal(fa[offset], fb[offset])
            assert same == (clip not in held.clips or (modality == "audio" and clip.endswith(f"{MUTE}.mp4"))), clip


def test_the_trainer_uses_the_caches_split(caches, tmp_path, capsys):
    held = expected_split()
    train(caches["a"], tmp_path / "run", ["visual"], HEAD)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["validation_clips"] == list(held.clips)
    assert torch.load(tmp_path / "run" / "visual" / "model.pt", weights_only=True)["validation"] == list(held.clips)
    assert json.loads((tmp_path / "run" / "visual" / "settings.json").read_text())["validation"] == FRACTION
    out = capsys.readouterr().out
    assert f"validation: {held.describe()}, fixed at extraction (fine-tuning never saw them)" in out
    assert f"train: {11 - len(held.clips)} clips to fit, {len(held.clips)} for validation" in out

    # 0 keeps the last epoch; another fraction or seed is refused (fine-tuning saw those clips)
    train(caches["a"], tmp_path / "zero", ["visual"], replace(HEAD, validation=0))
    assert json.loads((tmp_path / "zero" / "run.json").read_text())["validation_clips"] == []
    for other in ({"validation": 0.2}, {"validation_seed": 1}):
        with pytest.raises(AvemoError, match=r"--validation 0\.(2|4 with seed 1): the AlexNets of .* give --validation 0\.4"):
            train(caches["a"], tmp_path / "other", ["visual"], replace(HEAD, **other))


def test_a_cache_made_before_splits_were_recorded_is_split_by_the_trainer_with_a_note(caches, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(caches["a"], cache)
    manifest = json.loads((cache / "features" / "manifest.json").read_text())
    del manifest["settings"]["validation"]
    (cache / "features" / "manifest.json").write_text(json.dumps(manifest))
    (cache / "features" / "validation.json").unlink()
    train(cache, tmp_path / "run", ["visual"], HEAD)
    out = capsys.readouterr().out
    assert "note: " in out and "its AlexNets saw these" in out and "extract again" in out
    held = expected_split(0.1)  # the trainer's default
    assert json.loads((tmp_path / "run" / "run.json").read_text())["validation_clips"] == list(held.clips)


def test_another_split_is_refused_by_extract(caches):
    before = (caches["a"] / "features" / "validation.json").read_text()
    args = ["extract", "--manifest", caches["a"].parent / "clips.csv", "--cache", caches["a"], "--weights", "tiny"]
    args += ["--finetune-epochs", "1", "--finetune-batch-size", "8", "--validation", "0.2"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Error: " in result.output and "made with --validation 0.4 --validation-seed 0" in result.output
    assert "not --validation 0.2" in result.output and "delete" in result.output
    assert (caches["a"] / "features" / "validation.json").read_text() == before


# -- small data, on the split alone ------------------------------------------------------------------
def test_small_data_11_clips_3_movies_at_10_percent_holds_out_one_clip_and_says_why():
    held = expected_split(0.1)
    assert len(held.clips) == 1 and held.method == "stratified"
    assert held.describe().startswith("1 of 11 train clips (9.1%; asked 10%), stratified by class: no whole movie fits")
    no_movies = hold_out([f"c{i}" for i in range(11)], [i % 3 for i in range(11)], [""] * 11, [True] * 11, 0.1)
    assert len(no_movies.clips) == 1 and "name no movie" in no_movies.reason
    few = hold_out(["a", "b", "c", "d"], [0, 1, 2, 0], [""] * 4, [True] * 4, 0.1)  # one clip would be 25% > 2 × 10%
    assert few.clips == () and "over twice the asked 10%" in few.describe()


def test_the_split_stays_near_the_fraction_keeps_sound_and_classes_in_training_and_is_deterministic():
    rng = random.Random(0)
    for trial in range(300):
        n = rng.randint(2, 60)
        fraction = rng.choice([0.05, 0.1, 0.2, 0.3])
        ids = [f"c{i:03d}" for i in range(n)]
        labels = [rng.randint(0, 2) for _ in range(n)]
        sizes = rng.choice([0, 1, 3, 8])
        movies = [f"m{rng.randint(0, sizes)}" if sizes else "" for _ in range(n)]
        audio = [rng.random() < 0.3 for _ in range(n)]
        held = hold_out(ids, labels, movies, audio, fraction, seed=trial)
        k = len(held.clips)
        assert k <= 2 * fraction * n + 1e-9, (n, fraction, held)
        assert k > 0 or 2 * fraction * n < 1, (n, fraction, held)
        fitting = [i for i in range(n) if ids[i] not in held.clips]
        assert any(audio[i] for i in fitting) or not any(audio)  # the audio model keeps a clip with sound
        if held.method == "stratified" and k <= sum(labels.count(c) - 1 for c in set(labels)):
            assert {labels[i] for i in fitting} == set(labels)  # every class stays in training
        if held.method == "movies":
            assert {labels[i] for i in fitting} == set(labels)
            assert all(
                (ids[i] in held.clips) == (ids[j] in held.clips) for i in range(n) for j in range(n) if movies[i] == movies[j]
            )
        order = list(range(n))
        rng.shuffle(order)
        again = hold_out(*([x[i] for i in order] for x in (ids, labels, movies, audio)), fraction, seed=trial)
        assert again == held  # any input order (shards, workers, ranks): the same split
        coded = hold_out(ids, [label - 1 for label in labels], movies, audio, fraction, seed=trial)
        assert coded.clips == held.clips  # arousal -1/0/1 (extraction) or class 0/1/2 (trainer): the same split
