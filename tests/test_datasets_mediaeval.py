"""The MediaEval 2015 release read as distributed: real rows, real line ends, real quirks.

Rows of ACCEDEsets.txt are copied byte for byte from the authentic file (CRLF); the affect, mapping and
description files follow the formats of the dataset's Readme, written once with LF and once with CRLF,
with and without `.mp4` in the name column.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from avemo.cli import main
from avemo.datasets.manifest import read_manifest, write_manifest
from avemo.datasets.mediaeval import load_mediaeval
from avemo.datasets.sample import _write_mediaeval_annotations
from avemo.errors import AvemoError

# Authentic rows (ACCEDEsets.txt: header, two learning clips, a test clip, a validation clip), CRLF.
ACCEDE_SETS = (
    b"id\tname\tset\r\n0\tACCEDE00000.mp4\t1\r\n1\tACCEDE00001.mp4\t1\r\n397\tACCEDE00397.mp4\t0\r\n503\tACCEDE00503.mp4\t2\r\n"
)
# The affect files' format (Readme: id name valenceClass arousalClass), LF, names with .mp4.
ACCEDE_AFFECT = (
    b"id\tname\tvalenceClass\tarousalClass\n0\tACCEDE00000.mp4\t0\t-1\n1\tACCEDE00001.mp4\t1\t-1\n"
    b"397\tACCEDE00397.mp4\t-1\t1\n503\tACCEDE00503.mp4\t-1\t0\n"
)
# MEDIAEVAL clips: ids restart at 0 (they collide with ACCEDE's), CRLF, names without .mp4.
MEDIAEVAL_AFFECT = b"id\tname\tvalenceClass\tarousalClass\r\n0\tMEDIAEVAL00000\t-1\t1\r\n1\tMEDIAEVAL00001\t0\t0\r\n"
MEDIAEVAL_SETS = b"id\tname\tset\r\n0\tMEDIAEVAL00000.mp4\t0\r\n1\tMEDIAEVAL00001.mp4\t0\r\n"
# The official split (MEDIAEVAL-mapping.zip): shot id <TAB> clip name, no header. ACCEDE00001 is a
# learning clip in ACCEDEsets but a test clip of MediaEval 2015: the two splits differ.
SHOTS_DEV = b"SHOT_000000\tACCEDE00000.mp4\nSHOT_000001\tACCEDE00503.mp4\n"
SHOTS_TEST = (
    b"SHOT_006144\tACCEDE00001\r\nSHOT_006145\tACCEDE00397\r\nSHOT_006146\tMEDIAEVAL00000\r\nSHOT_006147\tMEDIAEVAL00001\r\n"
)
# The Readme's example <media>, plus one more clip.
ACCEDE_DESCRIPTION = b"""<?xml version="1.0" encoding="UTF-8"?>
<ACCEDEdescription>
  <media>
    <id>0</id>
    <name>ACCEDE00000.mp4</name>
    <license>20 Mississippi shared under Creative Commons Attribution-NonCommercial 3.0 Unported licence at http://vimeo.com/20043857</license>
    <movie>20_Mississippi.mp4</movie>
    <start>833</start>
    <end>1094</end>
  </media>
  <media>
    <id>1</id>
    <name>ACCEDE00001.mp4</name>
    <movie>20_Mississippi.mp4</movie>
    <start>1095</start>
    <end>1300</end>
  </media>
