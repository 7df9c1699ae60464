"""One entry point for the CLI: a CSV manifest, a MediaEval 2015 release, or list files → `Dataset`.

`load_dataset` picks the loader from the options, refusing none or several; `check_ready` is what
`avemo extract` runs before any decoding: every file present, both splits non-empty.
"""

from __future__ import annotations

from pathlib import Path

from avemo.datasets.dataset import Dataset
from avemo.datasets.manifest import check_column, check_files, check_splits, not_a_file, read_manifest
from avemo.errors import AvemoError

DATASETS = ("csv", "mediaeval")
CHOOSE = "give one of --manifest CSV, --dataset mediaeval --root DIR, or --list FILE"


def load_dataset(
    manifest: Path | None = None,
    dataset: str | None = None,
    root: Path | None = None,
    lists: list[str] | tuple[str, ...] = (),
    videos: Path | None = None,
    maps: list[Path] | tuple[Path, ...] = (),
    group: str | None = None,
) -> Dataset:
    """Read the dataset the options name; `group` (e.g. `movie`) must then be a column clips carry."""
    if dataset == "csv" and manifest is None:
        raise AvemoError("--dataset csv needs --manifest CSV")
    chosen = [
        name
        for name, given in (("--manifest", manifest), ("--dataset mediaeval", dataset == "mediaeval"), ("--list", lists))
        if given
    ]
    if len(chosen) != 1:
        raise AvemoError(f"{'both ' + ' and '.join(chosen) + ' given' if chosen else 'no dataset given'}; {CHOOSE}")
    if root is not None and manifest is not None:
        raise AvemoError("--root goes with --dataset mediaeval or --list, not with --manifest")
    if (videos or maps) and not lists:
        raise AvemoError("--videos and --map go with --list")
    if manifest is not None:
        ds = Dataset(str(manifest), read_manifest(manifest))
    elif dataset == "mediaeval":
        if root is None:
            raise AvemoError("--dataset mediaeval needs --root DIR, the folder the MediaEval 2015 zips were unpacked into")
        from avemo.datasets.mediaeval import load_mediaeval

        ds = load_mediaeval(root)
    else:
        from avemo.datasets.listfile import load_lists

        ds = load_lists(list(lists), videos=videos, maps=list(maps), root=root)
    if group:
        check_column(ds.clips, group, manifest or root or lists[0])
    return ds


def check_ready(ds: Dataset) -> None:
    """Refuse to start extraction on a dataset that would fail or mean nothing hours later."""
    source = ds.description
    if not ds.files_checked:
        raise AvemoError(f"{source}: no way to find the video files; give --videos DIR, --map FILE or --root DIR")
    check_splits(ds.clips, source)
    missing = ds.missing
    if missing and missing[0].clip_id in ds.listed_at:
        more = f" (and {len(missing) - 1:,} more; `avemo datasets summary` lists them)" if len(missing) > 1 else ""
        raise AvemoError(f"{ds.listed_at[missing[0].clip_id]}: video file {missing[0].path} {not_a_file(missing[0].path)}{more}")
    check_files(ds.clips, source)
