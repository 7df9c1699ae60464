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
from avemo.datasets.manifest import Clip, check_unique
from avemo.datasets.mediaeval import MAPPING_FILES, find, video_index
from avemo.datasets.textfile import CONTROL, check_length, label, relative_name, resolved, rows, shot_id, shown
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
        if CONTROL.search(fields[0]):
            raise AvemoError(f"{where}: id {shown(fields[0])} holds a control character")
        check_length(f"{fields[0]}.mp4", where, "id")  # an id names a file (<id>.mp4)
        if not out and not any(is_label(f) for f in fields[1:]):
            raise AvemoError(f"{where}: {shown(' '.join(fields))} is not 'id valence arousal' (a header? list files have none)")
        key = shot_id(fields[0])
        if key in seen:
            raise AvemoError(f"{where}: duplicate id {shown(fields[0])}, first on line {seen[key]}")
        seen[key] = line
        out.append((fields[0], key, label(fields[1], where, "valence"), label(fields[2], where, "arousal"), where))
    if not out:
        raise AvemoError(f"{path}: empty split (no clips listed)")
    return out


def is_label(value: str) -> bool:
    """Whether a list-file field is a class label (-1, 0, 1)."""
    try:
        label(value, "", "")
    except AvemoError:
        return False
    return True


MAP_NAMES = "--videos DIR if given, else to the map file's folder,"


def read_map(path: Path) -> dict[str, tuple[str, str, Path]]:
    """Shot key → (file name, FILE:LINE, the map's folder) of a two-column map file.

    The name is a path relative to `--videos` (or the map's folder) that stays inside it: an absolute
    name or one that leaves the folder with `..` is refused (`relative_name`)."""
    out: dict[str, tuple[str, str, Path]] = {}
    for line, fields in rows(path, sep="auto"):
        where = f"{path}:{line}"
        if len(fields) != 2:
            raise AvemoError(f"{where}: {len(fields)} fields, expected 2 (id, file name; tab separated when a name has spaces)")
        check_length(fields[0], where, "id")
        key = shot_id(fields[0])
        if key in out:
            raise AvemoError(f"{where}: duplicate id {shown(fields[0])}, first at {out[key][1]}")
        out[key] = (relative_name(fields[1], where, "file name", MAP_NAMES, clip=True), where, path.parent)
    if not out:
        raise AvemoError(f"{path}: empty map file (no 'id name' lines)")
    return out


def load_lists(specs: list[str], videos: Path | None = None, maps: list[Path] | None = None, root: Path | None = None) -> Dataset:
    """Read one or more list files and map their ids to video files (rules in the module docstring)."""
    if not specs:
        raise AvemoError("no list file given")
    if root is not None and (videos is not None or maps):
        raise AvemoError(
            "--root maps ids to files through its shots-*-nl.txt files, so --videos / --map would be ignored; give "
            "--root alone, or --map ROOT/shots-devset-nl.txt --map ROOT/shots-testset-nl.txt --videos DIR"
        )
    notes: list[str] = []
    names, base, index = _id_maps(videos, maps, root, notes)
    clips: list[Clip] = []
    listed: list[tuple[Clip, str, str]] = []
    listed_at: dict[str, str] = {}
    split_of: dict[str, tuple[str, str]] = {}  # shot key → (split, where)
    stems = _Stems(videos) if videos is not None else None
    for spec in specs:
        split, path = list_split(spec)
        for written, key, valence, arousal, where in read_list(path):
            if key in split_of:
                other_split, other = split_of[key]
                problem = "is listed in both splits" if other_split != split else "is a duplicate"
                raise AvemoError(f"{where}: id {shown(written)} {problem} ({other_split} at {other}, {split} here)")
            split_of[key] = (split, where)
            file, rel = _locate(written, key, where, names, base, index, videos, stems, path)
            clip = Clip(rel, file, arousal, valence, split, meta={"shot": key})
            clips.append(clip)
            listed.append((clip, where, rel))
            listed_at[rel] = where
    if root or maps or videos:
        check_unique(listed)
    return Dataset(", ".join(specs), clips, notes, files_checked=bool(root or maps or videos), listed_at=listed_at)


def _id_maps(
    videos: Path | None, maps: list[Path] | None, root: Path | None, notes: list[str]
) -> tuple[dict[str, tuple[str, str, Path]], Path | None, dict[str, Path]]:
    """How ids become files, noted in `notes`: (shot key → (name, FILE:LINE, map folder) from the map files,
    the release root the names are relative to or None, file name → video path under that root)."""
    names: dict[str, tuple[str, str, Path]] = {}
    if root is not None:
        _folder(root, "--root")
        found = [find(root, n) for n in MAPPING_FILES.values()]
        if not all(found):
            raise AvemoError(f"{root}: needs {' and '.join(MAPPING_FILES.values())} to map shot ids to clip files")
        for path in found:
            _merge(names, read_map(path))
        notes.append(f"ids → files: {', '.join(p.name for p in found)}, videos under {root}")
        return names, root, video_index(root)
    if maps:
        for path in maps:
            _merge(names, read_map(path))
        notes.append(f"ids → files: {', '.join(str(p) for p in maps)}")
    elif videos is not None:
        _folder(videos, "--videos")
        notes.append(f"ids → files: {videos}/<id>.mp4 (or the one {videos}/<id>.* file)")
    else:
        notes.append("video files not checked: give --videos DIR, --map FILE or --root DIR to map ids to files")
    return names, None, {}


def _folder(path: Path, option: str) -> None:
    if not path.is_dir():
        raise AvemoError(f"{path}: {'not a folder' if path.exists() else 'does not exist'}; {option} is a folder")


def _merge(into: dict[str, tuple[str, str, Path]], more: dict[str, tuple[str, str, Path]]) -> None:
    for key, value in more.items():
        if key in into:
            raise AvemoError(f"{value[1]}: id {shown(key)} is mapped twice (also at {into[key][1]})")
        into[key] = value


class _Stems:
    """File stem → files of a --videos folder, listed once when a `<id>.mp4` is missing (ids are literal,
    not glob patterns: `SHOT_*` matches nothing)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.index = folder, None

    def get(self, stem: str) -> list[Path]:
        if self.index is None:
            self.index = {}
            try:
                entries = sorted(self.folder.iterdir())
            except OSError as e:
                raise AvemoError(f"{self.folder}: cannot list the folder ({e.strerror or e})") from None
            for entry in entries:
                self.index.setdefault(entry.stem, []).append(entry)
        return self.index.get(stem, [])


def _locate(written, key, where, names, base, index, videos, stems, list_path) -> tuple[Path, str]:
    """(absolute video path, clip id) for one list entry."""
    if names:
        if key not in names:
            raise AvemoError(f"{where}: id {shown(written)} is not in the map file(s)")
        name, _, map_folder = names[key]
        if base is not None:  # a release root: bare names are looked up under its data/ folders
            path = base / name if "/" in name else index.get(name, base / "data" / name)
            return resolved(path, where), path.relative_to(base).as_posix()
        folder = videos if videos is not None else map_folder
        return resolved(folder / name, where), name
    folder = videos if videos is not None else list_path.parent
    if videos is not None:
        if "/" in written or "\\" in written or written in (".", ".."):
            raise AvemoError(f"{where}: id {shown(written)} cannot be a file name in {videos}; map ids to files with --map FILE")
    path = folder / f"{written}.mp4"
    if stems is not None and not path.is_file():
        others = [p for p in stems.get(written) if p.is_file()]
        if len(others) == 1:
            path = others[0]
    return resolved(path, where), path.name
