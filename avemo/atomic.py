"""avemo's own files, written whole or not at all and never through a planted link; and read back safely.

Writers put the bytes into a temporary name beside the target (created with O_EXCL | O_NOFOLLOW, so a link
planted at that name is never followed), fsync it, then rename it over the target, so a kill never leaves half a
checkpoint, model, JSON or report behind. A target that is a symbolic link is refused: a run folder from
someone else could otherwise point `report.md` or a checkpoint at one of the user's files. `ensure_dir`
refuses symbolic links among the folders avemo creates inside a run.

`load_torch` reads a checkpoint with `weights_only=True` and turns whatever torch raises for a file it did not
write (random bytes, a pickle that wants to run code) into one line naming the file, never torch's own
message (which suggests the unsafe `weights_only=False`). torch is imported only there, so the evaluation
code can use these writers without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from avemo.errors import AvemoError

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def refuse_link(path: Path) -> None:
    """One clear error when `path` is a symbolic link (avemo never writes through one)."""
    if Path(path).is_symlink():
        raise AvemoError(
            f"{path}: is a symbolic link (to {os.readlink(path)}); avemo does not write through links, which could "
            "overwrite another file: remove the link (or choose another folder)"
        )


def ensure_dir(path: Path, under: Path | None = None) -> Path:
    """mkdir -p `path`, refusing symbolic links at `path` and at every folder between `under` and it."""
    path = Path(path)
    if under is not None:
        under = Path(under)
        for parent in reversed(path.relative_to(under).parents[:-1]):
            refuse_link(under / parent)
    refuse_link(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[IO[bytes]]:
    """A binary file object on PATH.tmp (never a link's target); renamed over PATH when the block ends."""
    path = Path(path)
    refuse_link(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, _FLAGS, 0o666)
    except FileExistsError:  # left by a killed run, or planted: unlink removes the name itself, never a target
        os.unlink(tmp)
        fd = os.open(tmp, _FLAGS, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename makes it the file
        try:
            os.replace(tmp, path)
        except OSError as e:  # name the file the user knows, not our temporary one
            raise OSError(e.errno, e.strerror, str(path)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    with _replacing(path) as handle:
        handle.write(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, value: object) -> None:
    write_text(path, json.dumps(value, indent=1))


def save_torch(value: object, path: Path) -> None:
    import torch

    with _replacing(path) as handle:
        torch.save(value, handle)


def load_torch(path: Path, remedy: str, map_location: str = "cpu") -> dict:
    """A dict saved by avemo with torch.save; anything else is one AvemoError naming `path` and the `remedy`."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise AvemoError(f"{path}: not found; {remedy}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it did not write
            warnings.simplefilter("ignore")
            value = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise  # an I/O error: the CLI names the file and the reason
    except Exception as e:  # noqa: BLE001 - random bytes, a foreign or malicious pickle, a truncated zip
        raise AvemoError(f"{path}: not a file written by avemo ({type(e).__name__}); {remedy}") from None
    if not isinstance(value, dict):
        raise AvemoError(f"{path}: not a file written by avemo (holds a {type(value).__name__}); {remedy}")
    return value


def read_json(path: Path, remedy: str) -> dict:
    """A JSON object from `path`; invalid JSON or another value is one AvemoError naming the file and `remedy`."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise AvemoError(f"{path}: not valid JSON ({str(e).splitlines()[0][:100]}); {remedy}") from None
    if not isinstance(value, dict):
        raise AvemoError(f"{path}: not a JSON object; {remedy}")
    return value


def check_writable(path: Path, option: str = "-o") -> None:
    """Refuse, before any work, an output file that cannot be written (folder missing, not a folder, not
    writable; the file a folder, a link or read-only)."""
    path = Path(path)
    refuse_link(path)
    parent = path.parent
    if path.is_dir():
        raise AvemoError(f"{option} {path}: is a folder; give a file name")
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise AvemoError(f"{option} {path}: {parent} {what}; create the folder or choose another {option}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AvemoError(f"{option} {path}: cannot write in {parent} (permission denied); choose another {option}")
    if path.exists() and not os.access(path, os.W_OK):
        raise AvemoError(f"{option} {path}: the file is read-only; choose another {option} or make it writable")
