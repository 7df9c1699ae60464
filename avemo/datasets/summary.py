"""`avemo datasets summary`: what a dataset holds, before any hour is spent decoding it.

Per split: clips, arousal and valence class counts with proportions, and the majority-class accuracy
(the score of always answering the split's most frequent class: on MediaEval 2015's test split,
"calm" gives 55.55%, the number every result must be read against). Then the test accuracy of the
train split's majority class (what `avemo evaluate` prints as the baseline; and the test split's own
majority when it differs: on MediaEval 2015 valence, "negative" from train scores 33.12%, the test split's
"neutral" 37.87%), movies per split when clips carry one, and the video files that are missing.
"""

from __future__ import annotations

from collections import Counter

from avemo.datasets.dataset import Dataset
from avemo.datasets.groups import groups_in_both
from avemo.datasets.labels import AROUSAL_NAMES, LABEL_VALUES, SPLITS, VALENCE_NAMES

MAX_MISSING_SHOWN = 5


def class_counts(clips, axis: str) -> dict[int | None, int]:
    """Label → count for `axis` ('arousal' or 'valence'), with None for unknown valence."""
    return dict(Counter(getattr(c, axis) for c in clips))


def majority(counts: dict[int | None, int]) -> tuple[int, float]:
    """(most frequent known label, its share of the known labels); ties → the lower label."""
    known = {k: v for k, v in counts.items() if k is not None}
    total = sum(known.values())
    label = max(LABEL_VALUES, key=lambda k: (known.get(k, 0), -k))
    return label, (known.get(label, 0) / total if total else 0.0)


def _axis_line(counts: dict[int | None, int], names: tuple[str, ...], axis: str) -> str:
    total = sum(v for k, v in counts.items() if k is not None)
    if not total:
        return f"  {axis:<8} unknown for all clips"
    parts = [f"{name} {counts.get(v, 0):,} ({counts.get(v, 0) / total:.2%})" for v, name in zip(LABEL_VALUES, names)]
    label, share = majority(counts)
    unknown = f", unknown {counts[None]:,}" if counts.get(None) else ""
    return f"  {axis:<8} {', '.join(parts)}{unknown}; majority '{names[label + 1]}' {share:.2%}"


def _baselines(train: list, test: list) -> list[str]:
    """Per axis with known labels in both splits: the test accuracy of the train split's majority class (what
    `avemo evaluate` prints as the baseline), and that of the test split's own majority when it is another."""
    lines = []
    for axis, names in (("arousal", AROUSAL_NAMES), ("valence", VALENCE_NAMES)):
        trained = class_counts(train, axis)
        tested = class_counts(test, axis)
        known = sum(v for k, v in tested.items() if k is not None)
        if not known or not any(k is not None for k in trained):
            continue
        label, _ = majority(trained)
        score = tested.get(label, 0) / known
        line = f"baseline {axis}: always '{names[label + 1]}' (train's majority) scores {score:.2%} on test"
        own, share = majority(tested)
        if own != label:
            line += f" (the test split's own majority, '{names[own + 1]}', {share:.2%})"
        lines.append(line)
    return lines


def summarize(dataset: Dataset, group: str = "movie") -> str:
    """The summary as printed by the CLI (plain text, one fact per line)."""
    clips = dataset.clips
    lines = [f"dataset {dataset.description}: {len(clips):,} clips"]
    lines += [f"note: {n}" for n in dataset.notes]
    by_split = {s: [c for c in clips if c.split == s] for s in SPLITS}
    for split, members in by_split.items():
        lines.append(f"{split}: {len(members):,} clips" + ("" if members else " (empty split: extract refuses this dataset)"))
        if members:
            lines.append(_axis_line(class_counts(members, "arousal"), AROUSAL_NAMES, "arousal"))
            lines.append(_axis_line(class_counts(members, "valence"), VALENCE_NAMES, "valence"))
    if by_split["train"] and by_split["test"]:
        lines += _baselines(by_split["train"], by_split["test"])
    grouped = [c for c in clips if c.meta.get(group)]
    if grouped:
        per_split = {s: len({c.meta[group] for c in grouped if c.split == s}) for s in SPLITS}
        both = groups_in_both(clips, group)
        leak = f"; in both splits: {', '.join(both[:3])}{' …' if len(both) > 3 else ''}" if both else ""
        lines.append(
            f"{group}: {len({c.meta[group] for c in grouped}):,} ({', '.join(f'{s} {n:,}' for s, n in per_split.items())}; "
            f"{len(both)} in both splits{leak})"
        )
    if not dataset.files_checked:
        lines.append("files: not checked")
    else:
        missing = dataset.missing
        if missing:
            shown = ", ".join(c.clip_id for c in missing[:MAX_MISSING_SHOWN])
            more = f" and {len(missing) - MAX_MISSING_SHOWN:,} more" if len(missing) > MAX_MISSING_SHOWN else ""
            lines.append(f"files: {len(missing):,} of {len(clips):,} missing: {shown}{more}")
        else:
            lines.append(f"files: all {len(clips):,} present")
    return "\n".join(lines)
