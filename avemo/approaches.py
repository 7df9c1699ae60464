"""The one table of what avemo trains and reports: the approaches (rows of the paper's Table 1, plus the
joint pass), the two modalities, and constants every part shares. Heads, the CLI's choices, the run folder
and the reports all read them from here. No torch: evaluate imports this without it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Approach:
    name: str  # folder name in a run, --approach value
    title: str  # row title in reports
    modalities: tuple[str, ...]  # the features it reads
    paper: float | None  # arousal accuracy (%) in the paper's Table 1 (MediaEval 2015); None: not in the paper


TABLE = (
    Approach("visual", "Visual features only", ("visual",), 55.51),
    Approach("audio", "Audio features only", ("audio",), 55.14),
    Approach("early", "Early fusion", ("visual", "audio"), 55.71),
    Approach("late", "Late fusion", ("visual", "audio"), 55.70),
    Approach("modal", "Modal fusion", ("visual", "audio"), 55.89),
    # `avemo train --joint`: a trained head and the AlexNets tuned end to end (RUN/joint/)
    Approach("joint", "Joint pass (head and AlexNets tuned end to end)", ("visual", "audio"), None),
)
BY_NAME = {a.name: a for a in TABLE}
APPROACHES = tuple(a.name for a in TABLE if a.name != "joint")  # what `avemo train --approach` fits (Table 1)
ROWS = tuple(a.name for a in TABLE)  # what a run folder may hold and a report shows, in this order
TUNABLE = ("visual", "audio", "early", "modal")  # one head to tune jointly (late fusion averages two)
ALPHA_LATE = 0.56  # paper eq. 14: p = α·p_a + (1 − α)·p_v with α = 0.56 (after Goyal et al., 2016)
TITLES = {a.name: a.title for a in TABLE}
PAPER_TABLE1 = {a.name: a.paper for a in TABLE if a.paper is not None}  # arousal, %

MODALITIES = {"visual": "key_frames", "audio": "spectrograms"}  # modality → its images in the media cache
N_CLASSES = 3  # calm / neutral / active (arousal), negative / neutral / positive (valence)
UNKNOWN_LABEL = -128  # a label not known (e.g. valence of a corpus without it), in the cache and in CSV files


def modalities_of(approach: str) -> tuple[str, ...]:
    """The modalities an approach reads (every approach not in the table reads both)."""
    entry = BY_NAME.get(approach)
    return entry.modalities if entry else ("visual", "audio")


def default_device() -> str:
    """cuda when torch sees a GPU, else cpu (imports torch only when asked)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
