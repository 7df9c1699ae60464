"""Issue 12 (the run part): a run never mixes caches, bad weights or features are refused, evaluate never averages
unequal things, z-scores stay finite in fp16, user-caused file problems are one `Error:` line, and no write goes
through a planted symbolic link. Real HDF5 caches (helpers.write_feature_cache), real tiny training runs."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from avemo.atomic import save_torch, write_text
from avemo.cache import ShardStore
from avemo.cache.store import read_shard_index
from avemo.cli import main
from avemo.errors import AvemoError
from avemo.evaluate.report import evaluate
from avemo.train.data import Z_LIMIT, Standardiser, load_features
from avemo.train.heads import HeadSettings
from avemo.train.trainer import TrainSettings, train

from helpers import torch_threads, write_feature_cache

TINY = TrainSettings(
    head=HeadSettings(feature_dim=32, hidden=8, lstm_hidden=8, mlp_hidden=8), epochs=2, lr=0.05, batch_size=16, device="cpu"
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one torch thread (see helpers.torch_threads)."""
    with torch_threads(1):
        yield


def rewrite_cache(source: Path, dest: Path, change) -> Path:
    """A new, consistent cache (manifest and sha256s of its own) with the features of `source` after
    `change(shard_number, index, arrays)`."""
    old = ShardStore(source / "features", "features")
    store = ShardStore(dest / "features", "features")
    store.check_settings(old.settings)
    for number, (_, path) in enumerate(old.shards()):
        with h5py.File(path, "r") as f:
            index = read_shard_index(f)
            arrays = {m: f[m][()] for m in ("visual", "audio")}
        change(number, index, arrays)
        store.add_shard(index, arrays)
    return dest


def noisier(number, index, arrays):
    rng = np.random.default_rng(number)
    for values in arrays.values():
        values += rng.normal(0, 0.5, values.shape).astype(np.float16)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Cache A, cache B (the same clips, labels and splits; other features), a run of A (visual, modal) and a
    run of A with two seeds."""
    root = tmp_path_factory.mktemp("integrity")
    write_feature_cache(root / "a", n_clips=30)
    rewrite_cache(root / "a", root / "b", noisier)
    train(root / "a", root / "run", ["visual", "modal"], TINY)
    train(root / "a", root / "seeds", ["modal"], TINY, seeds=[0, 1])
    return root


def copy_run(base: Path, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(base / name, tmp_path / name))


def cli_error(*args) -> str:
    """Run avemo; it must fail with exit status 1 and exactly one `Error:` line, no traceback. Returns the line."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert "weights_only" not in result.output  # never torch's advice to load unsafely
    return errors[0]


def files(run: Path, names=("run.json", "modal/model.pt", "modal/last.pt", "modal/predictions.csv")) -> dict:
    return {name: (run / name).read_bytes() for name in names}


# -- 1. one run, one cache ----------------------------------------------------------------------------
def test_a_run_trained_again_on_another_cache_is_refused_and_left_as_it_was(base, tmp_path):
    run = copy_run(base, tmp_path)
    before = files(run)
    with pytest.raises(AvemoError, match=rf"{run} was trained on another cache, {base / 'a'}.*give another --run, or delete"):
        train(base / "b", run, ["modal"], TINY)  # the same clips and settings, other features
    assert files(run) == before
    line = cli_error("train", "--cache", base / "b", "--run", run, "--approach", "modal", "--epochs", "2")
    assert "never mixes two" in line and files(run) == before
    # a model folder without run.json: its checkpoint records the cache, and refuses too
    lone = tmp_path / "lone"
    shutil.copytree(run / "modal", lone / "modal")
    with pytest.raises(AvemoError, match=r"modal: .*other settings \(the cache: another cache, not these features\)"):
        train(base / "b", lone, ["modal"], TINY)
    assert (lone / "modal" / "model.pt").read_bytes() == before["modal/model.pt"]
    assert (lone / "modal" / "predictions.csv").read_bytes() == before["modal/predictions.csv"]


