"""The MediaEval 2015 affective task data (LIRIS-ACCEDE + MEDIAEVAL clips) read as distributed.

Files, looked for in DIR, DIR/annotations, and one folder below DIR (and its `annotations/`), as the
zips unpack:

- `ACCEDEaffect.txt`, `MEDIAEVALaffect.txt`: `id name valenceClass arousalClass`, tab separated, header;
  classes -1/0/1. `name` is read with or without `.mp4`. At least one of them is needed.
- `shots-devset-nl.txt`, `shots-testset-nl.txt` (MEDIAEVAL-mapping.zip): `shot id <TAB> clip name`, no
  header. When both are present they define the split: the official 6,144 development (→ `train`) and
  4,756 test clips.
- Without them, the split falls back to `ACCEDEsets.txt` / `MEDIAEVALsets.txt` (`id name set`, header):
  set 1 (learning) and 2 (validation) → `train`, 0 → `test`. This is LIRIS-ACCEDE's own split (the
  dataset's Readme: "in case the validation set is not used, it is included in the learning set"), not
  MediaEval's; the loader says so in its notes. The original set is kept in `meta["set"]`.
- `ACCEDEdescription.xml`, `MEDIAEVALdescription.xml` (optional): `<media>` with `<name>` and `<movie>`;
  the movie becomes `meta["movie"]`, so validation splits can keep a movie on one side.
- Videos: `data/NAME` under DIR or under one folder below it. A clip's id is its path relative to DIR,
  e.g. `data/ACCEDE00000.mp4`.

Clips are matched across files by file name, never by `id`: ids restart at 0 in each file and the
shot ids of the mapping are a third numbering.
"""

from __future__ import annotations

import filecmp
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from avemo.datasets.dataset import Dataset
from avemo.datasets.manifest import Clip, check_unique
from avemo.datasets.textfile import (
    check_length,
    clip_name,
    label,
    read_bytes,
    read_table,
    relative_name,
    resolved,
    rows,
    shot_id,
    shown,
)
from avemo.errors import AvemoError

SOURCES = ("ACCEDE", "MEDIAEVAL")
AFFECT_COLUMNS = ("id", "name", "valenceClass", "arousalClass")
SETS_COLUMNS = ("id", "name", "set")
MAPPING_FILES = {"train": "shots-devset-nl.txt", "test": "shots-testset-nl.txt"}
SET_SPLITS = {"1": ("train", "learning"), "2": ("train", "validation"), "0": ("test", "test")}


@dataclass
class _Labels:
    source: str
    id: str
    valence: int
    arousal: int
    where: str  # FILE:LINE of the affect row


# clip name → (split, meta, FILE:LINE where the split was given)
_Assigned = dict[str, tuple[str, dict[str, str], str]]

NAMES = "the release's data/ folder"


