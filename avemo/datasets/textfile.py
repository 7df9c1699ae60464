"""Reading the plain-text annotation files of LIRIS-ACCEDE / MediaEval 2015 as they are distributed.

The real files mix conventions: `ACCEDEsets.txt` has CRLF line ends and `ACCEDEranking.txt` LF; some are
tab separated with a header, the list files of later work are space separated without one. Every
reader here goes through `read_text()` (one `AvemoError` naming the file, and the line where there is
one, for a missing file, a folder, a pipe, an unreadable file, NUL bytes, UTF-16 or bytes that are not
UTF-8) and, for the annotation files, `rows()`, which accepts any line end (CRLF, LF, CR), a UTF-8
byte-order mark, and blank lines, and keeps the 1-based line number of each row for error messages.

Values read from the files are checked before they become paths: `relative_name()` keeps a name inside
its folder, `label()` reads a class -1/0/1 (also written `1.0`, as pandas writes an integer column with
gaps), and `shown()` quotes a value in a message without letting a 100,000-character one flood it.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from avemo.errors import AvemoError

_VIDEO_SUFFIX = ".mp4"
_LINE_END = re.compile(r"\r\n|\r|\n")
_LABEL = re.compile(r"[+-]?[01](?:\.0*)?")  # -1, 0, 1, +1, -0, 1.0, 1. (ASCII digits only)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # line breaks, tabs, escapes: never in a name
NAME_MAX = 255  # bytes in one file name (Linux, macOS, Windows)


def shown(value: str, limit: int = 60) -> str:
    """`value` quoted for a message; a long one is cut, with its length."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value):,} characters)"


def read_bytes(path: Path) -> bytes:
    """The bytes of an annotation file; a missing file, a folder, a pipe or a read error is one AvemoError."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AvemoError(f"{path}: file not found") from None
    except OSError as e:
        raise AvemoError(f"{path}: cannot read it ({e.strerror or e})") from None
    if stat.S_ISDIR(mode):
        raise AvemoError(f"{path}: is a folder; a file is expected here")
    if not stat.S_ISREG(mode):
        raise AvemoError(f"{path}: not a regular file (a pipe, socket or device?); give the file itself")
    try:
        return path.read_bytes()
    except OSError as e:
        raise AvemoError(f"{path}: cannot read it ({e.strerror or e})") from None


def read_text(path: Path) -> str:
    """The text of an annotation file (UTF-8, optional byte-order mark), or one AvemoError naming file and line."""
    data = read_bytes(path)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise AvemoError(f"{path}:1: UTF-16 text; save it as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise AvemoError(f"{path}:{_line_at(data, nul)}: NUL byte: not a text file; is this the right file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AvemoError(
            f"{path}:{_line_at(data, e.start)}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
            "save the file as UTF-8, or check that it is the right file"
        ) from None


def _line_at(data: bytes, offset: int) -> int:
    """1-based line of byte `offset`, counting CRLF, LF and CR line ends as `rows()` does."""
    return len(re.findall(rb"\r\n|\r|\n", data[:offset])) + 1


def rows(path: Path, sep: str | None = "\t") -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line, fields stripped.

    `sep=None` splits on any run of whitespace; `sep="auto"` splits a line on tabs when it has one, else
    on whitespace (a name with spaces then needs tabs); with tabs, empty fields at the end of a line
    (trailing tabs) are dropped."""
    for number, line in enumerate(_LINE_END.split(read_text(path)), start=1):
        if not line.strip():
            continue
        if sep is None or (sep == "auto" and "\t" not in line):
            fields = line.split()
        else:
            fields = [f.strip() for f in line.split("\t" if sep == "auto" else sep)]
            while len(fields) > 1 and fields[-1] == "":
                fields.pop()
        yield number, fields


