"""Files written whole or not at all: into a temporary name beside the target, then renamed over it, so
a kill never leaves half a checkpoint, model or JSON file behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def save_torch(value: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(value, tmp)
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, value: object) -> None:
    write_text(path, json.dumps(value, indent=1))
