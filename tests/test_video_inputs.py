"""expand_videos: the files, folders and list files named on `avemo predict`'s command line, on real files.

expand_videos never decodes, so most videos here are empty files with video names; one test runs a real mp4
through a list file to show that what it returns is the path predict opens.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from avemo.errors import AvemoError
from avemo.inputs import expand_videos

from helpers import make_clip


def touch(root: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        out.append(path)
    return out


def test_files_stay_in_order_and_missing_ones_pass_through(tmp_path):
    b, a = touch(tmp_path, "b.mp4", "a.MKV")
    odd = touch(tmp_path, "clip.bin")[0]  # named explicitly: predict decides whether it is a video
    missing = tmp_path / "gone.mp4"
    assert expand_videos([b, missing, a, odd]) == [b, missing, a, odd]
    assert expand_videos([]) == []


def test_folder_is_searched_recursively_sorted_by_relative_path_hidden_skipped(tmp_path):
    touch(
        tmp_path,
        "d.mp4", "a.MP4", "b/c.webm", "b/a.ts", "b/notes.txt", "e.srt", "Z/x.mov",
        ".hidden.mp4", ".cache/y.mp4", "b/.z.mkv",
    )  # fmt: skip
    got = [p.relative_to(tmp_path).as_posix() for p in expand_videos([tmp_path])]
    assert got == ["Z/x.mov", "a.MP4", "b/a.ts", "b/c.webm", "d.mp4"]


def test_folder_link_loop_ends(tmp_path):
    (clip,) = touch(tmp_path, "sub/v.mp4")
    os.symlink(tmp_path, tmp_path / "sub" / "up")  # sub/up → the folder itself
    assert expand_videos([tmp_path]) == [clip]


def test_folder_without_video_is_one_error_naming_it(tmp_path):
    touch(tmp_path, "notes.txt", ".hidden.mp4", "sub/readme.md")
    with pytest.raises(AvemoError, match=rf"^{tmp_path}: no video files in this folder or below it") as e:
        expand_videos([tmp_path])
    assert "\n" not in str(e.value) and "hidden files are skipped" in str(e.value)


def test_list_file_relative_to_its_folder_with_comments_and_folders(tmp_path):
    a, b, c, d = touch(tmp_path, "videos/a.mp4", "videos/b c.mp4", "more/c.mkv", "elsewhere/d.avi")
    (tmp_path / "lists").mkdir()
    lst = tmp_path / "lists" / "todo.txt"
    lst.write_text(
        "# clips to predict\r\n\r\n../videos/b c.mp4   # spaces in the name\n  ../videos/a.mp4\n../more\n"
        f"{d}\n../videos/missing.mp4\n"
    )
    got = expand_videos([lst])
    assert [p.resolve() for p in got] == [b, a, c, d, tmp_path / "videos/missing.mp4"]
    assert got[0] == tmp_path / "lists/../videos/b c.mp4" and got[3] == d  # as written, relative to the list's folder


def test_mediaeval_list_names_clips_beside_it(tmp_path):
    """AIMT15_*.list rows are `ID VALENCE AROUSAL` (avemo/datasets/listfile.py): ID.mp4 in the list's folder."""
    first, second = touch(tmp_path, "SHOT_000000.mp4", "SHOT_000001.mp4")
    lst = tmp_path / "AIMT15_test.list"
    lst.write_text("SHOT_000000 1 -1\nSHOT_000001 0 -1\nSHOT_000002 -1 1\n")
    assert expand_videos([lst]) == [first, second, tmp_path / "SHOT_000002.mp4"]


def test_bare_clip_names_get_mp4(tmp_path):
    a, b, kept = touch(tmp_path, "ACCEDE00001.mp4", "ACCEDE00002.mp4", "raw")
    lst = tmp_path / "clips.LIST"
    lst.write_text("ACCEDE00001.mp4\nACCEDE00002\nraw\n")  # an existing file without extension stays as it is
    assert expand_videos([lst]) == [a, b, kept]


def test_duplicates_kept_once_first_wins(tmp_path):
    a, b = touch(tmp_path, "v/a.mp4", "v/b.mp4")
    os.symlink(a, tmp_path / "link.mp4")
    lst = tmp_path / "l.txt"
    lst.write_text("v/b.mp4\nv/../v/a.mp4\n")
    got = expand_videos([b, tmp_path / "link.mp4", tmp_path / "v", lst, tmp_path / "v/./b.mp4"])
    assert got == [b, tmp_path / "link.mp4"]  # the link and a are one file, met first as the link


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# nothing\n\n", r"l\.txt: no videos listed"),
        ("other.list\n", r"l\.txt:1: .*other\.list is a list file; a list names videos and folders"),
        ("empty\n", r"empty: no video files in this folder"),
    ],
)
def test_list_errors(tmp_path, text, message):
    (tmp_path / "empty").mkdir()
    lst = tmp_path / "l.txt"
    lst.write_text(text)
    with pytest.raises(AvemoError, match=message):
        expand_videos([lst])


def test_missing_or_binary_list_file_is_an_error(tmp_path):
    with pytest.raises(AvemoError, match=r"videos\.txt: list file not found"):
        expand_videos([tmp_path / "videos.txt"])
    (tmp_path / "b.list").write_bytes(b"\x00\x01")
    with pytest.raises(AvemoError, match=r"b\.list:1: NUL byte"):
        expand_videos([tmp_path / "b.list"])


def test_real_mp4_from_a_list_opens(tmp_path):
    import av

    (tmp_path / "data").mkdir()
    clip = make_clip(tmp_path / "data" / "real.mp4", seconds=1.0)
    (tmp_path / "l.txt").write_text("data/real\n")
    (path,) = expand_videos([tmp_path / "l.txt"])
    assert path == clip
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames > 0
