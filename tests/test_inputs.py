"""Bad dataset inputs through the real CLI: each ends in one `Error:` line naming the file (and line), never a traceback.

Every case builds real files (a real mp4 where a video must exist, symbolic and hard links, a FIFO, a
folder where a file is expected), then runs `avemo datasets summary` and `avemo extract --weights none`
with it: both must stop before any work, exit status 1, one line. The inputs that are accepted on
purpose (byte-order mark, CRLF, trailing commas, `1.0` labels …) are checked at the end, as are the
authentic annotation files in /work/shared/data/liris-accede when they are there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from avemo.cli import main
from avemo.datasets.listfile import load_lists, read_list
from avemo.datasets.manifest import read_manifest
from avemo.datasets.mediaeval import read_sets
from avemo.errors import AvemoError

from helpers import make_clip

H = b"path,arousal,valence,split\n"
DIR, FIFO, CLIP = "<dir>", "<fifo>", "<clip>"  # a folder, a named pipe, a copy of a real mp4


class Link(str):
    """A symbolic link to the given (relative) target."""


class Hard(str):
    """A hard link to the given file (written before it)."""


MANIFEST = ["--manifest", "{d}/m.csv"]
LISTS = ["--list", "{d}/train.list", "--list", "{d}/test.list"]
ROOT = ["--dataset", "mediaeval", "--root", "{d}/r"]
RELEASE = {
    "r/ACCEDEaffect.txt": b"id\tname\tvalenceClass\tarousalClass\n0\tACCEDE00000.mp4\t0\t-1\n1\tACCEDE00001.mp4\t1\t0\n",
    "r/shots-devset-nl.txt": b"SHOT_000000\tACCEDE00000.mp4\n",
    "r/shots-testset-nl.txt": b"SHOT_000001\tACCEDE00001.mp4\n",
    "r/data/ACCEDE00000.mp4": CLIP,
    "r/data/ACCEDE00001.mp4": CLIP,
}
AFFECT_HEADER = b"id\tname\tvalenceClass\tarousalClass\n"


def release(**changes) -> dict:
    """The tiny release with some files (paths under r/) replaced or added; None removes one."""
    files = dict(RELEASE)
    for name, content in changes.items():
        files["r/" + name] = content
    return {name: content for name, content in files.items() if content is not None}


def case(id, files, args, file, line, text, extract_only=False):
    """One bad input: the files to write, the dataset options, and the file, line and words of the error."""
    return pytest.param(files, args, file, line, text, extract_only, id=id)


LONG = "x" * 200_000
DIGITS = "1" * 100_000
BOMB = (  # "billion laughs": 64 · 16^7 characters from a few hundred bytes
    b'<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY e0 "'
    + b"a" * 64
    + b'">'
    + b"".join(b'<!ENTITY e%d "%s">' % (i, b"&e%d;" % (i - 1) * 16) for i in range(1, 8))
    + b"]>\n<a><media><name>&e7;</name></media></a>\n"
)

CASES = [
    # --- CSV manifests -------------------------------------------------------------------------------
    case("csv-duplicate-column", {"m.csv": b"path,arousal,valence,split,arousal\na.mp4,0,0,train,1\n"}, MANIFEST, "m.csv", 1,
         "column 'arousal' appears twice"),
    case("csv-duplicate-column-case", {"m.csv": b"path,arousal,valence,split,Arousal\na.mp4,0,0,train,1\n"}, MANIFEST,
         "m.csv", 1, "column 'Arousal' appears twice (as 'arousal' and 'Arousal')"),
    case("csv-duplicate-column-spaces", {"m.csv": b"path, arousal ,valence,split,arousal\na.mp4,0,0,train,1\n"},
         MANIFEST, "m.csv", 1, "appears twice"),
    case("csv-duplicate-metadata-column", {"m.csv": b"path,arousal,valence,split,movie,Movie\na.mp4,0,0,train,A,B\n"},
         MANIFEST, "m.csv", 1, "column 'Movie' appears twice"),
    case("csv-same-file-dot-slash", {"a.mp4": CLIP, "b.mp4": CLIP, "m.csv": H + b"a.mp4,0,0,train\nb.mp4,0,0,train\n"
         b"./a.mp4,1,0,test\n"}, MANIFEST, "m.csv", 4,
         "clip './a.mp4' is the same video file as 'a.mp4', already listed on line 2 (listed in both splits: train there"),
    case("csv-same-file-dotdot", {"data/a.mp4": CLIP, "m.csv": H + b"data/a.mp4,0,0,train\ndata/../data/a.mp4,0,0,test\n"},
         MANIFEST, "m.csv", 3, "is the same video file as 'data/a.mp4'"),
    case("csv-same-file-backslash", {"data/a.mp4": CLIP, "m.csv": H + b"data/a.mp4,0,0,train\ndata\\a.mp4,0,0,test\n"},
         MANIFEST, "m.csv", 3, "already listed on line 2"),
    case("csv-same-file-symlink", {"a.mp4": CLIP, "b.mp4": Link("a.mp4"), "m.csv": H + b"a.mp4,0,0,train\nb.mp4,0,0,test\n"},
         MANIFEST, "m.csv", 3, "clip 'b.mp4' is the same video file as 'a.mp4', already listed on line 2"),
    case("csv-same-file-hard-link", {"a.mp4": CLIP, "b.mp4": Hard("a.mp4"), "m.csv": H + b"a.mp4,0,0,train\nb.mp4,0,0,test\n"},
         MANIFEST, "m.csv", 3, "clip 'b.mp4' is the same video file as 'a.mp4'"),
    case("csv-same-file-symlinked-folder", {"data/a.mp4": CLIP, "alias": Link("data"),
         "m.csv": H + b"data/a.mp4,0,0,test\nalias/a.mp4,0,0,train\n"}, MANIFEST, "m.csv", 3, "same video file"),
    case("csv-same-file-one-split", {"a.mp4": CLIP, "m.csv": H + b"a.mp4,0,0,train\n./a.mp4,0,0,train\n"}, MANIFEST, "m.csv",
         3, "already listed on line 2; list each video once"),
    case("csv-same-file-missing", {"m.csv": H + b"x/a.mp4,0,0,train\nx/./a.mp4,0,0,test\n"}, MANIFEST, "m.csv", 3,
         "is the same video file as 'x/a.mp4'"),
    case("csv-one-id-two-files", {"a.mp4": CLIP, "sub/a.mp4": CLIP, "sub/inner": DIR, "x": Link("sub/inner"),
         "m.csv": H + b"a.mp4,0,0,train\nx/../a.mp4,0,0,test\n"}, MANIFEST, "m.csv", 3,
         "clip id 'a.mp4' (file"),
    case("csv-latin-1", {"m.csv": H.rstrip() + b",movie\na.mp4,0,0,train,A\nb.mp4,0,0,test,Caf\xe9\n"}, MANIFEST, "m.csv", 3,
         "not UTF-8 text (byte 0xe9)"),
    case("csv-utf-16", {"m.csv": (H + b"a.mp4,0,0,train\n").decode().encode("utf-16")}, MANIFEST, "m.csv", 1, "UTF-16"),
    case("csv-nul", {"m.csv": H + b"a.mp4,0,0,train\nb.mp4\x00,0,0,test\n"}, MANIFEST, "m.csv", 3, "NUL byte"),
    case("csv-200000-character-field", {"m.csv": H + LONG.encode() + b",0,0,train\n"}, MANIFEST, "m.csv", 2,
         "a field longer than 131,072 characters"),
    case("csv-100000-digit-label", {"m.csv": H + b"a.mp4," + DIGITS.encode() + b",0,train\n"}, MANIFEST, "m.csv", 2,
         "arousal must be -1, 0 or 1, got '111"),
    case("csv-file-name-too-long", {"m.csv": H + b"d/" + b"y" * 300 + b".mp4,0,0,train\n"}, MANIFEST, "m.csv", 2,
         "too long for a file name (304 bytes, at most 255)"),
    case("csv-too-many-fields", {"m.csv": H + b"a.mp4,0,0,train\nb.mp4,0,0,test,x\n"}, MANIFEST, "m.csv", 3,
         "5 fields, the header (line 1) has 4"),
    case("csv-value-under-an-unnamed-trailing-column", {"m.csv": b"path,arousal,valence,split,\na.mp4,0,0,train,x\n"},
         MANIFEST, "m.csv", 2, "5 fields, the header (line 1) has 4"),
    case("csv-too-few-fields", {"m.csv": H + b"a.mp4,0,train\n"}, MANIFEST, "m.csv", 2, "3 fields, the header (line 1) has 4"),
    case("csv-unclosed-quote", {"m.csv": H + b"a.mp4,0,0,train\n\"b.mp4,0,0,test\nc.mp4,0,0,test\n"}, MANIFEST, "m.csv", 3,
         "badly quoted field"),
    case("csv-stray-quote", {"m.csv": H + b"\"a.mp4\"x,0,0,train\n"}, MANIFEST, "m.csv", 2, "badly quoted field"),
    case("csv-line-break-in-path", {"m.csv": H + b"\"a\nb.mp4\",0,0,train\n"}, MANIFEST, "m.csv", 2, "control character"),
    case("csv-path-is-a-folder-name", {"m.csv": H + b"data/,0,0,train\n"}, MANIFEST, "m.csv", 2, "names a folder"),
    case("csv-symlink-loop", {"loop.mp4": Link("loop.mp4"), "m.csv": H + b"loop.mp4,0,0,train\n"}, MANIFEST, "m.csv", 2,
         "cannot resolve"),
    case("csv-label-half", {"m.csv": H + b"a.mp4,0.5,0,train\n"}, MANIFEST, "m.csv", 2, "arousal must be -1, 0 or 1, got '0.5'"),
    case("csv-label-unicode-minus", {"m.csv": H + "a.mp4,0,\u22121,train\n".encode()}, MANIFEST, "m.csv", 2, "valence must be"),
    case("csv-label-nan", {"m.csv": H + b"a.mp4,nan,0,train\n"}, MANIFEST, "m.csv", 2, "arousal must be"),
    case("csv-label-empty-arousal", {"m.csv": H + b"a.mp4,,0,train\n"}, MANIFEST, "m.csv", 2, "arousal must be"),
    case("csv-split-validation", {"m.csv": H + b"a.mp4,0,0,validation\n"}, MANIFEST, "m.csv", 2,
         "split must be 'train' or 'test', got 'validation'"),
    case("csv-semicolon-header-comma-rows", {"m.csv": b"path;arousal;valence;split\na.mp4,0,0,train\n"}, MANIFEST, "m.csv", 2,
         "1 fields, the header (line 1) has 4"),
    case("csv-empty-file", {"m.csv": b""}, MANIFEST, "m.csv", None, "empty file; expected a header path,arousal,valence,split"),
    case("csv-blank-lines-only", {"m.csv": b"\r\n  \n\n"}, MANIFEST, "m.csv", None, "empty file"),
    case("csv-header-only", {"m.csv": H}, MANIFEST, "m.csv", None, "no clips listed"),
    case("csv-missing", {}, MANIFEST, "m.csv", None, "file not found"),
    case("csv-fifo", {"m.csv": FIFO}, MANIFEST, "m.csv", None, "not a regular file"),
    case("list-permission-denied", {"test.list": b"SHOT_3 0 0\n"},  # write-only, even for root (--manifest: click refuses it)
         ["--list", "train=/proc/sys/vm/compact_memory", "--list", "{d}/test.list"], "/proc/sys/vm/compact_memory", None,
         "cannot read it (Permission denied)"),
    case("csv-read-error", {}, ["--manifest", "/proc/self/mem"], "/proc/self/mem", None, "cannot read it (Input/output error)"),
    case("csv-video-is-a-folder", {"a.mp4": DIR, "b.mp4": CLIP, "m.csv": H + b"a.mp4,0,0,train\nb.mp4,0,0,test\n"}, MANIFEST,
         "m.csv", None, "a.mp4 is a folder", extract_only=True),
    # --- list files ----------------------------------------------------------------------------------
    case("list-latin-1", {"train.list": b"SHOT_1 0 0\nSHOT_\xe92 0 0\n", "test.list": b"SHOT_3 0 0\n"}, LISTS, "train.list", 2,
         "not UTF-8"),
    case("list-nul", {"train.list": b"SHOT_1 0 0\n", "test.list": b"SHOT_3 0 0\nSHOT_4\x00 0 0\n"}, LISTS, "test.list", 2,
         "NUL byte"),
    case("list-100000-digit-id", {"train.list": DIGITS.encode() + b" 0 0\n", "test.list": b"SHOT_3 0 0\n"}, LISTS,
         "train.list", 1, "id '111"),
    case("list-100000-digit-label", {"train.list": b"SHOT_1 0 " + DIGITS.encode() + b"\n", "test.list": b"SHOT_3 0 0\n"},
         LISTS, "train.list", 1, "arousal must be -1, 0 or 1, got '111"),
    case("list-200000-character-line", {"train.list": LONG.encode() + b" 0 0\n", "test.list": b"SHOT_3 0 0\n"}, LISTS,
         "train.list", 1, "too long for a file name"),
    case("list-with-a-header", {"train.list": b"id valence arousal\nSHOT_1 0 0\n", "test.list": b"SHOT_3 0 0\n"}, LISTS,
         "train.list", 1, "(a header? list files have none)"),
    case("list-two-fields", {"train.list": b"SHOT_1 0\n", "test.list": b"SHOT_3 0 0\n"}, LISTS, "train.list", 1,
         "2 fields, expected 3"),
    case("list-comma-separated", {"train.list": b"SHOT_1,0,0\n", "test.list": b"SHOT_3 0 0\n"}, LISTS, "train.list", 1,
         "1 fields, expected 3"),
    case("list-is-a-folder", {"train.list": DIR, "test.list": b"SHOT_3 0 0\n"}, LISTS, "train.list", None, "is a folder"),
    case("list-fifo", {"train.list": b"SHOT_1 0 0\n", "test.list": FIFO}, LISTS, "test.list", None, "not a regular file"),
    case("list-missing", {"train.list": b"SHOT_1 0 0\n"}, LISTS, "test.list", None, "file not found"),
    case("list-given-twice", {"train.list": b"SHOT_1 0 0\n", "test.list": b"SHOT_3 0 0\n"},
         [*LISTS, "--list", "{d}/./train.list"], "train.list", 1, "id 'SHOT_1' is a duplicate (train at"),
    case("list-same-shot-both-splits", {"train.list": b"SHOT_000001 0 0\n", "test.list": b"shot_1 0 0\n"}, LISTS, "test.list",
         1, "id 'shot_1' is listed in both splits (train at"),
    case("list-id-with-a-folder", {"v": DIR, "train.list": b"../../etc/passwd 0 0\n", "test.list": b"SHOT_3 0 0\n"},
         [*LISTS, "--videos", "{d}/v"], "train.list", 1, "cannot be a file name"),
    case("list-videos-same-file-symlink", {"v/SHOT_000001.mp4": CLIP, "v/SHOT_000002.mp4": Link("SHOT_000001.mp4"),
         "train.list": b"SHOT_000001 0 0\n", "test.list": b"SHOT_000002 0 0\n"}, [*LISTS, "--videos", "{d}/v"], "test.list", 1,
         "clip 'SHOT_000002.mp4' is the same video file as 'SHOT_000001.mp4', already listed at"),
    case("list-id-is-no-glob-pattern", {"v/SHOT_1.avi": CLIP, "train.list": b"SHOT_1 0 0\n", "test.list": b"SHOT_? 0 0\n"},
         [*LISTS, "--videos", "{d}/v"], "test.list", 1, "SHOT_?.mp4 does not exist", extract_only=True),
    case("list-videos-missing", {"train.list": b"SHOT_1 0 0\n", "test.list": b"SHOT_3 0 0\n"}, [*LISTS, "--videos", "{d}/v"],
         "v", None, "does not exist; --videos is a folder"),
    case("list-root-and-videos", {"r": DIR, "train.list": b"SHOT_1 0 0\n", "test.list": b"SHOT_3 0 0\n"},
         [*LISTS, "--root", "{d}/r", "--videos", "{d}"], None, None, "--root maps ids to files"),
    # --- map files (--map) ---------------------------------------------------------------------------
    case("map-absolute-name", {"map.txt": b"1\t/etc/passwd\n3\tb.mp4\n", "train.list": b"1 0 0\n", "test.list": b"3 0 0\n"},
         [*LISTS, "--map", "{d}/map.txt"], "map.txt", 1, "file name '/etc/passwd' is an absolute path"),
    case("map-windows-absolute-name", {"map.txt": b"1 C:\\v\\a.mp4\n", "train.list": b"1 0 0\n", "test.list": b"3 0 0\n"},
         [*LISTS, "--map", "{d}/map.txt"], "map.txt", 1, "is an absolute path"),
    case("map-name-leaves-folder", {"map.txt": b"1 ../secret.mp4\n", "train.list": b"1 0 0\n", "test.list": b"3 0 0\n"},
         [*LISTS, "--map", "{d}/map.txt"], "map.txt", 1, "file name '../secret.mp4' leaves its folder"),
    case("map-name-leaves-folder-deep", {"map.txt": b"3 b.mp4\r\n1 data/../../x\r\n", "train.list": b"1 0 0\n",
         "test.list": b"3 0 0\n"}, [*LISTS, "--map", "{d}/map.txt"], "map.txt", 2, "leaves its folder"),
    case("map-two-ids-one-file", {"a.mp4": CLIP, "map.txt": b"1\ta.mp4\n2\t./a.mp4\n", "train.list": b"1 0 0\n",
         "test.list": b"2 0 0\n"}, [*LISTS, "--map", "{d}/map.txt"], "test.list", 1,
         "clip 'a.mp4' already listed at"),
    case("map-two-folders-one-id", {"m1/x.mp4": CLIP, "m2/x.mp4": CLIP, "m1/map.txt": b"1 x.mp4\n", "m2/map.txt": b"2 x.mp4\n",
         "train.list": b"1 0 0\n", "test.list": b"2 0 0\n"}, [*LISTS, "--map", "{d}/m1/map.txt", "--map", "{d}/m2/map.txt"],
         "test.list", 1, "clip id 'x.mp4' (file"),
    case("map-latin-1", {"map.txt": b"1 caf\xe9.mp4\n", "train.list": b"1 0 0\n", "test.list": b"3 0 0\n"},
         [*LISTS, "--map", "{d}/map.txt"], "map.txt", 1, "not UTF-8"),
    case("map-nul", {"map.txt": b"1 a.mp4\n3 b\x00.mp4\n", "train.list": b"1 0 0\n", "test.list": b"3 0 0\n"},
         [*LISTS, "--map", "{d}/map.txt"], "map.txt", 2, "NUL byte"),
    case("map-100000-digit-id", {"map.txt": DIGITS.encode() + b" a.mp4\n", "train.list": b"1 0 0\n", "test.list": b"3 0 0\n"},
         [*LISTS, "--map", "{d}/map.txt"], "map.txt", 1, "id '111"),
    case("map-empty", {"map.txt": b"\n", "train.list": b"1 0 0\n", "test.list": b"3 0 0\n"}, [*LISTS, "--map", "{d}/map.txt"],
         "map.txt", None, "empty map file"),
    case("map-fifo", {"map.txt": FIFO, "train.list": b"1 0 0\n", "test.list": b"3 0 0\n"}, [*LISTS, "--map", "{d}/map.txt"],
         "map.txt", None, "not a regular file"),
    case("map-three-fields", {"map.txt": b"1 a.mp4 b.mp4\n", "train.list": b"1 0 0\n", "test.list": b"3 0 0\n"},
         [*LISTS, "--map", "{d}/map.txt"], "map.txt", 1, "3 fields, expected 2"),
    # --- the MediaEval 2015 release ------------------------------------------------------------------
    case("release-affect-latin-1", release(**{"ACCEDEaffect.txt": AFFECT_HEADER +
         b"0\tACCEDE00000.mp4\t0\t-1\n1\tACCEDE\xe900001.mp4\t1\t0\n"}), ROOT, "r/ACCEDEaffect.txt", 3, "not UTF-8"),
    case("release-affect-utf-16", release(**{"ACCEDEaffect.txt": RELEASE["r/ACCEDEaffect.txt"].decode().encode("utf-16")}),
         ROOT, "r/ACCEDEaffect.txt", 1, "UTF-16"),
    case("release-affect-nul", release(**{"ACCEDEaffect.txt": AFFECT_HEADER + b"0\tACCEDE00000.mp4\t0\t-1\x00\n"}), ROOT,
         "r/ACCEDEaffect.txt", 2, "NUL byte"),
    case("release-affect-duplicate-column", release(**{"ACCEDEaffect.txt": b"id\tname\tvalenceClass\tarousalClass\t"
         b"ArousalClass\n0\tACCEDE00000.mp4\t0\t-1\t1\n"}), ROOT, "r/ACCEDEaffect.txt", 1, "column 'ArousalClass' appears twice"),
    case("release-affect-header-only", release(**{"ACCEDEaffect.txt": AFFECT_HEADER}), ROOT, "r/ACCEDEaffect.txt", None,
         "no clips listed"),
    case("release-affect-is-a-folder", release(**{"ACCEDEaffect.txt": DIR}), ROOT, "r/ACCEDEaffect.txt", None, "is a folder"),
    case("release-affect-fifo", release(**{"ACCEDEaffect.txt": FIFO}), ROOT, "r/ACCEDEaffect.txt", None, "not a regular file"),
    case("release-affect-200000-character-label", release(**{"ACCEDEaffect.txt": AFFECT_HEADER + b"0\tACCEDE00000.mp4\t0\t" +
         LONG.encode() + b"\n"}), ROOT, "r/ACCEDEaffect.txt", 2, "arousalClass must be -1, 0 or 1, got 'xxx"),
    case("release-affect-name-leaves-root", release(**{"ACCEDEaffect.txt": AFFECT_HEADER + b"0\t../../x.mp4\t0\t-1\n",
         "shots-devset-nl.txt": b"SHOT_000000\t../../x.mp4\n"}), ROOT, "r/ACCEDEaffect.txt", 2, "leaves its folder"),
    case("release-mapping-absolute-name", release(**{"shots-devset-nl.txt": b"SHOT_000000\t/etc/passwd\n"}), ROOT,
         "r/shots-devset-nl.txt", 1, "clip name '/etc/passwd' is an absolute path"),
    case("release-mapping-100000-digit-shot", release(**{"shots-testset-nl.txt": DIGITS.encode() + b"\tACCEDE00001.mp4\n"}),
         ROOT, "r/shots-testset-nl.txt", 1, "shot id '111"),
    case("release-mapping-same-clip-spelt-twice", release(**{"shots-testset-nl.txt": b"SHOT_000001\t./ACCEDE00000\n"}), ROOT,
         "r/shots-testset-nl.txt", 1, "clip 'ACCEDE00000.mp4' is listed in both splits (train at"),
    case("release-video-symlink", release(**{"data/ACCEDE00001.mp4": Link("ACCEDE00000.mp4")}),
         ROOT, "r/shots-testset-nl.txt", 1, "clip 'ACCEDE00001.mp4' is the same video file as 'ACCEDE00000.mp4'"),
    case("release-video-symlink-loop", release(**{"data/ACCEDE00001.mp4": Link("ACCEDE00001.mp4")}), ROOT,
         "r/shots-testset-nl.txt", 1, "cannot resolve"),
    case("release-video-hard-link", release(**{"data/ACCEDE00001.mp4": Hard("r/data/ACCEDE00000.mp4")}), ROOT,
         "r/shots-testset-nl.txt", 1, "is the same video file as 'ACCEDE00000.mp4', already listed at"),
    case("release-description-is-a-folder", release(**{"ACCEDEdescription.xml": DIR}), ROOT, "r/ACCEDEdescription.xml", None,
         "is a folder"),
    case("release-description-nul", release(**{"ACCEDEdescription.xml": b"<a>\n<media>\x00</media></a>\n"}), ROOT,
         "r/ACCEDEdescription.xml", 2, "not well-formed XML"),
    case("release-description-latin-1", release(**{"ACCEDEdescription.xml": b"<a>\n<media><movie>Caf\xe9</movie></media>\n</a>"}),
         ROOT, "r/ACCEDEdescription.xml", 2, "not well-formed XML"),
    case("release-sets-latin-1", release(**{"shots-devset-nl.txt": None, "shots-testset-nl.txt": None,
         "ACCEDEsets.txt": b"id\tname\tset\r\n0\tACCEDE00000.mp4\t1\r\n1\tACCEDE\xe900001.mp4\t0\r\n"}), ROOT,
         "r/ACCEDEsets.txt", 3, "not UTF-8"),
    case("release-sets-header-only", release(**{"shots-devset-nl.txt": None, "shots-testset-nl.txt": None,
         "ACCEDEsets.txt": b"id\tname\tset\r\n"}), ROOT, "r/ACCEDEsets.txt", None, "no clips listed"),
    case("release-two-different-affect-files", release(**{"annotations/ACCEDEaffect.txt": AFFECT_HEADER +
         b"0\tACCEDE00000.mp4\t1\t1\n1\tACCEDE00001.mp4\t1\t0\n"}), ROOT, "r", None, "two different ACCEDEaffect.txt"),
    case("release-description-entity-bomb", release(**{"ACCEDEdescription.xml": BOMB}), ROOT, "r/ACCEDEdescription.xml", 3,
         "not well-formed XML (limit on input amplification"),
    case("release-root-missing", {}, ROOT, "r", None, "does not exist; --root is the folder"),
]  # fmt: skip


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=1.0, fps=10, audio_hz=None)


def write(folder: Path, files: dict, clip: Path) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            path.symlink_to(content)
        elif isinstance(content, Hard):
            os.link(folder / content if "/" in content else path.parent / content, path)
        elif content == DIR:
            path.mkdir(exist_ok=True)
        elif content == FIFO:
            os.mkfifo(path)
        elif content == CLIP:
            shutil.copyfile(clip, path)
        else:
            path.write_bytes(content)


def needs(args: list[str]) -> None:
    """Skip a case whose trigger file does not behave here as on Linux (a /proc file that refuses reading)."""
    for arg in args:
        path = arg.partition("=")[2] or arg
        if path.startswith("/proc/"):
            try:
                with open(path, "rb") as f:
                    f.read(1)
            except OSError:
                continue
            pytest.skip(f"{path} can be read here")


@pytest.mark.parametrize("command", ["summary", "extract"])
@pytest.mark.parametrize("files, args, file, line, text, extract_only", CASES)
def test_bad_input_is_one_error_line(tmp_path, clip, command, files, args, file, line, text, extract_only):
    if extract_only and command == "summary":
        pytest.skip("the summary lists this problem and exits 0; extract refuses it")
    needs(args)
    write(tmp_path, files, clip)
    options = [a.replace("{d}", str(tmp_path)) for a in args]
    cache = tmp_path / "cache"
    argv = (
        ["datasets", "summary", *options]
        if command == "summary"
        else ["extract", *options, "--weights", "none", "--cache", str(cache)]
    )
    result = CliRunner().invoke(main, argv)
    out = result.output
    assert "Traceback" not in out and isinstance(result.exception, SystemExit), (out, result.exception)
    assert result.exit_code == 1, (result.exit_code, out, result.exception)
    assert out.endswith("\n") and out.count("\n") == 1 and out.startswith("Error: "), out[:500]
    assert len(out) < 1000, out[:500]  # a long value is shown cut
    if file is not None:
        named = file if file.startswith("/") else str(tmp_path / file)
        assert f"Error: {named}" + (f":{line}: " if line else ": ") in out, out
    assert text in out, out
    assert not cache.exists()


# --- accepted on purpose ---------------------------------------------------------------------------------


def clips_of(path: Path) -> list[tuple]:
    return [(c.clip_id, c.arousal, c.valence, c.split, c.meta) for c in read_manifest(path)]


@pytest.mark.parametrize(
    "data",
    [
        b"\xef\xbb\xbfpath,arousal,valence,split,movie\r\na.mp4,-1,1,train,M\r\nsub/b.mp4,1,,test,N\r\n",  # BOM, CRLF
        b"path,arousal,valence,split,movie\ra.mp4,-1,1,train,M\rsub/b.mp4,1,,test,N",  # CR, no last line end
        b"path,arousal,valence,split,movie,\na.mp4,-1,1,train,M,\nsub/b.mp4,1,,test,N,\n,,,,,\n",  # trailing commas
        b"path,arousal,valence,split,movie\na.mp4,-1,1,train,M,,\nsub/b.mp4,1,,test,N\n",  # trailing commas, one row
        b" Path , AROUSAL ,Valence,Split,movie\n a.mp4 , -1 , 1 , Train ,M\n\n  \nsub/b.mp4,+1,,TEST,N\n",  # case, spaces
        b",path,arousal,valence,split,movie\n0,a.mp4,-1.0,1.0,train,M\n1,sub/b.mp4,1.0,,test,N\n",  # pandas index, 1.0
        b"path\tarousal\tvalence\tsplit\tmovie\na.mp4\t-1\t1\ttrain\tM\nsub/b.mp4\t1\t\ttest\tN\n",  # tab separated
        b"path;arousal;valence;split;movie\na.mp4;-1;1;train;M\nsub/b.mp4;1;;test;N\n",  # semicolons (European Excel)
        b"sep=;\r\npath;arousal;valence;split;movie\r\na.mp4;-1;1;train;M\r\nsub/b.mp4;1;;test;N\r\n",  # Excel's sep= line
        b"path,arousal,valence,split,movie\n./a.mp4,-1,1,train,M\nsub//./b.mp4,1,,test,N\n",  # normalised ids
        b'path,arousal,valence,split,movie\n"a.mp4",-1,1,train,"M"\nsub\\b.mp4,1,,test,N\n',  # quotes, backslash
    ],
)
def test_accepted_manifest_spellings_read_the_same(tmp_path, data):
    (tmp_path / "m.csv").write_bytes(data)
    assert clips_of(tmp_path / "m.csv") == [
        ("a.mp4", -1, 1, "train", {"movie": "M"}),
        ("sub/b.mp4", 1, None, "test", {"movie": "N"}),
    ]


def test_negative_zero_and_one_point_zero_are_labels(tmp_path):
    (tmp_path / "m.csv").write_bytes(H + b"a.mp4,-0,-0.0,train\nb.mp4,1.,+0,test\n")
    assert [(c.arousal, c.valence) for c in read_manifest(tmp_path / "m.csv")] == [(0, 0), (1, 0)]


def test_paths_outside_the_manifest_folder_are_allowed(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "m.csv").write_bytes(
        H + b"../videos/a.mp4,0,0,train\n" + str(tmp_path / "b.mp4").encode() + b",0,0,test\n"
    )
    a, b = read_manifest(tmp_path / "lists" / "m.csv")
    assert (a.clip_id, a.path) == ("../videos/a.mp4", tmp_path / "videos" / "a.mp4")
    assert (b.clip_id, b.path) == (str(tmp_path / "b.mp4"), tmp_path / "b.mp4")


def test_lists_and_maps_accept_tabs_bom_crlf_and_names_with_spaces(tmp_path):
    (tmp_path / "train.list").write_bytes(b"\xef\xbb\xbfSHOT_1\t1.0\t-1\r\n\r\nSHOT_2  0  0\r\n")
    (tmp_path / "map.txt").write_bytes(b"1\tmy clip.mp4\n2 data/./b\n")
    ds = load_lists([str(tmp_path / "train.list")], maps=[tmp_path / "map.txt"])
    assert [(c.clip_id, c.valence, c.arousal) for c in ds.clips] == [("my clip.mp4", 1, -1), ("data/b.mp4", 0, 0)]


def test_release_tables_accept_trailing_tabs_and_spaces(tmp_path):
    files = release(
        **{"ACCEDEaffect.txt": b"id name valenceClass arousalClass\n0 ACCEDE00000.mp4 0 -1\n1\tACCEDE00001\t1\t0\t\n"}
    )
    write(tmp_path, {k: b"" if v == CLIP else v for k, v in files.items()}, tmp_path)
    result = CliRunner().invoke(main, ["datasets", "summary", *[a.replace("{d}", str(tmp_path)) for a in ROOT]])
    assert result.exit_code == 0, result.output
    assert "train: 1 clips" in result.output and "test: 1 clips" in result.output


def test_the_same_annotation_file_in_two_folders_is_read_once(tmp_path):
    files = release(**{"annotations/ACCEDEaffect.txt": RELEASE["r/ACCEDEaffect.txt"]})
    write(tmp_path, {k: b"" if v == CLIP else v for k, v in files.items()}, tmp_path)
    result = CliRunner().invoke(main, ["datasets", "summary", *[a.replace("{d}", str(tmp_path)) for a in ROOT]])
    assert result.exit_code == 0 and "dataset " in result.output, result.output


# --- the authentic files ---------------------------------------------------------------------------------

REAL = Path("/work/shared/data/liris-accede")
real = pytest.mark.skipif(not (REAL / "AIMT15_train.list").is_file(), reason="authentic annotation files not here")


@real
def test_the_authentic_lists_load_with_the_published_counts():
    ds = load_lists([str(REAL / "AIMT15_train.list"), str(REAL / "AIMT15_test.list")])
    test = [c for c in ds.clips if c.split == "test"]
    assert (len(ds.clips), len(test)) == (10_900, 4_756)
    assert sum(c.arousal == -1 for c in test) == 2_642  # calm: 55.55%


@real
def test_the_authentic_sets_file_loads():
    sets = read_sets(REAL / "ACCEDEsets.txt")
    assert len(sets) == 9_800 and sets[0][:2] == ("ACCEDE00000.mp4", "1")


@real
@pytest.mark.parametrize("name", ["Readme.txt", "ACCEDEranking.txt"])
def test_a_wrong_authentic_file_given_as_a_list_is_one_error(name):
    with pytest.raises(AvemoError) as error:
        read_list(REAL / name)
    assert str(error.value).startswith(f"{REAL / name}:1: ") and "fields, expected 3" in str(error.value)