def test_a_cache_extracted_again_at_the_same_path_is_another_cache_for_train_and_predict(base, tmp_path):
    cache = Path(shutil.copytree(base / "a", tmp_path / "cache"))
    run = tmp_path / "run"
    train(cache, run, ["modal"], TINY)
    shutil.rmtree(cache / "features")
    shutil.copytree(base / "b" / "features", cache / "features")  # "extracted again": same path, other features
    with pytest.raises(AvemoError, match=rf"the features of {cache} changed since {run} was trained on them"):
        train(cache, run, ["modal"], TINY)
    line = cli_error("predict", "--run", run, tmp_path / "any.mp4")
    assert f"{cache / 'features'} now holds" in line and "run.json: trained on features" in line


# -- 2. non-finite or half-precision weights, non-finite features ---------------------------------------
def test_alexnet_weights_with_nan_are_refused_and_fp16_weights_are_used_as_fp32(tmp_path):
    from avemo.extract.alexnet import Fc7, build_alexnet

    # an AlexNet-shaped state dict (the tiny widths: the file's widths are read from its shapes)
    state = {k: v.half() for k, v in build_alexnet("tiny").state_dict().items()}
    torch.save(state, tmp_path / "half.pt")
    model = build_alexnet(str(tmp_path / "half.pt"))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.equal(model.classifier[1].weight, state["classifier.1.weight"].float())  # exact
    fc7 = Fc7(model)(torch.zeros(1, 256, 256, 3, dtype=torch.uint8))
    assert fc7.dtype == torch.float32 and bool(torch.isfinite(fc7).all())
    state["classifier.4.weight"][3, 7] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(AvemoError, match=r"nan.pt: parameter classifier.4.weight holds 1 non-finite value"):
        build_alexnet(str(tmp_path / "nan.pt"))


def test_non_finite_features_are_refused_naming_the_shard_clip_and_second(base, tmp_path):
    def plant(number, index, arrays):
        if number == 1:
            arrays["audio"][int(index["offset"][4]) + 2, 5] = np.inf

    cache = rewrite_cache(base / "a", tmp_path / "cache", plant)
    with pytest.raises(AvemoError, match=r"shard-00001.h5: clip s1/c4.mp4, second 2: its audio features are not finite"):
        load_features(cache)
    line = cli_error("train", "--cache", cache, "--run", tmp_path / "run", "--epochs", "1")
    assert "extract the features again" in line


# -- 3. evaluate never averages unequal things ------------------------------------------------------------
def test_a_duplicated_clip_in_predictions_is_refused(base, tmp_path):
    run = copy_run(base, tmp_path)
    path = run / "modal" / "predictions.csv"
    rows = path.read_text().splitlines()
    test_row = next(r for r in rows if ",test," in r)
    path.write_text("\n".join([*rows, test_row]) + "\n")
    with pytest.raises(AvemoError, match=rf"{path}:{len(rows) + 1}: clip {test_row.split(',')[0]} is listed twice"):
        evaluate(run, quiet=True)


def test_predictions_of_one_run_on_other_clips_are_refused(base, tmp_path):
    run = copy_run(base, tmp_path)
    path = run / "visual" / "predictions.csv"
    rows = path.read_text().splitlines()
    del rows[next(i for i, r in enumerate(rows) if ",train," in r)]  # one train clip fewer: another cache
    path.write_text("\n".join(rows) + "\n")
    differ = r"modal/predictions.csv: its clips \(or their splits\) differ from those of .*visual/predictions.csv"
    with pytest.raises(AvemoError, match=differ):
        evaluate(run, quiet=True)


@pytest.mark.parametrize("damage", ["predictions", "folder"])
def test_half_written_seeds_are_refused(base, tmp_path, damage):
    run = copy_run(base, tmp_path, "seeds")
    assert json.loads((run / "run.json").read_text())["seeds"] == [0, 1]
    if damage == "predictions":  # killed while seed 1 trained
        (run / "modal" / "seed-1" / "predictions.csv").unlink()
    else:  # killed before seed 1 began: only run.json knows it
        shutil.rmtree(run / "modal" / "seed-1")
    with pytest.raises(AvemoError, match=r"modal: half written: modal/seed-1/predictions.csv missing.*it resumes"):
        evaluate(run, quiet=True)
    line = cli_error("evaluate", "--run", run, "--no-plots")
    assert "half written" in line


