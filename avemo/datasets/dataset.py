"""What every loader returns: the clips (the extractor's `Clip` list) plus what the loader noticed.

`notes` are facts a user should read before trusting the numbers (which split definition was used,
which optional files were absent). `files_checked` is False when the loader had no way to map ids to
video files (a list file given alone): then `missing` means nothing and `summary` says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from avemo.datasets.manifest import Clip, is_file


@dataclass
class Dataset:
    description: str  # what was read: the manifest, the release folder, or the list files (for messages)
    clips: list[Clip]
    notes: list[str] = field(default_factory=list)
    files_checked: bool = True
    listed_at: dict[str, str] = field(default_factory=dict)  # clip id → FILE:LINE that lists it, for messages

    @property
    def missing(self) -> list[Clip]:
        """Clips whose video file does not exist (empty when files were not checked)."""
        return [c for c in self.clips if not is_file(c.path)] if self.files_checked else []