</ACCEDEdescription>
"""
NAMES = ["ACCEDE00000", "ACCEDE00001", "ACCEDE00397", "ACCEDE00503", "MEDIAEVAL00000", "MEDIAEVAL00001"]


def make_release(root: Path, mapping: bool = True, videos: bool = True) -> Path:
    """A tiny release laid out as the zips unpack: data/, annotations/, XMLs and mapping at the top."""
    (root / "annotations").mkdir(parents=True)
    files = {
        "annotations/ACCEDEaffect.txt": ACCEDE_AFFECT,
        "annotations/ACCEDEsets.txt": ACCEDE_SETS,
        "annotations/MEDIAEVALaffect.txt": MEDIAEVAL_AFFECT,
        "annotations/MEDIAEVALsets.txt": MEDIAEVAL_SETS,
        "ACCEDEdescription.xml": ACCEDE_DESCRIPTION,
    }
    if mapping:
        files |= {"shots-devset-nl.txt": SHOTS_DEV, "shots-testset-nl.txt": SHOTS_TEST}
    for name, data in files.items():
        (root / name).write_bytes(data)
    if videos:
        (root / "data").mkdir()
        for name in NAMES:  # existence is all the loader checks; decoding is extract's job
            (root / "data" / f"{name}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    return root


def by_id(dataset):
    return {c.clip_id: c for c in dataset.clips}


def test_official_split_from_the_mapping_files(tmp_path):
    ds = load_mediaeval(make_release(tmp_path))
    clips = by_id(ds)
    assert [c.clip_id for c in ds.clips] == [f"data/{n}.mp4" for n in ("ACCEDE00000", "ACCEDE00503", *NAMES[1:3], *NAMES[4:])]
    assert {k: c.split for k, c in clips.items()} == {
        "data/ACCEDE00000.mp4": "train",
        "data/ACCEDE00503.mp4": "train",
        "data/ACCEDE00001.mp4": "test",  # learning in ACCEDEsets, test in MediaEval 2015
        "data/ACCEDE00397.mp4": "test",
        "data/MEDIAEVAL00000.mp4": "test",
        "data/MEDIAEVAL00001.mp4": "test",
    }
    # labels come from the clip's own affect file although ids 0 and 1 are in both
    assert (clips["data/ACCEDE00000.mp4"].valence, clips["data/ACCEDE00000.mp4"].arousal) == (0, -1)
    assert (clips["data/MEDIAEVAL00000.mp4"].valence, clips["data/MEDIAEVAL00000.mp4"].arousal) == (-1, 1)
    assert clips["data/ACCEDE00001.mp4"].meta == {
        "source": "ACCEDE",
        "id": "1",
        "shot": "SHOT_006144",
        "movie": "20_Mississippi.mp4",
    }
    assert clips["data/ACCEDE00001.mp4"].path == (tmp_path / "data" / "ACCEDE00001.mp4").resolve()
    assert "movie" not in clips["data/MEDIAEVAL00000.mp4"].meta
    assert ds.notes[0].startswith("split: official MediaEval 2015")
    assert "no MEDIAEVALdescription.xml" in " ".join(ds.notes)
    assert ds.missing == []


def test_falls_back_to_the_sets_files_and_says_so(tmp_path):
    ds = load_mediaeval(make_release(tmp_path, mapping=False))
    clips = by_id(ds)
    assert {k: c.split for k, c in clips.items()} == {
        "data/ACCEDE00000.mp4": "train",
        "data/ACCEDE00001.mp4": "train",
        "data/ACCEDE00397.mp4": "test",
        "data/ACCEDE00503.mp4": "train",  # set 2 (validation) joins learning: the FULL learning set
        "data/MEDIAEVAL00000.mp4": "test",
        "data/MEDIAEVAL00001.mp4": "test",
    }
    assert clips["data/ACCEDE00503.mp4"].meta["set"] == "validation"
    assert "not the official MediaEval 2015" in ds.notes[0]


def test_files_one_folder_below_the_root_are_found(tmp_path):
    make_release(tmp_path / "MEDIAEVAL-2015")
    ds = load_mediaeval(tmp_path)
    assert len(ds.clips) == 6 and ds.missing == []
    assert ds.clips[0].clip_id == "MEDIAEVAL-2015/data/ACCEDE00000.mp4"


def test_reads_the_sample_corpus_annotations(tmp_path):
    """The sample writer's MediaEval files give the same clips as its clips.csv (sets fallback)."""
    rows = [
        {
            "path": f"data/ACCEDE{i:05d}.mp4",
            "arousal": i % 3 - 1,
            "valence": (i // 3) % 3 - 1,
            "split": "test" if i >= 4 else "train",
        }
        | {"movie": f"Sample_Movie_{i // 2:03d}.mp4", "id": i, "frames": 250}
        for i in range(6)
    ]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "data").mkdir()
    _write_mediaeval_annotations(tmp_path / "annotations", rows)
    write_manifest(tmp_path / "clips.csv", rows)
    for r in rows:
        (tmp_path / r["path"]).write_bytes(b"")
    from_csv = read_manifest(tmp_path / "clips.csv")
    ds = load_mediaeval(tmp_path)
    assert [(c.clip_id, c.arousal, c.valence, c.split, c.meta["movie"]) for c in ds.clips] == [
        (c.clip_id, c.arousal, c.valence, c.split, c.meta["movie"]) for c in from_csv
    ]
    assert "LIRIS-ACCEDE sets files are used" in ds.notes[0]


