"""The CSV manifest: header with `path,arousal,valence,split`, one clip per row.

`path` is relative to the CSV's folder, labels are -1/0/1 (valence may be empty, or its column left out:
every valence is then unknown, and only arousal can be trained), split is `train` or `test`; any other
column (e.g. `movie`) is kept as metadata. A clip's id is its path as written in the CSV (normalised:
`./a.mp4` is `a.mp4`), so two `clip.mp4` in different folders never collide, and one video file is one
clip: listing it twice, under any spelling or through a link, is refused (`check_unique`).
"""

from __future__ import annotations

import csv
import difflib
import io
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from avemo.datasets.labels import SPLITS
from avemo.datasets.textfile import CONTROL, check_length, label, read_text, resolved, shown
from avemo.errors import AvemoError

COLUMNS = ("path", "arousal", "valence", "split")  # what a manifest holds (write_manifest writes them all)
REQUIRED_COLUMNS = ("path", "arousal", "split")  # valence is optional: without it, unknown for every clip


@dataclass(frozen=True)
class Clip:
    clip_id: str  # the path as written in the manifest (posix, normalised: no `./`, `//`, `x/..`), unique
    path: Path  # absolute path of the video file
    arousal: int  # -1 calm, 0 neutral, 1 active
    valence: int | None  # -1 negative, 0 neutral, 1 positive; None when unknown
    split: str  # "train" or "test"
    meta: dict[str, str] = field(default_factory=dict, compare=False)


def _label(value: str, where: str, column: str, optional: bool = False) -> int | None:
    value = value.strip()
    return None if value == "" and optional else label(value, where, column)


def read_manifest(csv_path: str | Path) -> list[Clip]:
    """Read and check a manifest; every problem is reported with file and line (docs/datasets.md).

    Accepted as written by spreadsheets and pandas: a UTF-8 byte-order mark, CRLF/LF/CR line ends, blank
    lines, spaces around values, column names in any case, unnamed columns (a pandas index; ignored),
    empty fields at the end of a row (trailing commas), labels written `1.0`, a header separated by tabs
    or semicolons instead of commas (the whole file then is), and Excel's `sep=;` first line. Refused
    with the line: a column named twice, a row with more or fewer fields than the header, a quote never
    closed, a control character in a path, and the same video file listed twice under any spelling
    (`a.mp4`, `./a.mp4`, `x/../a.mp4`, a symbolic or hard link)."""
    csv_path = Path(csv_path)
    text = read_text(csv_path)
    records = _records(text, csv_path)
    first = next(records, None)
    if first is None:
        raise AvemoError(
            f"{csv_path}: empty file; expected a header path,arousal,valence,split (valence may be left out) and one row per clip"
        )
    header_line, header = first
    columns = _columns(header, f"{csv_path}:{header_line}")
    width = max(columns.values()) + 1  # empty names after the last column (trailing commas) do not count
    root = resolved(csv_path, str(csv_path)).parent
    clips: list[Clip] = []
    listed: list[tuple[Clip, str, str]] = []  # (clip, FILE:LINE, path as written)
    for line, fields in records:
        where = f"{csv_path}:{line}"
        if len(fields) < width or any(f.strip() for f in fields[width:]):
            raise AvemoError(
                f"{where}: {len(fields)} fields, the header (line {header_line}) has {width}; "
                "an empty value still needs its comma, and a value holding a comma needs quotes"
            )
        row = {name: fields[i].strip() for name, i in columns.items()}
        raw = row["path"]
        rel = _manifest_path(raw, where)
        split = row["split"].lower()
        if split not in SPLITS:
            raise AvemoError(f"{where}: split must be 'train' or 'test', got {shown(row['split'])}")
        path = resolved(root / raw.replace("\\", "/"), where)  # as written: `link/..` is no lexical `..`
        clip = Clip(
            clip_id=rel,
            path=path,
            arousal=_label(row["arousal"], where, "arousal"),
            valence=_label(row.get("valence", ""), where, "valence", optional=True),
            split=split,
            meta={k: v for k, v in row.items() if k not in COLUMNS},
        )
        clips.append(clip)
        listed.append((clip, where, raw))
    if not clips:
        raise AvemoError(f"{csv_path}: no clips listed")
    check_unique(listed)
    return clips


