"""The CSV manifest (DESIGN.md): header with `path,arousal,valence,split`, one clip per row.

`path` is relative to the CSV's folder, labels are -1/0/1 (valence may be empty), split is `train` or
`test`; any other column (e.g. `movie`) is kept as metadata. A clip's id is its path as written in the
CSV, so two `clip.mp4` in different folders never collide.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass, field
from pathlib import Path

from avemo.datasets.labels import SPLITS
from avemo.datasets.textfile import label
from avemo.errors import AvemoError

REQUIRED_COLUMNS = ("path", "arousal", "valence", "split")


@dataclass(frozen=True)
class Clip:
    clip_id: str  # the path as written in the manifest (posix), unique
    path: Path  # absolute path of the video file
    arousal: int  # -1 calm, 0 neutral, 1 active
    valence: int | None  # -1 negative, 0 neutral, 1 positive; None when unknown
    split: str  # "train" or "test"
    meta: dict[str, str] = field(default_factory=dict, compare=False)


def _label(value: str, where: str, column: str, optional: bool = False) -> int | None:
    value = value.strip()
    return None if value == "" and optional else label(value, where, column)


def read_manifest(csv_path: str | Path) -> list[Clip]:
    """Read and check a manifest; every problem is reported with file and line."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise AvemoError(f"{csv_path}: manifest not found")
    root = csv_path.resolve().parent
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise AvemoError(
                f"{csv_path}:1: missing column(s) {', '.join(missing)}{_misspelt(missing, header)}; "
                f"need {','.join(REQUIRED_COLUMNS)}"
            )
        clips: list[Clip] = []
        seen: dict[str, tuple[int, str]] = {}
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            where = f"{csv_path}:{line}"
            rel = row["path"].replace("\\", "/")
            if not rel:
                raise AvemoError(f"{where}: empty path")
            split = row["split"].lower()
            if split not in SPLITS:
                raise AvemoError(f"{where}: split must be 'train' or 'test', got {row['split']!r}")
            if rel in seen:
                first, first_split = seen[rel]
                both = f" (listed in both splits: {first_split} there, {split} here)" if first_split != split else ""
                raise AvemoError(f"{where}: clip {rel!r} already listed on line {first}{both}")
            seen[rel] = (line, split)
            clips.append(
                Clip(
                    clip_id=rel,
                    path=(root / rel).resolve(),
                    arousal=_label(row["arousal"], where, "arousal"),
                    valence=_label(row["valence"], where, "valence", optional=True),
                    split=split,
                    meta={k: v for k, v in row.items() if k not in REQUIRED_COLUMNS},
                )
            )
    if not clips:
        raise AvemoError(f"{csv_path}: no clips listed")
    return clips


def _misspelt(missing: list[str], header: list[str]) -> str:
    """' (unknown column 'valance': misspelt 'valence'?)' when a header column is close to a missing one."""
    for column in missing:
        close = difflib.get_close_matches(column, [h for h in header if h not in REQUIRED_COLUMNS], n=1, cutoff=0.6)
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
    missing = [c for c in clips if not c.path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise AvemoError(f"{manifest}: video file {missing[0].path} does not exist{more}")


def write_manifest(csv_path: str | Path, rows: list[dict[str, object]]) -> None:
    """Write rows (dicts with at least the required columns) as a manifest."""
    extra = [k for k in rows[0] if k not in REQUIRED_COLUMNS]
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*REQUIRED_COLUMNS, *extra], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
