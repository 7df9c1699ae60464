"""The list format published with later work on MediaEval 2015 (e.g. `AIMT15_train.list`, `AIMT15_test.list`).

One clip per line, space separated, no header: `SHOT_006144 0 -1` = MediaEval shot id, valence class,
arousal class (-1/0/1). `AIMT15_train.list` is the development set (6,144 clips, → `train`),
`AIMT15_test.list` the test set (4,756 clips, → `test`).

A list's split comes from its file name (`test` in it → test; `train`, `dev` or `learn` → train), or is
given as `train=FILE` / `test=FILE`.

The list holds shot ids, not file names. How an id becomes a video file, in this order:

1. `root` (a MediaEval 2015 release folder, see `mediaeval.py`): its `shots-devset-nl.txt` /
   `shots-testset-nl.txt` map shot ids to clip names, found under `data/`; id = path relative to root.
2. `maps`: two-column files `ID NAME` (tab or spaces, no header; the shots-*-nl.txt files are such maps);
   NAME is relative to `videos` if given, else to the map file's folder.
3. `videos` alone: the file `VIDEOS/<id>.mp4` (`SHOT_006144.mp4`), or else the one file `VIDEOS/<id>.*`.
4. None of them: the labels are read and summarised, but no file can be checked (`files_checked` False),
   and `extract` refuses such a dataset.

Ids are compared as shot numbers: `SHOT_006144`, `shot_6144` and `6144` are the same shot.
"""

from __future__ import annotations

from pathlib import Path

from avemo.datasets.dataset import Dataset
from avemo.datasets.labels import SPLITS
from avemo.datasets.manifest import Clip
from avemo.datasets.mediaeval import MAPPING_FILES, find, video_index
from avemo.datasets.textfile import clip_name, label, rows, shot_id
from avemo.errors import AvemoError


def list_split(spec: str) -> tuple[str, Path]:
    """`train=FILE`, `test=FILE`, or FILE whose name tells its split → (split, path)."""
    head, eq, tail = spec.partition("=")
    if eq and head.lower() in SPLITS:
        return head.lower(), Path(tail)
    path = Path(spec)
    stem = path.name.lower()
    is_test, is_train = "test" in stem, any(w in stem for w in ("train", "dev", "learn"))
    if is_test == is_train:
        raise AvemoError(f"{path}: cannot tell the split from the file name; write train={spec} or test={spec}")
    return ("test" if is_test else "train"), path


def read_list(path: Path) -> list[tuple[str, str, int, int, str]]:
    """(id as written, shot key, valence, arousal, FILE:LINE) of each line of a list file."""
    out, seen = [], {}
    for line, fields in rows(path, sep=None):
        where = f"{path}:{line}"
        if len(fields) != 3:
            raise AvemoError(f"{where}: {len(fields)} fields, expected 3 (id valence arousal, space separated)")
        key = shot_id(fields[0])
        if key in seen:
            raise AvemoError(f"{where}: duplicate id {fields[0]!r}, first on line {seen[key]}")
        seen[key] = line
        out.append((fields[0], key, label(fields[1], where, "valence"), label(fields[2], where, "arousal"), where))
    if not out:
        raise AvemoError(f"{path}: empty split (no clips listed)")
    return out


def read_map(path: Path) -> dict[str, tuple[str, str, Path]]:
    """Shot key → (file name, FILE:LINE, the map's folder) of a two-column map file."""
    out: dict[str, tuple[str, str, Path]] = {}
    for line, fields in rows(path, sep=None):
        where = f"{path}:{line}"
        if len(fields) != 2:
            raise AvemoError(f"{where}: {len(fields)} fields, expected 2 (id, file name)")
        key = shot_id(fields[0])
        if key in out:
            raise AvemoError(f"{where}: duplicate id {fields[0]!r}, first at {out[key][1]}")
        out[key] = (clip_name(fields[1]), where, path.parent)
    return out


def load_lists(specs: list[str], videos: Path | None = None, maps: list[Path] | None = None, root: Path | None = None) -> Dataset:
    """Read one or more list files and map their ids to video files (rules in the module docstring)."""
    if not specs:
        raise AvemoError("no list file given")
    notes: list[str] = []
    names: dict[str, tuple[str, str, Path]] = {}  # shot key → (name, where, map folder), from map files
    base: Path | None = None  # folder the names are relative to
    index: dict[str, Path] = {}
    if root is not None:
        if not root.is_dir():
            raise AvemoError(f"{root}: not a folder")
        found = [find(root, n) for n in MAPPING_FILES.values()]
        if not all(found):
            raise AvemoError(f"{root}: needs {' and '.join(MAPPING_FILES.values())} to map shot ids to clip files")
        for path in found:
            _merge(names, read_map(path))
        base, index = root, video_index(root)
        notes.append(f"ids → files: {', '.join(p.name for p in found)}, videos under {root}")
    elif maps:
        for path in maps:
            _merge(names, read_map(path))
        notes.append(f"ids → files: {', '.join(str(p) for p in maps)}")
    elif videos is not None:
        if not videos.is_dir():
            raise AvemoError(f"{videos}: not a folder")
        notes.append(f"ids → files: {videos}/<id>.mp4 (or the one {videos}/<id>.* file)")
    else:
        notes.append("video files not checked: give --videos DIR, --map FILE or --root DIR to map ids to files")

    clips: list[Clip] = []
    listed_at: dict[str, str] = {}
    split_of: dict[str, tuple[str, str]] = {}  # shot key → (split, where)
    for spec in specs:
        split, path = list_split(spec)
        for written, key, valence, arousal, where in read_list(path):
            if key in split_of:
                other_split, other = split_of[key]
                problem = "is listed in both splits" if other_split != split else "is a duplicate"
                raise AvemoError(f"{where}: id {written!r} {problem} ({other_split} at {other}, {split} here)")
            split_of[key] = (split, where)
            file, rel = _locate(written, key, where, names, base, index, videos, maps, path)
            clips.append(Clip(rel, file, arousal, valence, split, meta={"shot": key}))
            listed_at[rel] = where
    return Dataset(", ".join(specs), clips, notes, files_checked=bool(root or maps or videos), listed_at=listed_at)


def _merge(into: dict[str, tuple[str, str, Path]], more: dict[str, tuple[str, str, Path]]) -> None:
    for key, value in more.items():
        if key in into:
            raise AvemoError(f"{value[1]}: id {key!r} is mapped twice (also at {into[key][1]})")
        into[key] = value


def _locate(written, key, where, names, base, index, videos, maps, list_path) -> tuple[Path, str]:
    """(absolute video path, clip id) for one list entry."""
    if names:
        if key not in names:
            raise AvemoError(f"{where}: id {written!r} is not in the map file(s)")
        name, _, map_folder = names[key]
        if base is not None:  # a release root: bare names are looked up under its data/ folders
            path = base / name if "/" in name else index.get(name, base / "data" / name)
            return path.resolve(), path.relative_to(base).as_posix()
        folder = videos if videos is not None else map_folder
        return (folder / name).resolve(), name
    folder = videos if videos is not None else list_path.parent
    path = folder / f"{written}.mp4"
    if videos is not None and not path.is_file():
        others = sorted(folder.glob(f"{written}.*"))
        if len(others) == 1:
            path = others[0]
    return path.resolve(), path.name
