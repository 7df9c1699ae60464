"""Validation splits that keep a group (a movie) on one side.

Clips cut from one movie share actors, light and sound; with some of them in train and others in
validation, a model is scored on scenes it has nearly seen. MediaEval's test split takes whole movies,
and so should a validation split carved out of train. `validation_split` moves whole groups: the group
of a clip is its `meta[group]` (the CSV column, e.g. `movie`, or the movie of the MediaEval description
XMLs); a clip without one is a group of its own.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import TypeVar

from avemo.datasets.manifest import Clip

T = TypeVar("T")


def groups_of(clips: list[Clip], group: str = "movie") -> dict[str, list[Clip]]:
    """Group value → its clips (clips without a value are keyed by their own id)."""
    out: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        out[clip.meta.get(group) or f"clip:{clip.clip_id}"].append(clip)
    return dict(out)


def validation_split(clips: list[Clip], fraction: float = 0.2, group: str = "movie", seed: int = 0) -> set[str]:
    """Clip ids of a validation set of about `fraction` of the train clips, made of whole groups.

    Groups are shuffled with `seed` and taken until the fraction is reached (at least one group, never
    all of them), so the same clips and seed always give the same split."""
    if not 0 < fraction < 1:
        raise ValueError("fraction must be between 0 and 1")
    groups = groups_of([c for c in clips if c.split == "train"], group)
    return {c.clip_id for c in pick_groups(groups, fraction, seed)}


def pick_groups(groups: dict[str, list[T]], fraction: float, seed: int = 0) -> list[T]:
    """Members of whole groups, shuffled with `seed` and taken until about `fraction` of all members (at
    least one group, never all of them; nothing when there are fewer than two groups)."""
    names = sorted(groups)
    if len(names) < 2:
        return []  # one movie cannot be split without a leak
    random.Random(seed).shuffle(names)
    target = fraction * sum(len(v) for v in groups.values())
    chosen: list[T] = []
    for name in names[:-1]:
        if chosen and len(chosen) + len(groups[name]) / 2 > target:
            continue
        chosen += groups[name]
        if len(chosen) >= target:
            break
    return chosen


def groups_in_both(clips: list[Clip], group: str = "movie") -> list[str]:
    """Group values with clips in both train and test (a leak, unless intended)."""
    splits: dict[str, set[str]] = defaultdict(set)
    for clip in clips:
        if clip.meta.get(group):
            splits[clip.meta[group]].add(clip.split)
    return sorted(g for g, s in splits.items() if len(s) > 1)
