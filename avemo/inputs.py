"""The videos named on `avemo predict`'s command line: files, folders and list files, as one ordered list.

Each item is, in this order:

- a folder: the video files under it, found by extension (`VIDEO_SUFFIXES`, any case), **recursively**, in
  the order of their paths relative to the folder (compared part by part, so `a.mp4`, `b/c.mp4`, `d.mp4`); hidden
  files and folders (name starting with `.`) are skipped, as are other files. A folder linked from inside the
  tree is followed once (a link loop ends there). A folder without any video is an error;
- a list file (`.txt` or `.list`, any case): one video or folder per line, relative to the list file's folder
  (absolute paths and `~` work too); blank lines and comments (`#` at the start of a line, or after a space)
  are ignored. A line `ID VALENCE AROUSAL` of a MediaEval list (`AIMT15_train.list`: `SHOT_006144 0 -1`, see
  avemo/datasets/listfile.py) names the clip `ID.mp4` beside the list, as `avemo datasets` reads such a list
  without `--videos`; a bare name without extension (`ACCEDE00001`) gets `.mp4` when the file as written does
  not exist. A list names videos and folders, not other lists. A missing list file, or one with no entry, is
  an error;
- anything else: itself, whatever its extension and whether or not it exists (predict decodes it, and reports
  a missing or unreadable file per video while the others still come out).

The same file named twice (after resolving links and `..`) is kept once, where it first appears.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from avemo.datasets.listfile import is_label
from avemo.datasets.textfile import clip_name, read_text
from avemo.errors import AvemoError

VIDEO_SUFFIXES = frozenset(f".{s}" for s in ("mp4", "mkv", "avi", "mov", "webm", "m4v", "mpg", "mpeg", "ts", "flv", "wmv", "ogv"))
LIST_SUFFIXES = frozenset((".txt", ".list"))
_LINE_END = re.compile(r"\r\n|\r|\n")
_COMMENT = re.compile(r"(?:^|\s)#.*$")


def expand_videos(items: list[Path]) -> list[Path]:
    """The video paths named by `items` (files, folders, list files; rules in the module docstring), each once."""
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        for path in _expand(Path(item), in_list=None):
            key = _key(path)
            if key not in seen:
                seen.add(key)
                out.append(path)
    return out


def is_video_name(path: Path) -> bool:
    """Whether the file name has one of the video extensions (any case)."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def _expand(item: Path, in_list: str | None) -> list[Path]:
    """The videos of one item; `in_list` is the FILE:LINE that named it, or None on the command line."""
    if item.is_dir():
        return folder_videos(item)
    if item.suffix.lower() in LIST_SUFFIXES:
        if in_list is not None:
            raise AvemoError(f"{in_list}: {item} is a list file; a list names videos and folders, not other lists")
        return _list_videos(item)
    return [item]


def folder_videos(folder: Path) -> list[Path]:
    """The video files under `folder`, recursively, sorted by relative path; hidden entries skipped."""
    found: list[tuple[tuple[str, ...], Path]] = []
    _walk(folder, (), found, set())
    if not found:
        raise AvemoError(
            f"{folder}: no video files in this folder or below it (extensions {', '.join(sorted(VIDEO_SUFFIXES))}; "
            "hidden files are skipped); name the videos, or another folder"
        )
    return [path for _, path in sorted(found, key=lambda entry: entry[0])]


def _walk(folder: Path, parts: tuple[str, ...], found: list, visited: set[Path]) -> None:
    real = _key(folder)
    if real in visited:  # a link back up the tree
        return
    visited.add(real)
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        raise AvemoError(f"{folder}: cannot list the folder ({e.strerror or e}); check its permissions") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = folder / entry.name
        if _is_dir(entry):
            _walk(path, (*parts, entry.name), found, visited)
        elif is_video_name(path):
            found.append(((*parts, entry.name), path))


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links
    except OSError:
        return False


def _list_videos(path: Path) -> list[Path]:
    """The videos named by a list file, in its order."""
    if not path.exists():
        raise AvemoError(f"{path}: list file not found; check the path (a .txt or .list item is read as a list of videos)")
    out: list[Path] = []
    for number, line in enumerate(_LINE_END.split(read_text(path)), start=1):
        entry = _entry(line, path.parent)
        if entry is not None:
            out += _expand(entry, in_list=f"{path}:{number}")
    if not out:
        raise AvemoError(f"{path}: no videos listed (only blank lines and # comments); add one video path per line")
    return out


def _entry(line: str, base: Path) -> Path | None:
    """The path one list line names (None for a blank or comment line), relative to `base`."""
    text = line.strip()
    if text and (base / text).exists():  # the whole line names a file, even one whose name holds ' #'
        return base / text
    text = _COMMENT.sub("", text).strip()
    if not text:
        return None
    fields = text.split()
    if len(fields) == 3 and is_label(fields[1]) and is_label(fields[2]):  # MediaEval: ID VALENCE AROUSAL
        text = fields[0]
    path = base / Path(text).expanduser()
    if not path.exists() and not path.suffix:  # ACCEDE00001 → ACCEDE00001.mp4, as the dataset readers do
        path = path.with_name(clip_name(path.name))
    return path


def _key(path: Path) -> Path:
    """The file a path names, for finding duplicates (links and `..` resolved; a missing file as written)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a link loop: compare it as written
        return path.absolute()