def read_table(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a file with a header holding exactly `columns` (any order, any case).

    Tab separated as distributed; a line without any tab is split on spaces (a re-saved file), and
    trailing tabs are ignored.
    The formats are fixed, so a column outside `columns` is an error ("unknown column"): it nearly always
    means the wrong file (e.g. ACCEDEranking.txt given for ACCEDEaffect.txt) or a misspelt header. A
    column named twice (also in another case) is an error too: which of the two is meant is unknown."""
    it = rows(path, sep="auto")
    first = next(it, None)
    expected = f"the header must be {' '.join(columns)} (tab separated)"
    if first is None:
        raise AvemoError(f"{path}: empty file; expected a header {' '.join(columns)}")
    line, header = first
    known = {c.lower(): c for c in columns}
    lowered = [h.lower() for h in header]
    for i, h in enumerate(lowered):
        if not h:
            raise AvemoError(f"{path}:{line}: column {i + 1} has no name; {expected}")
        if h in lowered[:i]:
            j = lowered.index(h)
            raise AvemoError(f"{path}:{line}: column {shown(header[i])} appears twice (columns {j + 1} and {i + 1}); {expected}")
    unknown = [h for h in header if h.lower() not in known]
    if unknown:
        raise AvemoError(f"{path}:{line}: unknown column {shown(unknown[0])}; {expected}")
    missing = [c for c in columns if c.lower() not in lowered]
    if missing:
        raise AvemoError(f"{path}:{line}: missing column {missing[0]!r}; {expected}")
    names = [known[h] for h in lowered]
    for number, fields in it:
        if len(fields) != len(names):
            raise AvemoError(f"{path}:{number}: {len(fields)} fields, expected {len(names)} ({' '.join(names)}, tab separated)")
        yield number, dict(zip(names, fields))


def label(value: str, where: str, what: str) -> int:
    """A class -1/0/1; anything else is one clear error at `where` (FILE:LINE).

    Written as an integer (`-1`, `+1`, `-0` = 0) or with a zero fraction (`1.0`, `-1.0`: pandas writes an
    integer column that has empty cells that way); `0.5`, `inf`, `nan`, `calm` or a non-ASCII digit are
    refused."""
    text = value.strip()
    if not _LABEL.fullmatch(text):
        raise AvemoError(f"{where}: {what} must be -1, 0 or 1, got {shown(value)}")
    return int(text.partition(".")[0])


def relative_name(value: str, where: str, what: str, inside: str, clip: bool = False) -> str:
    """A file name read from an annotation file, as a normal relative posix path that stays in its folder.

    `ACCEDE00000.mp4`, `data/ACCEDE00000.mp4` and `./data//ACCEDE00000.mp4` are fine (the last becomes
    `data/ACCEDE00000.mp4`); an absolute path (`/etc/passwd`, `C:\\x`), a name that leaves its folder
    (`../x`, `data/../../x`), a folder (`data/`), a control character or a name longer than the file
    system allows are refused at `where`. `inside` says what the name is relative to, for the message;
    `clip` adds `.mp4` to a name without an extension (`clip_name`)."""
    name = value.strip().replace("\\", "/")
    if not name:
        raise AvemoError(f"{where}: empty {what}")
    if CONTROL.search(name):
        raise AvemoError(f"{where}: {what} {shown(name)} holds a control character; a file name is one line of text")
    if name.startswith("/") or re.match(r"[A-Za-z]:/", name):
        raise AvemoError(f"{where}: {what} {shown(name)} is an absolute path; names are relative to {inside} and stay inside it")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../"):
        raise AvemoError(
            f"{where}: {what} {shown(name)} leaves its folder (..); names are relative to {inside} and stay inside it"
        )
    if norm == "." or name.endswith("/"):
        raise AvemoError(f"{where}: {what} {shown(name)} names a folder, not a video file")
    if clip:
        norm = clip_name(norm)
    check_length(norm, where, what)
    return norm


def check_length(name: str, where: str, what: str) -> None:
    """Refuse a path with a part longer than a file name can be (255 bytes), before the file system does."""
    longest = max(name.split("/"), key=lambda part: len(os.fsencode(part)))
    if len(os.fsencode(longest)) > NAME_MAX:
        raise AvemoError(
            f"{where}: {what} {shown(name)} is too long for a file name ({len(os.fsencode(longest)):,} bytes, at most {NAME_MAX})"
        )


def resolved(path: Path, where: str) -> Path:
    """`path.resolve()`, with a symbolic link loop (or a name the file system refuses) one error at `where`."""
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError) as e:
        raise AvemoError(f"{where}: cannot resolve {path} ({e})") from None


def clip_name(name: str) -> str:
    """The clip's file name: `ACCEDE00000` and `ACCEDE00000.mp4` both give `ACCEDE00000.mp4`.

    Public loaders write the name column with and without the extension; a name that already has
    another extension (`clip.avi`) is kept as it is."""
    name = name.strip().replace("\\", "/")
    return name if Path(name).suffix else name + _VIDEO_SUFFIX


def shot_id(value: str) -> str:
    """MediaEval shot ids as `SHOT_006144`, whether written `SHOT_006144`, `shot_6144` or `6144`.

    The number is compared as digits (leading zeros dropped), never converted to an int: a 100,000-digit
    id is a key like any other, not a crash."""
    match = re.fullmatch(r"(?i)(?:shot_?)?([0-9]+)", value.strip())
    return f"SHOT_{match.group(1).lstrip('0').zfill(6)}" if match else value.strip()
