"""Class coding shared by every stage.

MediaEval 2015 codes arousal as -1 (calm), 0 (neutral), 1 (active) and valence as -1 (negative),
0 (neutral), 1 (positive). Models work with class indices 0, 1, 2 in that order.
"""

AROUSAL_NAMES = ("calm", "neutral", "active")
VALENCE_NAMES = ("negative", "neutral", "positive")
CLASS_NAMES = {"arousal": AROUSAL_NAMES, "valence": VALENCE_NAMES}  # target → class names in index order
TARGETS = tuple(CLASS_NAMES)  # what one model predicts (`avemo train --target`)
LABEL_VALUES = (-1, 0, 1)
SPLITS = ("train", "test")


def to_index(label: int) -> int:
    """-1/0/1 → 0/1/2."""
    return int(label) + 1


def to_label(index: int) -> int:
    """0/1/2 → -1/0/1."""
    return int(index) - 1
