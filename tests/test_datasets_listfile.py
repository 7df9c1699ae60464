"""List files as published with later work (`SHOT_006144 0 -1`), copied from the authentic AIMT15 lists."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from avemo.cli import main
from avemo.datasets.listfile import list_split, load_lists
from avemo.errors import AvemoError

# First and last rows of the authentic AIMT15_train.list and the first rows of AIMT15_test.list (LF, no header).
TRAIN = b"SHOT_000000 1 -1\nSHOT_000001 0 -1\nSHOT_000002 -1 -1\nSHOT_006142 -1 1\nSHOT_006143 -1 1\n"
TEST = b"SHOT_006144 0 -1\nSHOT_006145 -1 -1\nSHOT_006146 0 -1\nSHOT_010899 1 0\n"


def make_lists(folder: Path, train: bytes = TRAIN, test: bytes = TEST) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "AIMT15_train.list").write_bytes(train)
    (folder / "AIMT15_test.list").write_bytes(test)
    return folder / "AIMT15_train.list", folder / "AIMT15_test.list"


def test_reads_labels_and_splits_from_the_file_names(tmp_path):
    train, test = make_lists(tmp_path)
    ds = load_lists([str(train), str(test)])
    assert [c.split for c in ds.clips] == ["train"] * 5 + ["test"] * 4
    first = ds.clips[0]
    assert (first.clip_id, first.valence, first.arousal, first.meta) == ("SHOT_000000.mp4", 1, -1, {"shot": "SHOT_000000"})
    assert (ds.clips[-1].valence, ds.clips[-1].arousal) == (1, 0)
    assert not ds.files_checked and ds.missing == []


def test_crlf_and_a_missing_last_newline_read_the_same(tmp_path):
    lf = load_lists([str(make_lists(tmp_path / "lf")[0])]).clips
    crlf = load_lists([str(make_lists(tmp_path / "crlf", train=TRAIN.replace(b"\n", b"\r\n").rstrip())[0])]).clips
    assert [(c.clip_id, c.valence, c.arousal) for c in lf] == [(c.clip_id, c.valence, c.arousal) for c in crlf]


@pytest.mark.parametrize(
    "spec, split",
    [("AIMT15_train.list", "train"), ("AIMT15_test.list", "test"), ("shots-devset.list", "train"), ("test=mine.txt", "test")],
)
def test_split_of_a_list(spec, split):
    assert list_split(spec)[0] == split


def test_a_list_whose_name_says_no_split_must_be_named(tmp_path):
    with pytest.raises(AvemoError, match=r"mine\.list: cannot tell the split .* write train=mine\.list or test=mine\.list"):
        list_split("mine.list")


def test_videos_folder_maps_id_to_id_dot_mp4_or_the_one_file_with_that_stem(tmp_path):
    train, test = make_lists(tmp_path)
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("SHOT_000000.mp4", "SHOT_000001.avi", "SHOT_006144.mp4"):
        (videos / name).write_bytes(b"")
    ds = load_lists([str(train), str(test)], videos=videos)
    ids = [c.clip_id for c in ds.clips]
    assert ids[:2] == ["SHOT_000000.mp4", "SHOT_000001.avi"] and ds.clips[0].path == (videos / "SHOT_000000.mp4").resolve()
    assert len(ds.missing) == 6 and ds.missing[0].clip_id == "SHOT_000002.mp4"


def test_map_file_maps_ids_to_names_relative_to_its_folder(tmp_path):
    train, test = make_lists(tmp_path)
    # the shots-*-nl.txt format: tab separated, no header; ids written as numbers match SHOT_ ids too
    (tmp_path / "map.txt").write_bytes(
        b"SHOT_000000\tdata/ACCEDE00000.mp4\r\n1\tdata/ACCEDE00001\r\nSHOT_000002\tdata/ACCEDE00002.mp4\r\n"
        b"SHOT_006142\tdata/ACCEDE06142.mp4\r\nSHOT_006143\tdata/ACCEDE06143.mp4\r\n"
    )
    ds = load_lists([str(train)], maps=[tmp_path / "map.txt"])
    assert [c.clip_id for c in ds.clips][:2] == ["data/ACCEDE00000.mp4", "data/ACCEDE00001.mp4"]
    assert ds.clips[0].path == (tmp_path / "data" / "ACCEDE00000.mp4").resolve()
    with pytest.raises(AvemoError, match=r"AIMT15_test\.list:1: id 'SHOT_006144' is not in the map file"):
        load_lists([str(train), str(test)], maps=[tmp_path / "map.txt"])


def test_release_root_maps_ids_through_its_shots_files(tmp_path):
    train, test = make_lists(tmp_path / "lists", train=b"SHOT_000000 1 -1\n", test=b"SHOT_006144 0 -1\n")
    root = tmp_path / "release"
    (root / "data").mkdir(parents=True)
    (root / "shots-devset-nl.txt").write_bytes(b"SHOT_000000\tACCEDE00000.mp4\n")
    (root / "shots-testset-nl.txt").write_bytes(b"SHOT_006144\tMEDIAEVAL00000\n")
    (root / "data" / "ACCEDE00000.mp4").write_bytes(b"")
    ds = load_lists([str(train), str(test)], root=root)
    assert [c.clip_id for c in ds.clips] == ["data/ACCEDE00000.mp4", "data/MEDIAEVAL00000.mp4"]
    assert [c.clip_id for c in ds.missing] == ["data/MEDIAEVAL00000.mp4"]


@pytest.mark.parametrize(
    "train, test, where, message",
    [
        (TRAIN, TEST + b"SHOT_000001 0 0\n", "AIMT15_test.list:5", "id 'SHOT_000001' is listed in both splits (train at"),
        (TRAIN + b"SHOT_000001 0 0\n", TEST, "AIMT15_train.list:6", "duplicate id 'SHOT_000001', first on line 2"),
        (
            TRAIN.replace(b"SHOT_000002 -1 -1", b"SHOT_000002 -1 2"),
            TEST,
            "AIMT15_train.list:3",
            "arousal must be -1, 0 or 1, got '2'",
        ),
        (TRAIN.replace(b"SHOT_000002 -1 -1", b"SHOT_000002 high -1"), TEST, "AIMT15_train.list:3", "valence must be"),
        (TRAIN, TEST.replace(b"SHOT_006146 0 -1", b"SHOT_006146 0 -1 x"), "AIMT15_test.list:3", "4 fields, expected 3"),
        (TRAIN, b"\n\n", "AIMT15_test.list", "empty split (no clips listed)"),
    ],
)
def test_bad_lists_name_file_line_and_problem(tmp_path, train, test, where, message):
    paths = make_lists(tmp_path, train, test)
    with pytest.raises(AvemoError) as error:
        load_lists([str(p) for p in paths])
    assert str(error.value).startswith(str(tmp_path / where) + ":") and message in str(error.value)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_summary_of_two_lists(tmp_path):
    train, test = make_lists(tmp_path)
    result = run("datasets", "summary", "--list", train, "--list", test)
    assert result.exit_code == 0, result.output
    assert "train: 5 clips" in result.output and "test: 4 clips" in result.output
    assert "arousal  calm 3 (75.00%), neutral 1 (25.00%), active 0 (0.00%); majority 'calm' 75.00%" in result.output
    assert "files: not checked" in result.output


def test_extract_refuses_lists_without_a_way_to_find_the_files(tmp_path):
    train, test = make_lists(tmp_path)
    result = run("extract", "--list", train, "--list", test, "--cache", tmp_path / "cache")
    assert result.exit_code == 1
    assert "no way to find the video files; give --videos DIR, --map FILE or --root DIR" in result.output
    result = run("extract", "--list", train, "--videos", tmp_path, "--cache", tmp_path / "cache")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "empty split: no clip is in the test split" in result.output
    assert not (tmp_path / "cache").exists()