def test_one_seed_in_two_layouts_is_refused_and_a_missing_approach_is_named(base, tmp_path):
    run = copy_run(base, tmp_path, "seeds")
    shutil.copy(base / "run" / "modal" / "predictions.csv", run / "modal" / "predictions.csv")
    shutil.copy(base / "run" / "modal" / "settings.json", run / "modal" / "settings.json")  # seed 0, one-seed layout
    twice = r"seed-0/predictions.csv: seed 0 of modal is also in .*modal/predictions.csv.*delete one"
    with pytest.raises(AvemoError, match=twice):
        evaluate(run, quiet=True)
    run = copy_run(base, tmp_path / "other")
    (run / "visual" / "predictions.csv").unlink()  # e.g. its training failed: listed in run.json, never written
    results = evaluate(run, quiet=True, plots=False)
    assert results["missing_predictions"] == ["visual"] and list(results["approaches"]) == ["modal"]
    assert "Not scored: visual" in (run / "report.md").read_text()


# -- 4. z-scores in fp16 ------------------------------------------------------------------------------------
def test_a_unit_dead_on_every_train_second_gives_finite_z_scores(base, tmp_path):
    """visual unit 0 is 0 on every train second and 0.07 on one test second: with the old std floor of 1e-6
    its z-score, 70000, overflowed fp16 (max 65504) to inf."""

    def dead_unit(number, index, arrays):
        arrays["visual"][:, 0] = 0
        if number == 0:
            assert index["split"][0] == "test"
            arrays["visual"][0, 0] = 0.07

    assert torch.isinf(torch.tensor(0.07 / 1e-6).half())
    cache = rewrite_cache(base / "a", tmp_path / "cache", dead_unit)
    data = load_features(cache)
    norm = Standardiser.fit(data, "zscore", data.subset("train"))
    assert norm.stats["visual_std"][0] > 1e-4  # floored relative to the other units' scale (~1)
    norm.normalise_in_place(data)
    assert bool(torch.isfinite(data.visual).all()) and 10 < float(data.visual[0, 0]) < Z_LIMIT
    tiny = {f"{m}_{k}": torch.full((32,), v) for m in ("visual", "audio") for k, v in (("mean", 0.0), ("std", 1e-9))}
    assert float(Standardiser(tiny).apply("visual", torch.ones(1, 32)).max()) == Z_LIMIT  # the clamp
    train(cache, tmp_path / "run", ["modal"], TINY)
    rows = list(csv.DictReader(open(tmp_path / "run" / "modal" / "predictions.csv")))
    assert all(np.isfinite(float(r["p_calm"])) for r in rows) and len(rows) == 30