def replace_in(root: Path, name: str, old: bytes, new: bytes) -> Path:
    path = root / name
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "name, old, new, line, message",
    [
        (
            "annotations/ACCEDEaffect.txt",
            b"ACCEDE00397.mp4\t-1\t1",
            b"ACCEDE00397.mp4\t-1\t2",
            4,
            "arousalClass must be -1, 0 or 1, got '2'",
        ),
        (
            "annotations/ACCEDEaffect.txt",
            b"503\tACCEDE00503",
            b"397\tACCEDE00503",
            5,
            "duplicate id '397', already used on line 4",
        ),
        ("annotations/ACCEDEaffect.txt", b"503\tACCEDE00503", b"503\tACCEDE00397", 5, "duplicate clip 'ACCEDE00397.mp4'"),
        (
            "annotations/MEDIAEVALaffect.txt",
            b"MEDIAEVAL00001",
            b"ACCEDE00000",
            3,
            "duplicate clip 'ACCEDE00000.mp4', already labelled at",
        ),
        ("annotations/ACCEDEaffect.txt", b"arousalClass", b"arousalRank", 1, "unknown column 'arousalRank'"),
        ("annotations/ACCEDEaffect.txt", b"\tarousalClass", b"", 1, "missing column 'arousalClass'"),
        ("annotations/ACCEDEaffect.txt", b"\t0\t-1\n", b"\t0\n", 2, "3 fields, expected 4"),
        ("shots-testset-nl.txt", b"ACCEDE00397", b"ACCEDE00503", 2, "clip 'ACCEDE00503.mp4' is listed in both splits (train at"),
        ("shots-testset-nl.txt", b"ACCEDE00397", b"ACCEDE00999", 2, "clip 'ACCEDE00999.mp4' has no labels"),
        ("shots-testset-nl.txt", b"SHOT_006145", b"SHOT_006144", 2, "duplicate shot id 'SHOT_006144', first on line 1"),
        ("shots-devset-nl.txt", b"\tACCEDE00503.mp4", b" x ACCEDE00503.mp4", 2, "3 fields, expected 2"),
        ("ACCEDEdescription.xml", b"</media>\n  <media>", b"</medi>\n  <media>", 10, "not well-formed XML"),
    ],
)
def test_bad_input_names_file_line_and_problem(tmp_path, name, old, new, line, message):
    path = replace_in(make_release(tmp_path), name, old, new)
    with pytest.raises(AvemoError) as error:
        load_mediaeval(tmp_path)
    assert f"{path}:{line}: " in str(error.value) and message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "name, old, new, message",
    [
        (
            "annotations/ACCEDEsets.txt",
            b"\t2\r\n",
            b"\t3\r\n",
            ":5: set must be 1 (learning), 2 (validation) or 0 (test), got '3'",
        ),
        (
            "annotations/ACCEDEsets.txt",
            b"503\tACCEDE00503.mp4\t2\r\n",
            b"",
            "ACCEDEaffect.txt:5: clip 'ACCEDE00503.mp4' is not in",
        ),
        ("annotations/ACCEDEsets.txt", b"ACCEDE00503", b"ACCEDE00777", ":5: clip 'ACCEDE00777.mp4' has no labels"),
    ],
)
def test_bad_sets_file_in_the_fallback(tmp_path, name, old, new, message):
    replace_in(make_release(tmp_path, mapping=False), name, old, new)
    with pytest.raises(AvemoError, match=None) as error:
        load_mediaeval(tmp_path)
    assert message in str(error.value)


