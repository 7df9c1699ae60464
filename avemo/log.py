"""What a command did, kept: `logged(FOLDER, ...)` appends everything the command prints (settings, phases,
times, warnings, errors) to FOLDER/log.txt, with a header and a footer; `progress(...)` draws a progress bar
only on a terminal, so redirected output and log files hold whole lines, never carriage-return updates.
No torch at import (evaluate uses it)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tqdm import tqdm

LOG_NAME = "log.txt"
_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # the cursor moves of tqdm's stacked bars


def rank() -> int:
    """This process's torchrun rank: from torch.distributed once it is initialised, else from $RANK (a command
    opens its log before it joins the process group); never imports torch."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0)


def terminal(stream: IO[str]) -> IO[str]:
    """The stream a `logged` command's sys.stdout or sys.stderr writes through to (the stream itself otherwise)."""
    while isinstance(stream, _Tee):
        stream = stream.stream
    return stream


def progress(iterable=None, **options) -> tqdm:
    """tqdm, drawn on an interactive terminal by rank 0 only, and never into a log file."""
    stream = terminal(options.pop("file", None) or sys.stderr)
    hidden = options.pop("disable", False) or rank() > 0 or not stream.isatty()
    return tqdm(iterable, disable=hidden, file=stream, **options)


class _Log:
    """FOLDER/log.txt, opened as soon as FOLDER exists (commands create their folder after their checks):
    what was written before is kept in memory until then. Only whole lines are written, each as a terminal
    would show it last (a carriage-return update keeps its final state), after the seconds since the start."""

    def __init__(self, folder: Path, started: float):
        self.folder, self.started, self.file, self.pending, self.partial = folder, started, None, [], ""
        self.broken = False

    def header(self, text: str) -> None:
        self._put(text)

    def write(self, text: str) -> None:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self._put(f"{time.perf_counter() - self.started:8.1f}s  {_shown(line)}\n")

    def end_line(self) -> None:
        """Ends a line printed without its newline (before the error or the footer)."""
        if _shown(self.partial):
            self.write("\n")
        self.partial = ""

    def close(self, footer: str) -> None:
        self.end_line()
        self._put(footer)
        if self.file is not None:
            os.close(self.file)

    def _put(self, text: str) -> None:
        if self.file is None and not self.broken and self.folder.is_dir():
            self._open()
        if self.file is None:
            self.pending.append(text)
            return
        try:
            os.write(self.file, text.encode("utf-8", "replace"))
        except OSError as e:
            self._give_up(e)

    def _open(self) -> None:
        path = self.folder / LOG_NAME
        try:  # appended to, never through a symbolic link
            self.file = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            self._give_up(e)
            return
        text, self.pending = "".join(self.pending), []
        self._put(text)

    def _give_up(self, e: OSError) -> None:
        """The command goes on without its log (a full disk or a read-only folder fails it on its own)."""
        if self.file is not None:
            os.close(self.file)
        self.file, self.broken, self.pending = None, True, []
        terminal(sys.stderr).write(f"note: cannot write {self.folder / LOG_NAME} ({e.strerror or e}); going on without it\n")


def _shown(line: str) -> str:
    """What a terminal shows of a line: the text after its last carriage return, without cursor moves."""
    return _CONTROL.sub("", line).rsplit("\r", 1)[-1].rstrip()


class _Tee:
    """A text stream that writes to the terminal's stream and to the log."""

    def __init__(self, stream: IO[str], log: _Log):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _settings_lines(settings: dict, prefix: str = "") -> list[str]:
    """'   name: value' per setting, nested dicts by dotted name."""
    lines = []
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            lines += _settings_lines(value, f"{prefix}{key}.")
        else:
            lines.append(f"   {prefix}{key}: {value}\n")
    return lines


@contextlib.contextmanager
def logged(folder: str | Path, command: str, settings: dict | None = None) -> Iterator[None]:
    """Append what runs inside to FOLDER/log.txt (rank 0; other ranks only print): a header with the time,
    the avemo version, the command and its settings, then every printed line, then the status and time."""
    if rank() > 0:
        yield
        return
    from avemo import __version__

    started = time.perf_counter()
    log = _Log(Path(folder), started)
    log.header(f"\n== {time.strftime('%Y-%m-%d %H:%M:%S')} avemo {__version__}: {command}\n")
    log.header("".join(_settings_lines(settings or {})))
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
    status = "failed"
    try:
        yield
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as e:
        log.end_line()
        log.write(f"Error: {e or type(e).__name__}\n")
        raise
    finally:
        sys.stdout, sys.stderr = out, err
        log.close(f"== {status} after {time.perf_counter() - started:.1f} s\n")