def find(root: Path, file_name: str) -> Path | None:
    """`file_name` in DIR, DIR/annotations, or a folder one level below DIR (and its annotations/).

    The first entry of that name is returned even when it is no file (a folder, a pipe), so that reading
    it says so instead of "not found". Two copies are fine when they hold the same bytes (the zips
    unpacked twice); two different files of one name are refused, since which one holds the right
    annotations is unknown."""
    folders = [root, root / "annotations"]
    for sub in _listdir(root):
        if sub.is_dir() and sub.name not in ("data", "annotations"):
            folders += [sub, sub / "annotations"]
    found = [f / file_name for f in folders if (f / file_name).exists()]
    for other in found[1:]:
        if not _same_bytes(found[0], other):
            raise AvemoError(f"{root}: two different {file_name}: {found[0]} and {other}; remove or rename one")
    return found[0] if found else None


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _listdir(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise AvemoError(f"{folder}: cannot list the folder ({e.strerror or e})") from None


def video_index(root: Path) -> dict[str, Path]:
    """File name → path for every file in DIR/data and DIR/*/data (first found wins)."""
    index: dict[str, Path] = {}
    subs = [sub for sub in _listdir(root) if sub.is_dir() and not sub.name.startswith(".")]
    for folder in [root / "data", *(sub / "data" for sub in subs)]:
        if folder.is_dir():
            for path in _listdir(folder):
                index.setdefault(path.name, path)
    return index


def read_affect(path: Path, source: str, into: dict[str, _Labels]) -> None:
    """Add the labels of one affect file to `into` (name → labels); a name seen before is an error."""
    ids: dict[str, int] = {}
    for line, row in read_table(path, AFFECT_COLUMNS):
        where = f"{path}:{line}"
        name = relative_name(row["name"], where, "name", NAMES, clip=True)
        if name in into:
            raise AvemoError(f"{where}: duplicate clip {shown(name)}, already labelled at {into[name].where}")
        if row["id"] in ids:
            raise AvemoError(f"{where}: duplicate id {shown(row['id'])}, already used on line {ids[row['id']]}")
        ids[row["id"]] = line
        into[name] = _Labels(
            source,
            row["id"],
            valence=label(row["valenceClass"], where, "valenceClass"),
            arousal=label(row["arousalClass"], where, "arousalClass"),
            where=where,
        )
    if not ids:
        raise AvemoError(f"{path}: no clips listed (a header and no rows)")


def read_mapping(path: Path) -> list[tuple[str, str, str]]:
    """(shot id, clip name, FILE:LINE) of a shots-*-nl.txt file; duplicates are errors."""
    out, shots, names = [], {}, {}
    for line, fields in rows(path, sep="auto"):
        where = f"{path}:{line}"
        if len(fields) != 2:
            raise AvemoError(f"{where}: {len(fields)} fields, expected 2 (shot id, clip file name)")
        check_length(fields[0], where, "shot id")
        shot, name = shot_id(fields[0]), relative_name(fields[1], where, "clip name", NAMES, clip=True)
        for key, seen, what in ((shot, shots, "shot id"), (name, names, "clip")):
            if key in seen:
                raise AvemoError(f"{where}: duplicate {what} {shown(key)}, first on line {seen[key]}")
            seen[key] = line
        out.append((shot, name, where))
    if not out:
        raise AvemoError(f"{path}: empty split (no clips listed)")
    return out


def read_sets(path: Path) -> list[tuple[str, str, str]]:
    """(clip name, set value, FILE:LINE) of an ACCEDEsets / MEDIAEVALsets file."""
    out, names = [], {}
    for line, row in read_table(path, SETS_COLUMNS):
        where = f"{path}:{line}"
        name = relative_name(row["name"], where, "name", NAMES, clip=True)
        if name in names:
            raise AvemoError(f"{where}: duplicate clip {shown(name)}, first on line {names[name]}")
        names[name] = line
        if row["set"] not in SET_SPLITS:
            raise AvemoError(f"{where}: set must be 1 (learning), 2 (validation) or 0 (test), got {shown(row['set'])}")
        out.append((name, row["set"], where))
    if not out:
        raise AvemoError(f"{path}: no clips listed (a header and no rows)")
    return out


def read_movies(path: Path) -> dict[str, str]:
    """Clip name → movie from a description XML (`<media><name>…</name><movie>…</movie></media>`)."""
    try:
        tree = ET.fromstring(read_bytes(path))
    except ET.ParseError as e:
        raise AvemoError(f"{path}:{e.position[0]}: not well-formed XML ({e})") from None
    movies = {}
    for n, media in enumerate(tree.iter("media"), start=1):
        name, movie = media.findtext("name"), media.findtext("movie")
        if not name or not name.strip():
            raise AvemoError(f"{path}: <media> number {n} has no <name>")
        if movie and movie.strip():
            movies[clip_name(name)] = movie.strip()
    return movies


def load_mediaeval(root: str | Path) -> Dataset:
    """Read the release under `root` and check it; see the module docstring for the files and rules."""
    root = Path(root)
    if not root.is_dir():
        problem = "not a folder" if root.exists() else "does not exist"
        raise AvemoError(f"{root}: {problem}; --root is the folder the MediaEval 2015 zips were unpacked into")
    notes: list[str] = []
    labels = _read_labels(root, notes)
    mapping = {split: find(root, name) for split, name in MAPPING_FILES.items()}
    if all(mapping.values()):
        assigned = _split_by_mapping(mapping, labels, notes)
    elif any(mapping.values()):
        have = next(p for p in mapping.values() if p)
        lacking = next(n for s, n in MAPPING_FILES.items() if not mapping[s])
        raise AvemoError(f"{have}: found, but {lacking} is missing; the official split needs both mapping files")
    else:
        assigned = _split_by_sets(root, labels, notes)
    movies = _read_all_movies(root, labels, notes)
    return _dataset(root, labels, assigned, movies, notes)


def _read_labels(root: Path, notes: list[str]) -> dict[str, _Labels]:
    """Clip name → labels from the affect files found under `root` (at least one is needed)."""
    labels: dict[str, _Labels] = {}
    for source in SOURCES:
        path = find(root, f"{source}affect.txt")
        if path:
            read_affect(path, source, labels)
        else:
            notes.append(f"no {source}affect.txt: no {source} clips")
    if not labels:
        raise AvemoError(f"{root}: no ACCEDEaffect.txt or MEDIAEVALaffect.txt in it, its annotations/ or a folder below")
    return labels


def _split_by_mapping(mapping: dict[str, Path], labels: dict[str, _Labels], notes: list[str]) -> _Assigned:
    """The official split, from both shots-*-nl.txt files."""
    notes.insert(0, f"split: official MediaEval 2015 ({mapping['train'].name} → train, {mapping['test'].name} → test)")
    assigned: _Assigned = {}
    for split, path in mapping.items():
        for shot, name, where in read_mapping(path):
            _assign(assigned, labels, name, split, {"shot": shot}, where)
    left = len(labels) - len(assigned)
    if left:
        notes.append(f"{left} labelled clips are in neither mapping file and are left out")
    return assigned


def _split_by_sets(root: Path, labels: dict[str, _Labels], notes: list[str]) -> _Assigned:
    """LIRIS-ACCEDE's own split, from the sets file of each source; every labelled clip needs a set."""
    notes.insert(
        0,
        "split: no shots-devset-nl.txt / shots-testset-nl.txt, so the LIRIS-ACCEDE sets files are used "
        "(set 1 learning + 2 validation → train, 0 → test); this is not the official MediaEval 2015 6,144 / 4,756 split",
    )
    assigned: _Assigned = {}
    for source in sorted({lab.source for lab in labels.values()}):
        path = find(root, f"{source}sets.txt")
        if path is None:
            raise AvemoError(
                f"{root}: no {source}sets.txt and no shots-devset-nl.txt / shots-testset-nl.txt: the split of the "
                f"{source} clips is unknown"
            )
        for name, value, where in read_sets(path):
            split, set_name = SET_SPLITS[value]
            _assign(assigned, labels, name, split, {"set": set_name}, where)
        unsplit = next((lab for n, lab in labels.items() if lab.source == source and n not in assigned), None)
        if unsplit:
            name = next(n for n, lab in labels.items() if lab is unsplit)
            raise AvemoError(f"{unsplit.where}: clip {shown(name)} is not in {path}; every labelled clip needs a set")
    return assigned


def _read_all_movies(root: Path, labels: dict[str, _Labels], notes: list[str]) -> dict[str, str]:
    """Clip name → movie from the description XML of each source that has labels (optional files)."""
    movies: dict[str, str] = {}
    for source in sorted({lab.source for lab in labels.values()}):
        path = find(root, f"{source}description.xml")
        if path:
            movies.update(read_movies(path))
        else:
            notes.append(f"no {source}description.xml: {source} clips have no movie")
    return movies


def _dataset(root: Path, labels: dict[str, _Labels], assigned: _Assigned, movies: dict[str, str], notes: list[str]) -> Dataset:
    """The clips, their videos found under data/ folders, checked to be distinct files."""
    videos = video_index(root)
    clips, listed, listed_at = [], [], {}
    for name, (split, meta, where) in assigned.items():
        lab = labels[name]
        path = videos.get(name, root / "data" / name)
        meta = {"source": lab.source, "id": lab.id, **meta}
        if name in movies:
            meta["movie"] = movies[name]
        clip = Clip(
            clip_id=path.relative_to(root).as_posix(),
            path=resolved(path, where),
            arousal=lab.arousal,
            valence=lab.valence,
            split=split,
            meta=meta,
        )
        listed_at[clip.clip_id] = where
        clips.append(clip)
        listed.append((clip, where, name))
    check_unique(listed)
    return Dataset(str(root), clips, notes, listed_at=listed_at)


def _assign(assigned: _Assigned, labels: dict[str, _Labels], name: str, split: str, meta: dict[str, str], where: str) -> None:
    if name not in labels:
        raise AvemoError(f"{where}: clip {shown(name)} has no labels in ACCEDEaffect.txt / MEDIAEVALaffect.txt")
    if name in assigned:
        other_split, _, other = assigned[name]
        if other_split != split:
            raise AvemoError(f"{where}: clip {shown(name)} is listed in both splits ({other_split} at {other}, {split} here)")
        raise AvemoError(f"{where}: duplicate clip {shown(name)}, first at {other}")
    assigned[name] = (split, meta, where)