def test_one_mapping_file_alone_is_refused(tmp_path):
    make_release(tmp_path)
    (tmp_path / "shots-testset-nl.txt").unlink()
    with pytest.raises(AvemoError, match=r"shots-devset-nl\.txt: found, but shots-testset-nl\.txt is missing"):
        load_mediaeval(tmp_path)


def test_empty_mapping_file_is_an_empty_split(tmp_path):
    make_release(tmp_path)
    (tmp_path / "shots-devset-nl.txt").write_bytes(b"\r\n")
    with pytest.raises(AvemoError, match=r"shots-devset-nl\.txt: empty split"):
        load_mediaeval(tmp_path)


def test_no_affect_file_is_refused(tmp_path):
    with pytest.raises(AvemoError, match="no ACCEDEaffect.txt or MEDIAEVALaffect.txt"):
        load_mediaeval(tmp_path)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_summary_command_reports_splits_classes_movies_and_missing_files(tmp_path):
    make_release(tmp_path)
    (tmp_path / "data" / "MEDIAEVAL00001.mp4").unlink()
    result = run("datasets", "summary", "--dataset", "mediaeval", "--root", tmp_path)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "train: 2 clips" in out and "test: 4 clips" in out
    assert "arousal  calm 1 (25.00%), neutral 1 (25.00%), active 2 (50.00%); majority 'active' 50.00%" in out
    assert "baseline arousal: always 'calm' (train's majority) scores 25.00% on test" in out  # a tie → the lower class
    assert "movie: 1 (train 1, test 1; 1 in both splits; in both splits: 20_Mississippi.mp4)" in out
    assert "files: 1 of 6 missing: data/MEDIAEVAL00001.mp4" in out


def test_extract_refuses_to_start_on_bad_input(tmp_path):
    root = make_release(tmp_path / "release")
    replace_in(root, "annotations/ACCEDEaffect.txt", b"\t-1\t1\n", b"\t-1\t5\n")
    result = run("extract", "--dataset", "mediaeval", "--root", root, "--cache", tmp_path / "cache")
    assert result.exit_code == 1
    assert result.output == f"Error: {root / 'annotations/ACCEDEaffect.txt'}:4: arousalClass must be -1, 0 or 1, got '5'\n"
    assert not (tmp_path / "cache").exists()


def test_extract_refuses_missing_video_files_naming_where_they_are_listed(tmp_path):
    root = make_release(tmp_path / "release")
    (root / "data" / "ACCEDE00397.mp4").unlink()
    (root / "data" / "MEDIAEVAL00000.mp4").unlink()
    result = run("extract", "--dataset", "mediaeval", "--root", root, "--cache", tmp_path / "cache")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {root / 'shots-testset-nl.txt'}:2: video file ")
    assert "ACCEDE00397.mp4 does not exist (and 1 more;" in result.output
    assert not (tmp_path / "cache").exists()


def test_extract_needs_exactly_one_dataset(tmp_path):
    result = run("extract", "--cache", tmp_path / "cache")
    assert result.exit_code == 1 and result.output.startswith("Error: no dataset given; give one of --manifest CSV")
    result = run(
        "extract", "--manifest", tmp_path / "m.csv", "--dataset", "mediaeval", "--root", tmp_path, "--cache", tmp_path / "c"
    )
    assert result.exit_code == 1 and "both --manifest and --dataset mediaeval given" in result.output
    result = run("extract", "--dataset", "mediaeval", "--cache", tmp_path / "cache")
    assert result.exit_code == 1 and "--dataset mediaeval needs --root DIR" in result.output
