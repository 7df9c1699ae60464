"""Validation splits carved out of the train split, ideally made of whole movies (torch-free: extraction
and the trainer both call `hold_out`, so they agree on the held-out clips).

Clips cut from one movie share actors, light and sound; with some of them in train and others in
validation, a model is scored on scenes it has nearly seen. MediaEval's test split takes whole movies,
and so should a validation split. The rules (docs/training.md, "Model selection"):

- size: k = max(1, round(fraction · n)) of the n train clips, and never more than 2 · fraction · n; when
  even one clip would exceed that bound (fewer than 1 / (2 · fraction) train clips), none is held out and
  the description says so (the trainer then keeps the last epoch);
- whole movies when the train clips know at least two: movies in a seeded order, each taken when it keeps
  the count within the bound and closer to fraction · n; a clip without a movie is a movie of its own;
- otherwise (no movie column, all clips from one movie, or no movie small enough) stratified by class,
  k split over the classes by largest remainder, and the description names the reason;
- never the last train clip with sound, nor the last train clip of a class, where that can be avoided
  (the audio model needs clips with sound; a class missing from training cannot be learned);
- deterministic: the same clips (in any order), fraction and seed give the same split.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from avemo.datasets.manifest import Clip

METHODS = ("movies", "stratified", "none")
DEFAULT_FRACTION = 0.1  # of the train clips, for extraction and training alike


@dataclass(frozen=True)
class HeldOut:
    """A validation split: the held-out clip ids (sorted) and how they were chosen."""

    clips: tuple[str, ...]
    n_train: int  # train clips the split was carved from
    fraction: float
    seed: int
    method: str  # movies | stratified | none
    movies: int = 0  # whole movies held out (method movies)
    sizes: int = 0  # clips of those movies (the other held-out clips name no movie)
    reason: str = ""  # why not by movies (stratified) or why nothing is held out (none)

    @property
    def sha256(self) -> str:
        return clips_sha256(self.clips)

    def record(self) -> dict:
        """What a cache records: the clips themselves are listed in FEATURES/validation.json."""
        return {
            "fraction": self.fraction,
            "seed": self.seed,
            "method": self.method,
            "clips": len(self.clips),
            "movies": self.movies,
            "train_clips": self.n_train,
            "sha256": self.sha256,
        }

    def describe(self) -> str:
        """One line: how many clips and movies, and why when not whole movies."""
        if self.method == "none":
            return f"none of {self.n_train} train clips held out: {self.reason}"
        k = len(self.clips)
        head = f"{k} of {self.n_train} train clips ({_percent(k / self.n_train)}; asked {_percent(self.fraction)})"
        if self.method == "movies":
            return f"{head}: {self.movies} whole movie{'s' * (self.movies != 1)}" + (
                f" and {k - self.sizes} clip{'s' * (k - self.sizes != 1)} without a movie" if k > self.sizes else ""
            )
        return f"{head}, stratified by class: {self.reason}"


def clips_sha256(clips: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(clips)).encode()).hexdigest()


_NO_MOVIE_SPARES = (
    "every whole movie that fits would take the last train clips with sound or of a class out of "
    "training, so clips of one movie are on both sides"
)


def hold_out(
    clip_ids: Sequence[str],
    labels: Sequence[Hashable],
    groups: Sequence[str],
    has_audio: Sequence[bool],
    fraction: float,
    seed: int = 0,
) -> HeldOut:
    """The validation clips among these train clips (see the module docstring for the rules). `groups` is
    each clip's movie ("" when unknown), `labels` its class."""
    if not 0 <= fraction < 1:
        raise ValueError("fraction must be in [0, 1)")
    order = sorted(range(len(clip_ids)), key=lambda i: str(clip_ids[i]))  # independent of the input order
    ids = [str(clip_ids[i]) for i in order]
    label = [labels[i] for i in order]
    movie = [str(groups[i]) for i in order]
    audio = [bool(has_audio[i]) for i in order]
    n = len(ids)
    reason = _nothing_held(n, fraction)
    if reason:
        return HeldOut((), n, fraction, seed, "none", reason=reason)
    target, upper = fraction * n, _upper(n, fraction)
    keep = _Keeper(label, audio)
    members: dict[str, list[int]] = defaultdict(list)
    for i, m in enumerate(movie):
        members[m or f"clip:{ids[i]}"].append(i)
    known = sorted(m for m in members if not m.startswith("clip:"))
    if len(known) >= 2:
        chosen, fits = _whole_movies(members, target, upper, seed, keep)
        if chosen:
            held_movies = {movie[i] for i in chosen if movie[i]}
            sizes = sum(len(members[m]) for m in held_movies)
            return HeldOut(_ids(ids, chosen), n, fraction, seed, "movies", len(held_movies), sizes=sizes)
        reason = _no_movie_fits(members, known, n, upper) if not fits else _NO_MOVIE_SPARES
    elif len(known) == 1:
        reason = (
            f"all {n} train clips are from one movie"
            if len(members) == 1
            else "only one movie is known, so its clips may be on both sides"
        )
    else:
        reason = "the clips name no movie (a `movie` column keeps each movie on one side)"
    k = min(max(1, math.floor(target + 0.5)), upper)
    chosen = _stratified(label, audio, k, seed, keep)
    return HeldOut(_ids(ids, chosen), n, fraction, seed, "stratified", reason=reason)