def _records(text: str, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each non-blank CSV record; the delimiter is the header's (`,`, else tab, else `;`).

    A first line `sep=;` (written by Excel) names the delimiter and is skipped."""
    lines = re.split(r"\r\n|\r|\n", text)
    number, header = next(((n, line) for n, line in enumerate(lines) if line.strip()), (0, ""))
    excel = re.fullmatch(r"\s*sep=([,;\t|:])\s*", header, flags=re.IGNORECASE)
    if excel:
        header = lines[number + 1] if number + 1 < len(lines) else ""
    delimiter = excel.group(1) if excel else next((d for d in (",", "\t", ";") if d in header), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    end = 0
    if excel:
        while end <= number:  # the blank lines before it, and the sep= line
            next(reader)
            end = reader.line_num
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            problem = str(e)
            if "field larger than field limit" in problem:
                problem = f"a field longer than {csv.field_size_limit():,} characters; is this the right file?"
            elif "expected after" in problem or "end of data" in problem or "new-line character" in problem:
                problem = f"badly quoted field ({problem}); close every quote, and double a quote inside a quoted field"
            raise AvemoError(f"{path}:{end + 1}: {problem}") from None
        start, end = end + 1, reader.line_num
        if any(f.strip() for f in fields):
            yield start, fields


def _columns(header: list[str], where: str) -> dict[str, int]:
    """Column name → index; required names in any case, unnamed columns ignored, a name used twice refused."""
    names = [h.strip() for h in header]
    keys = [n.casefold() for n in names]
    for i, key in enumerate(keys):
        if CONTROL.search(names[i]):
            raise AvemoError(f"{where}: column name {shown(names[i])} holds a control character")
        if key and key in keys[:i]:
            j = keys.index(key)
            same = "" if names[i] == names[j] else f" (as {names[j]!r} and {names[i]!r})"
            raise AvemoError(
                f"{where}: column {shown(names[i])} appears twice{same}, columns {j + 1} and {i + 1}; "
                "which one holds the values is unknown: rename or delete one"
            )
    missing = [c for c in REQUIRED_COLUMNS if c not in keys]
    misspelt = _misspelt([c for c in COLUMNS if c not in keys], names)
    if missing or misspelt:  # an optional column written wrong (valance) is refused too: it is not metadata
        missing = missing or [c for c in COLUMNS if c not in keys]
        raise AvemoError(
            f"{where}: missing column(s) {', '.join(missing)}{_misspelt(missing, names)}; need {','.join(REQUIRED_COLUMNS)} "
            "(and valence, optional)"
        )
    return {(key if key in COLUMNS else names[i]): i for i, key in enumerate(keys) if key}


def _manifest_path(value: str, where: str) -> str:
    """The clip id: the path as written, `\\` as `/`, normalised (`./a.mp4`, `x//a.mp4` → `a.mp4`, `x/a.mp4`).

    Relative to the CSV's folder, which it may leave (`../videos/a.mp4`); an absolute path is kept."""
    rel = value.replace("\\", "/")
    if not rel:
        raise AvemoError(f"{where}: empty path")
    if CONTROL.search(rel):
        raise AvemoError(f"{where}: path {shown(rel)} holds a control character; a path is one line of text")
    norm = posixpath.normpath(rel)
    if norm in (".", "..", "/") or norm.endswith("/..") or rel.endswith("/"):
        raise AvemoError(f"{where}: path {shown(rel)} names a folder, not a video file")
    check_length(norm, where, "path")
    return norm


def check_unique(listed: Iterable[tuple[Clip, str, str]]) -> None:
    """Refuse a video file listed twice, under any spelling, and two files under one clip id.

    `listed` holds each clip with the FILE:LINE that lists it and its name as written there. A file is
    known by its (device, inode) when it exists (so symbolic and hard links to one file are one file),
    else by its resolved path."""
    by_file: dict[object, tuple[Clip, str, str]] = {}
    by_id: dict[str, tuple[Clip, str, str]] = {}
    for clip, where, name in listed:
        key = _file_key(clip.path)
        if key in by_file:
            first, first_where, first_name = by_file[key]
            split = f" (listed in both splits: {first.split} there, {clip.split} here)" if first.split != clip.split else ""
            same = "already listed" if name == first_name else f"is the same video file as {shown(first_name)}, already listed"
            raise AvemoError(f"{where}: clip {shown(name)} {same} {_at(first_where, where)}{split}; list each video once")
        if clip.clip_id in by_id:
            first, first_where, _ = by_id[clip.clip_id]
            raise AvemoError(
                f"{where}: clip id {shown(clip.clip_id)} (file {clip.path}) is already the id of another file ({first.path}) "
                f"{_at(first_where, where)}; two clips need two ids: write the paths without '..', or use one folder"
            )
        by_file[key] = by_id[clip.clip_id] = (clip, where, name)


def _file_key(path: Path) -> tuple:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return ("path", str(path))
    return ("file", st.st_dev, st.st_ino) if st.st_ino else ("path", str(path))


def _at(first: str, where: str) -> str:
    """'on line 2' when both FILE:LINE are in one file, else 'at FILE:LINE'."""
    file, _, line = first.rpartition(":")
    return f"on line {line}" if file and file == where.rpartition(":")[0] else f"at {first}"


def is_file(path: Path) -> bool:
    """Path.is_file, with False (not an exception) for a name the file system refuses."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _misspelt(missing: list[str], header: list[str]) -> str:
    """' (unknown column 'valance': misspelt 'valence'?)' when a header column is close to a missing one."""
    for column in missing:
        close = difflib.get_close_matches(column, [h for h in header if h.casefold() not in COLUMNS], n=1, cutoff=0.6)
        if close:
            return f" (unknown column {close[0]!r}: misspelt {column!r}?)"
    return ""


def check_splits(clips: list[Clip], source: str | Path) -> None:
    """Refuse a dataset with an empty train or test split (nothing to learn from, or nothing to score)."""
    for split in SPLITS:
        if not any(c.split == split for c in clips):
            raise AvemoError(f"{source}: empty split: no clip is in the {split} split; both train and test need clips")


def check_column(clips: list[Clip], column: str, source: str | Path) -> None:
    """Refuse a metadata column (e.g. a --group column) that no clip has, naming the columns there are."""
    if not any(column in c.meta for c in clips):
        have = sorted({k for c in clips for k in c.meta})
        raise AvemoError(f"{source}: unknown column {column!r}; the metadata columns are: {', '.join(have) or 'none'}")


def check_files(clips: list[Clip], manifest: str | Path) -> None:
    """Refuse to start when listed files are missing, instead of failing hours later."""
    missing = [c for c in clips if not is_file(c.path)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise AvemoError(f"{manifest}: video file {missing[0].path} {not_a_file(missing[0].path)}{more}")


def not_a_file(path: Path) -> str:
    """Why `path` is no video file: 'does not exist', 'is a folder', 'is not a regular file'."""
    try:
        return "is a folder" if path.is_dir() else "is not a regular file" if path.exists() else "does not exist"
    except (OSError, ValueError):
        return "cannot be read"


def write_manifest(csv_path: str | Path, rows: list[dict[str, object]]) -> None:
    """Write rows (dicts with at least the columns path, arousal, valence, split) as a manifest."""
    extra = [k for k in rows[0] if k not in COLUMNS]
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, *extra], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
