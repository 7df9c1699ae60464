"""The user's own CSV: group column, validation splits that keep a movie whole, and the checks before extract."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from avemo.cli import main
from avemo.datasets.dataset import Dataset
from avemo.datasets.groups import groups_in_both, validation_split
from avemo.datasets.manifest import check_splits, read_manifest
from avemo.datasets.summary import majority, summarize
from avemo.errors import AvemoError


def write_csv(folder: Path, text: str, files: bool = True) -> Path:
    path = folder / "clips.csv"
    path.write_text(text)
    if files:
        for line in text.splitlines()[1:]:
            (folder / line.split(",")[0]).write_bytes(b"")
    return path


def movies_csv(n_movies: int = 10, per_movie: int = 4) -> str:
    rows = ["path,arousal,valence,split,film"]
    for m in range(n_movies):
        for k in range(per_movie):
            rows.append(f"m{m}_{k}.mp4,{(m + k) % 3 - 1},,{'test' if m >= 8 else 'train'},Film {m}")
    return "\n".join(rows) + "\n"


def test_validation_split_keeps_each_group_on_one_side(tmp_path):
    clips = read_manifest(write_csv(tmp_path, movies_csv()))
    val = validation_split(clips, fraction=0.25, group="film", seed=3)
    train = [c for c in clips if c.split == "train"]
    assert 0 < len(val) < len(train) and len(val) % 4 == 0  # whole films of 4 clips
    for film in {c.meta["film"] for c in train}:
        sides = {c.clip_id in val for c in train if c.meta["film"] == film}
        assert len(sides) == 1, film
    assert not any(c.clip_id in val for c in clips if c.split == "test")
    assert validation_split(clips, fraction=0.25, group="film", seed=3) == val  # deterministic


def test_clips_without_a_group_are_groups_of_their_own(tmp_path):
    clips = read_manifest(write_csv(tmp_path, "path,arousal,valence,split\na.mp4,0,0,train\nb.mp4,1,0,train\nc.mp4,0,0,test\n"))
    assert len(validation_split(clips, fraction=0.5, group="movie")) == 1


def test_groups_in_both_splits_are_reported(tmp_path):
    text = "path,arousal,valence,split,movie\na.mp4,0,0,train,M1\nb.mp4,1,0,test,M1\nc.mp4,0,0,test,M2\n"
    clips = read_manifest(write_csv(tmp_path, text))
    assert groups_in_both(clips) == ["M1"]
    assert "movie: 2 (train 1, test 2; 1 in both splits; in both splits: M1)" in summarize(Dataset("x", clips))


def test_misspelt_required_column_is_named(tmp_path):
    with pytest.raises(AvemoError, match=r":1: missing column\(s\) valence \(unknown column 'valance': misspelt 'valence'\?\)"):
        read_manifest(write_csv(tmp_path, "path,arousal,valance,split\na.mp4,0,0,train\n", files=False))


def test_a_clip_in_both_splits_says_so(tmp_path):
    with pytest.raises(
        AvemoError, match=r":3: clip 'a.mp4' already listed on line 2 \(listed in both splits: train there, test here\)"
    ):
        read_manifest(write_csv(tmp_path, "path,arousal,valence,split\na.mp4,0,0,train\na.mp4,0,0,test\n", files=False))


def test_empty_split_is_refused(tmp_path):
    path = write_csv(tmp_path, "path,arousal,valence,split\na.mp4,0,0,train\n")
    with pytest.raises(AvemoError, match="empty split: no clip is in the test split"):
        check_splits(read_manifest(path), path)


def test_majority_ties_go_to_the_lower_class():
    assert majority({-1: 2, 0: 2, 1: 1}) == (-1, 0.4)
    assert majority({1: 3, None: 5}) == (1, 1.0)  # unknown labels are not counted


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_summary_of_a_csv_with_unknown_valence_and_a_group_column(tmp_path):
    path = write_csv(tmp_path, movies_csv())
    (tmp_path / "m0_0.mp4").unlink()
    result = run("datasets", "summary", "--manifest", path, "--group", "film")
    assert result.exit_code == 0, result.output
    assert "train: 32 clips" in result.output and "test: 8 clips" in result.output
    assert "valence  unknown for all clips" in result.output
    assert "film: 10 (train 8, test 2; 0 in both splits)" in result.output
    assert "files: 1 of 40 missing: m0_0.mp4" in result.output


def test_summary_refuses_an_unknown_group_column(tmp_path):
    path = write_csv(tmp_path, movies_csv())
    result = run("datasets", "summary", "--manifest", path, "--group", "movie")
    assert result.exit_code == 1
    assert result.output == f"Error: {path}: unknown column 'movie'; the metadata columns are: film\n"


def test_extract_refuses_an_empty_split_before_any_work(tmp_path):
    path = write_csv(tmp_path, "path,arousal,valence,split\na.mp4,0,0,train\n")
    result = run("extract", "--dataset", "csv", "--manifest", path, "--cache", tmp_path / "cache")
    assert result.exit_code == 1
    assert result.output == f"Error: {path}: empty split: no clip is in the test split; both train and test need clips\n"
    assert not (tmp_path / "cache").exists()