def _nothing_held(n: int, fraction: float) -> str:
    """Why no clip is held out of n train clips at this fraction ("" when some are)."""
    if fraction == 0:
        return "validation 0, the last epoch is kept"
    if n < 2:
        return "fewer than 2 train clips, the last epoch is kept"
    if _upper(n, fraction) >= 1:
        return ""
    least = math.ceil(100 / (2 * n)) / 100
    return (
        f"one clip would be {_percent(1 / n)} of them, over twice the asked {_percent(fraction)}; "
        f"the last epoch is kept (a validation fraction of {least:g} or more holds out one clip)"
    )


def _upper(n: int, fraction: float) -> int:
    """The most clips held out of n: twice the asked fraction, and never all of them."""
    return min(math.floor(2 * (fraction * n) + 1e-9), n - 1)


def _whole_movies(members: dict[str, list[int]], target: float, upper: int, seed: int, keep: _Keeper) -> tuple[list[int], bool]:
    """Whole movies in a seeded order, each taken when it keeps the count within `upper`, closer to
    `target` and `keep` allows it → (the clips taken, whether any movie fitted within `upper`)."""
    names = sorted(members)
    random.Random(seed).shuffle(names)
    chosen: list[int] = []
    fits = False
    for name in names:
        group = members[name]
        if len(chosen) + len(group) > upper:
            continue
        fits = True
        if chosen and len(chosen) + len(group) / 2 > target:  # adding it moves away from the target
            continue
        if not keep.allows(chosen + group):
            continue
        chosen += group
        if len(chosen) >= target:
            break
    return chosen, fits


def _no_movie_fits(members: dict[str, list[int]], known: list[str], n: int, upper: int) -> str:
    smallest = min(len(members[m]) for m in known)
    least = math.ceil(100 * smallest / (2 * n)) / 100
    return (
        f"no whole movie fits in twice the asked fraction ({upper} clip{'s' * (upper != 1)}; the smallest "
        f"of the {len(known)} movies has {smallest}, a fraction of {least:g} or more would let it), so clips "
        "of one movie are on both sides"
    )


class _Keeper:
    """Whether held-out clips leave training at least one clip with sound and one clip of every class."""

    def __init__(self, labels: list[Hashable], audio: list[bool]):
        self.labels, self.audio = labels, audio
        self.classes, self.sounding = Counter(labels), sum(audio)

    def allows(self, held: list[int]) -> bool:
        if self.sounding and sum(self.audio[i] for i in held) >= self.sounding:
            return False
        taken = Counter(self.labels[i] for i in held)
        return all(taken[c] < self.classes[c] for c in taken)


def _stratified(labels: list[Hashable], audio: list[bool], k: int, seed: int, keep: _Keeper) -> list[int]:
    """k clips split over the classes by largest remainder (ties in a seeded order), each class keeping one
    clip in training where the others can give k; never the last clip with sound."""
    rng = random.Random(seed)
    classes = sorted(set(labels), key=str)
    members = {c: [i for i, label in enumerate(labels) if label == c] for c in classes}
    for c in classes:
        rng.shuffle(members[c])
    caps = {c: len(members[c]) - 1 for c in classes}
    if sum(caps.values()) < k:
        caps = {c: len(members[c]) for c in classes}
    quota = {c: k * len(members[c]) / len(labels) for c in classes}
    take = {c: min(math.floor(quota[c]), caps[c]) for c in classes}
    tie = {c: rng.random() for c in classes}
    order = sorted(classes, key=lambda c: (-(quota[c] - math.floor(quota[c])), tie[c]))
    while sum(take.values()) < k:
        grew = False
        for c in order:
            if sum(take.values()) < k and take[c] < caps[c]:
                take[c] += 1
                grew = True
        if not grew:
            break
    chosen: list[int] = []
    sounding_left = keep.sounding
    for c in classes:
        picked = 0
        for i in members[c]:
            if picked == take[c]:
                break
            if audio[i] and sounding_left == 1:
                continue  # the audio model needs one train clip with sound
            chosen.append(i)
            picked += 1
            sounding_left -= audio[i]
    return chosen


def _ids(ids: list[str], chosen: list[int]) -> tuple[str, ...]:
    return tuple(sorted(ids[i] for i in chosen))


def _percent(x: float) -> str:
    value = 100 * x
    return f"{value:.0f}%" if abs(value - round(value)) < 0.05 else f"{value:.1f}%"


def groups_of(clips: list[Clip], group: str = "movie") -> dict[str, list[Clip]]:
    """Group value → its clips (clips without a value are keyed by their own id)."""
    out: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        out[clip.meta.get(group) or f"clip:{clip.clip_id}"].append(clip)
    return dict(out)


def validation_split(clips: list[Clip], fraction: float = 0.2, group: str = "movie", seed: int = 0) -> set[str]:
    """Clip ids of a validation set of about `fraction` of the train clips (`hold_out` on the manifest's
    train clips, the group column naming the movie; every clip counted as having sound)."""
    if not 0 < fraction < 1:
        raise ValueError("fraction must be between 0 and 1")
    train = [c for c in clips if c.split == "train"]
    held = hold_out(
        [c.clip_id for c in train],
        [c.arousal for c in train],
        [c.meta.get(group, "") for c in train],
        [True] * len(train),
        fraction,
        seed,
    )
    return set(held.clips)


def groups_in_both(clips: list[Clip], group: str = "movie") -> list[str]:
    """Group values with clips in both train and test (a leak, unless intended)."""
    splits: dict[str, set[str]] = defaultdict(set)
    for clip in clips:
        if clip.meta.get(group):
            splits[clip.meta[group]].add(clip.split)
    return sorted(g for g, s in splits.items() if len(s) > 1)
