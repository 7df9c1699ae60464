"""Reading the plain-text annotation files of LIRIS-ACCEDE / MediaEval 2015 as they are distributed.

The real files mix conventions: `ACCEDEsets.txt` has CRLF line ends and `ACCEDEranking.txt` LF; some are
tab separated with a header, the list files of later work are space separated without one. Every
reader here goes through `rows()`, which accepts any line end (CRLF, LF, CR), a UTF-8 byte-order mark,
and trailing blank lines, and keeps the 1-based line number of each row for error messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from avemo.datasets.labels import LABEL_VALUES
from avemo.errors import AvemoError

_VIDEO_SUFFIX = ".mp4"


def rows(path: Path, sep: str | None = "\t") -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line; `sep=None` splits on any run of whitespace."""
    if not path.is_file():
        raise AvemoError(f"{path}: file not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise AvemoError(f"{path}:{line}: not UTF-8 text; is this the right file?") from None
    for number, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        if line.strip():
            yield number, [f.strip() for f in (line.split(sep) if sep else line.split())]


def read_table(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a tab-separated file with a header holding exactly `columns` (any order, any case).

    The formats are fixed, so a column outside `columns` is an error ("unknown column"): it nearly always
    means the wrong file (e.g. ACCEDEranking.txt given for ACCEDEaffect.txt) or a misspelt header."""
    it = rows(path)
    first = next(it, None)
    if first is None:
        raise AvemoError(f"{path}: empty file; expected a header {' '.join(columns)}")
    line, header = first
    known = {c.lower(): c for c in columns}
    unknown = [h for h in header if h.lower() not in known]
    if unknown:
        raise AvemoError(f"{path}:{line}: unknown column {unknown[0]!r}; the header must be {' '.join(columns)} (tab separated)")
    missing = [c for c in columns if c.lower() not in {h.lower() for h in header}]
    if missing:
        raise AvemoError(f"{path}:{line}: missing column {missing[0]!r}; the header must be {' '.join(columns)} (tab separated)")
    names = [known[h.lower()] for h in header]
    for number, fields in it:
        if len(fields) != len(names):
            raise AvemoError(f"{path}:{number}: {len(fields)} fields, expected {len(names)} ({' '.join(names)}, tab separated)")
        yield number, dict(zip(names, fields))


def label(value: str, where: str, what: str) -> int:
    """A class -1/0/1 written as an integer; anything else is one clear error at `where` (FILE:LINE)."""
    try:
        result = int(value)
    except ValueError:
        result = None
    if result not in LABEL_VALUES:
        raise AvemoError(f"{where}: {what} must be -1, 0 or 1, got {value!r}")
    return result


def clip_name(name: str) -> str:
    """The clip's file name: `ACCEDE00000` and `ACCEDE00000.mp4` both give `ACCEDE00000.mp4`.

    Public loaders write the name column with and without the extension; a name that already has
    another extension (`clip.avi`) is kept as it is."""
    name = name.strip().replace("\\", "/")
    return name if Path(name).suffix else name + _VIDEO_SUFFIX


def shot_id(value: str) -> str:
    """MediaEval shot ids as `SHOT_006144`, whether written `SHOT_006144`, `shot_6144` or `6144`."""
    match = re.fullmatch(r"(?i)(?:shot_?)?(\d+)", value.strip())
    return f"SHOT_{int(match.group(1)):06d}" if match else value.strip()
