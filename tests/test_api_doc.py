"""docs/api.md's example, run exactly as written (a script in a folder holding a sample corpus), so that the
documented API stays true: extract → train (arousal and valence) → evaluate → export → load_model → predict."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from avemo.datasets.sample import write_sample

DOC = Path(__file__).parents[1] / "docs" / "api.md"


def example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, f"{DOC}: no python example"
    return blocks[0]


def test_the_documented_example_runs_as_written(tmp_path):
    write_sample(tmp_path / "corpus", clips=10, seed=3)
    (tmp_path / "example.py").write_text(example())
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    majority = {line.split()[0]: float(line.split()[-1]) for line in lines if "majority:" in line}
    assert set(majority) == {"arousal", "valence"} and all(0 <= v <= 100 for v in majority.values())
    clip, shape = lines[-1].rsplit(" (", 1)
    probabilities = np.array(clip.strip("[]").split(), dtype=float)
    assert probabilities.shape == (3,) and abs(probabilities.sum() - 1) < 1e-5
    assert re.fullmatch(r"\d+, 3\)", shape) and 8 <= int(shape.split(",")[0]) <= 12  # the clip's 8-12 seconds
    assert (tmp_path / "model" / "model.json").is_file() and (tmp_path / "run" / "report.md").is_file()