# -- 5. one Error line, never a traceback ----------------------------------------------------------------------
def test_random_bytes_and_malicious_checkpoints_are_one_error_line(base, tmp_path):
    run = copy_run(base, tmp_path)
    (run / "modal" / "last.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    line = cli_error("train", "--cache", base / "a", "--run", run, "--approach", "modal")
    assert f"{run / 'modal' / 'last.pt'}: not a file written by avemo (UnpicklingError)" in line and "delete" in line
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (run / "modal" / "model.pt").write_bytes(pickle.dumps({"model": Evil()}))
    line = cli_error("predict", "--run", run, tmp_path / "any.mp4")
    assert f"{run / 'modal' / 'model.pt'}: not a file written by avemo" in line and "train it again" in line
    assert not marker.exists()  # nothing in it ran


@pytest.mark.parametrize("text", ["{not json", '{"approaches": ["modal"]}', "[1, 2]"])
def test_a_broken_run_json_is_one_error_line(base, tmp_path, text):
    run = copy_run(base, tmp_path)
    (run / "run.json").write_text(text)
    for args in (["predict", "--run", run, tmp_path / "any.mp4"], ["train", "--cache", base / "a", "--run", run]):
        line = cli_error(*args)
        assert f"{run / 'run.json'}: " in line and "delete it" in line
    if text.startswith('{"'):  # valid JSON without the cache: evaluate does not need it
        assert evaluate(run, quiet=True, plots=False)["approaches"]
    else:
        with pytest.raises(AvemoError, match=r"run.json: not (valid JSON|a JSON object)"):
            evaluate(run, quiet=True, plots=False)


def test_predict_refuses_an_unwritable_output_before_any_work(base, tmp_path):
    run = copy_run(base, tmp_path)
    (tmp_path / "file.txt").write_text("a file, not a folder")
    # the cache has no media: had predict started, it would have stopped there instead
    line = cli_error("predict", "--run", run, "-o", tmp_path / "file.txt" / "out.json", tmp_path / "any.mp4")
    assert f"{tmp_path / 'file.txt'} is not a folder" in line
    line = cli_error("predict", "--run", run, "-o", tmp_path / "nowhere" / "out.json", tmp_path / "any.mp4")
    assert "does not exist; create the folder" in line


def test_an_os_error_while_writing_is_one_error_line_naming_the_file(base, tmp_path):
    run = copy_run(base, tmp_path)
    (run / "results.json").mkdir()  # cannot be replaced by a file
    line = cli_error("evaluate", "--run", run, "--no-plots")
    assert f"{run / 'results.json'}: Is a directory" in line
    assert not (run / "results.json.tmp").exists()


# -- 6. no write through a planted link ----------------------------------------------------------------------------
def test_a_planted_report_link_is_refused_and_its_target_kept(base, tmp_path):
    run = copy_run(base, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file")
    (run / "report.md").symlink_to(victim)
    line = cli_error("evaluate", "--run", run, "--no-plots")
    assert f"{run / 'report.md'}: is a symbolic link" in line and victim.read_text() == "the user's file"


def test_a_planted_features_folder_or_file_link_is_never_written_through(base, tmp_path):
    run = copy_run(base, tmp_path)
    victims = tmp_path / "victims"
    victims.mkdir()
    (victims / "visual.npy").write_text("the user's file")
    (run / ".features-rank0").symlink_to(victims)
    with pytest.raises(AvemoError, match=r"\.features-rank0: is a symbolic link"):
        train(base / "a", run, ["modal"], TINY, memory="mmap")
    (run / ".features-rank0").unlink()
    (run / ".features-rank0").mkdir()
    (run / ".features-rank0" / "visual.npy").symlink_to(victims / "visual.npy")  # a link inside: removed, not followed
    train(base / "a", run, ["modal"], TINY, memory="mmap")
    assert (victims / "visual.npy").read_text() == "the user's file" and not (run / ".features-rank0").exists()


def test_the_atomic_writer_refuses_a_link_and_never_follows_one_at_its_temporary_name(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("the user's file")
    (tmp_path / "model.pt").symlink_to(victim)
    with pytest.raises(AvemoError, match=r"model.pt: is a symbolic link"):
        save_torch({"model": {}}, tmp_path / "model.pt")
    (tmp_path / "last.pt.tmp").symlink_to(victim)  # planted at the temporary name
    save_torch({"epoch": 1}, tmp_path / "last.pt")
    (tmp_path / "log.csv.tmp").symlink_to(victim)
    write_text(tmp_path / "log.csv", "epoch\n1\n")
    assert victim.read_text() == "the user's file"
    assert torch.load(tmp_path / "last.pt", weights_only=True) == {"epoch": 1} and not (tmp_path / "last.pt.tmp").exists()
    assert (tmp_path / "log.csv").read_text() == "epoch\n1\n" and not (tmp_path / "log.csv").is_symlink()


def test_a_planted_checkpoint_link_in_a_run_is_refused(base, tmp_path):
    run = copy_run(base, tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("the user's file")
    (run / "modal" / "predictions.csv").unlink()
    (run / "modal" / "predictions.csv").symlink_to(victim)
    with pytest.raises(AvemoError, match=r"modal/predictions.csv: is a symbolic link"):
        train(base / "a", run, ["modal"], TINY)
    assert victim.read_text() == "the user's file"
