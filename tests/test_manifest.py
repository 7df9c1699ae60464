from pathlib import Path

import pytest

from avemo.datasets.manifest import check_files, read_manifest, write_manifest
from avemo.errors import AvemoError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clips.csv"
    path.write_text(text)
    return path


def test_reads_clips_with_metadata_and_relative_paths(tmp_path):
    path = write(tmp_path, "path,arousal,valence,split,movie\nsub/a.mp4,-1,1,train,M1\nb.mp4,1,,TEST,M2\n")
    clips = read_manifest(path)
    assert [c.clip_id for c in clips] == ["sub/a.mp4", "b.mp4"]
    assert clips[0].path == (tmp_path / "sub" / "a.mp4").resolve()
    assert (clips[0].arousal, clips[0].valence, clips[0].split, clips[0].meta) == (-1, 1, "train", {"movie": "M1"})
    assert (clips[1].arousal, clips[1].valence, clips[1].split) == (1, None, "test")


def test_same_file_name_in_two_folders_are_two_clips(tmp_path):
    path = write(tmp_path, "path,arousal,valence,split\nx/clip.mp4,0,0,train\ny/clip.mp4,0,0,train\n")
    assert len({c.clip_id for c in read_manifest(path)}) == 2


@pytest.mark.parametrize(
    "body, message",
    [
        ("path,split\na.mp4,train\n", ":1: missing column(s) arousal"),
        ("path,arousal,valence,split\na.mp4,2,0,train\n", ":2: arousal must be -1, 0 or 1, got '2'"),
        ("path,arousal,valence,split\na.mp4,0.5,0,train\n", ":2: arousal must be"),
        ("path,arousal,valence,split\na.mp4,inf,0,train\n", ":2: arousal must be"),
        ("path,arousal,valence,split\na.mp4,calm,0,train\n", ":2: arousal must be"),
        ("path,arousal,valence,split\na.mp4,0,0,train\nb.mp4,0,0,dev\n", ":3: split must be 'train' or 'test'"),
        ("path,arousal,valence,split\na.mp4,0,0,train\na.mp4,1,0,test\n", ":3: clip 'a.mp4' already listed on line 2"),
        ("path,arousal,valence,split\n", "no clips listed"),
    ],
)
def test_bad_manifest_names_file_and_line(tmp_path, body, message):
    path = write(tmp_path, body)
    with pytest.raises(AvemoError, match=None) as error:
        read_manifest(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_missing_video_files_are_refused_before_any_work(tmp_path):
    path = write(tmp_path, "path,arousal,valence,split\na.mp4,0,0,train\nb.mp4,0,0,train\n")
    with pytest.raises(AvemoError, match=r"a\.mp4 does not exist \(and 1 more\)"):
        check_files(read_manifest(path), path)


def test_write_then_read_round_trip(tmp_path):
    rows = [{"path": "a.mp4", "arousal": 1, "valence": -1, "split": "test", "movie": "M"}]
    write_manifest(tmp_path / "m.csv", rows)
    (clip,) = read_manifest(tmp_path / "m.csv")
    assert (clip.clip_id, clip.arousal, clip.valence, clip.split, clip.meta["movie"]) == ("a.mp4", 1, -1, "test", "M")
