"""The built-in sample corpus: real mp4 clips whose arousal needs both modalities.

Each clip has a visual level (scene brightness: dark, mid, bright) that any single key frame shows, and
an audio level (pitch band of its tones: low, mid, high) that any 1-s spectrogram shows, both 0, 1 or 2.
Arousal depends on their sum s: calm if s <= 1, neutral if s == 2, active if s >= 3. The nine
(visual, audio) pairs are equally frequent, so the three classes are too (majority class ≈ 33%), the best
guess from one modality alone is right 5/9 ≈ 56% of the time, and both together can reach 100%.
Valence follows the visual level alone (dark negative, bright positive).

Files follow the MediaEval 2015 layout (names ACCEDE00000.mp4 …, annotation files in its formats), clips
come from "movies" of five clips each, and the train/test split keeps each movie on one side, as the
official split does. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from avemo.datasets.manifest import write_manifest
from avemo.datasets.media import write_mp4
from avemo.log import progress

BRIGHTNESS = (45, 125, 205)  # mean grey level of the scene per visual level
PITCH_BANDS_HZ = ((150.0, 350.0), (900.0, 1500.0), (2800.0, 4200.0))  # tone band per audio level
CLIPS_PER_MOVIE = 5
FPS = 25
SIZE = (160, 120)  # width, height: small, so the demo is fast; `size` gives real-video sizes for benchmarks
AUDIO_RATE = 44100


def arousal_of(visual_level: int, audio_level: int) -> int:
    """The corpus's ground truth: -1 calm, 0 neutral, 1 active from the sum of the two levels."""
    total = visual_level + audio_level
    return -1 if total <= 1 else (0 if total == 2 else 1)


def sample_frames(level: int, n_frames: int, rng: np.random.Generator, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A tinted scene of the level's brightness with three moving squares and film grain, `size` (w, h)."""
    width, height = size
    tint = rng.uniform(-25, 25, size=3)
    base = np.clip(BRIGHTNESS[level] + tint - tint.mean(), 0, 255)
    grain = rng.normal(0, 3, size=(height + 16, width + 16, 3))
    sizes = rng.integers(16, 36, size=3)
    colors = np.clip(base + rng.uniform(-60, 60, size=(3, 3)), 0, 255)
    room = [width - 36, height - 36]
    pos = rng.uniform(0, room, size=(3, 2))
    vel = rng.uniform(-3, 3, size=(3, 2))
    frames = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    for t in range(n_frames):
        img = np.broadcast_to(base, (height, width, 3)).copy()
        for (x, y), s, c in zip(pos.astype(int), sizes, colors):
            img[y : y + s, x : x + s] = c
        dy, dx = rng.integers(0, 16, size=2)
        img += grain[dy : dy + height, dx : dx + width]
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
        pos += vel
        bounce = (pos < 0) | (pos > room)
        vel[bounce] *= -1
        pos = np.clip(pos, 0, room)
    return frames


def sample_audio(level: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Half-second tones drawn from the level's pitch band, with soft edges and a little noise."""
    low, high = PITCH_BANDS_HZ[level]
    block = AUDIO_RATE // 2
    t = np.arange(block) / AUDIO_RATE
    envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    out = np.zeros(n_samples + block, dtype=np.float32)
    for start in range(0, n_samples, block):
        freq, amp = rng.uniform(low, high), rng.uniform(0.2, 0.4)
        out[start : start + block] = amp * envelope * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    out = out[:n_samples] + rng.normal(0, 0.01, size=n_samples).astype(np.float32)
    return out


def write_sample(
    out: str | Path,
    clips: int = 150,
    seed: int = 0,
    test_fraction: float = 0.3,
    workers: int | None = None,
    size: tuple[int, int] = SIZE,
) -> Path:
    """Write the corpus under `out` (clips in parallel processes, one per CPU by default); returns `out/clips.csv`.

    Each clip draws from its own generator seeded by (seed, clip number), so the files do not depend on
    the number of workers. `size` (width, height, even, at least 36): the frames' size; the default keeps the
    demo fast, real videos are larger (decoding time grows with it)."""
    if clips < 2:
        raise ValueError("the sample corpus needs at least 2 clips")
    if min(size) < 36 or size[0] % 2 or size[1] % 2:
        raise ValueError(f"sample frame size {size[0]}x{size[1]}: width and height must be even and at least 36")
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    pairs = [(v, a) for v in range(3) for a in range(3)]
    levels = [pairs[i] for i in rng.permutation(np.resize(np.arange(9), clips))]
    n_movies = -(-clips // CLIPS_PER_MOVIE)
    n_test_movies = min(n_movies - 1, max(1, round(n_movies * test_fraction)))
    test_movies = set(rng.permutation(n_movies)[:n_test_movies].tolist())

    jobs = [(out, seed, i, *levels[i], i // CLIPS_PER_MOVIE in test_movies, size) for i in range(clips)]
    workers = max(1, min(workers or os.cpu_count() or 1, clips))
    spawn = multiprocessing.get_context("spawn")  # safe even when the caller has torch's threads running
    with concurrent.futures.ProcessPoolExecutor(workers, spawn) if workers > 1 else contextlib.nullcontext() as pool:
        results = pool.map(_write_clip, jobs) if pool else map(_write_clip, jobs)
        rows = list(progress(results, total=clips, desc="sample clips", unit="clip"))
    _write_mediaeval_annotations(out / "annotations", rows)
    write_manifest(out / "clips.csv", rows)
    return out / "clips.csv"


def _write_clip(job: tuple) -> dict:
    out, seed, i, visual, audio, is_test, size = job
    clip_rng = np.random.default_rng([seed, i])
    seconds = clip_rng.uniform(8.0, 12.0)
    n_frames = int(seconds * FPS)
    name = f"ACCEDE{i:05d}.mp4"
    write_mp4(
        out / "data" / name,
        sample_frames(visual, n_frames, clip_rng, size),
        fps=FPS,
        audio=sample_audio(audio, int(n_frames / FPS * AUDIO_RATE), clip_rng),
        audio_rate=AUDIO_RATE,
    )
    movie = i // CLIPS_PER_MOVIE
    return {
        "path": f"data/{name}",
        "arousal": arousal_of(visual, audio),
        "valence": visual - 1,
        "split": "test" if is_test else "train",
        "movie": f"Sample_Movie_{movie:03d}.mp4",
        "id": i,
        "visual_level": visual,
        "audio_level": audio,
        "frames": n_frames,
    }


def _write_mediaeval_annotations(folder: Path, rows: list[dict]) -> None:
    """The same clips in the MediaEval 2015 / LIRIS-ACCEDE formats (tab separated; sets file in CRLF)."""
    with open(folder / "ACCEDEaffect.txt", "w", newline="\n") as f:
        f.write("id\tname\tvalenceClass\tarousalClass\n")
        for r in rows:
            f.write(f"{r['id']}\t{Path(r['path']).name}\t{r['valence']}\t{r['arousal']}\n")
    with open(folder / "ACCEDEsets.txt", "w", newline="\r\n") as f:
        f.write("id\tname\tset\n")  # set: 1 learning, 0 test
        for r in rows:
            f.write(f"{r['id']}\t{Path(r['path']).name}\t{1 if r['split'] == 'train' else 0}\n")
    with open(folder / "ACCEDEdescription.xml", "w", newline="\n") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<ACCEDEdescription>\n')
        start = 0
        for r in rows:
            end = start + r["frames"] - 1
            f.write(
                f"  <media>\n    <id>{r['id']}</id>\n    <name>{Path(r['path']).name}</name>\n"
                f"    <license>synthetic sample clip made by avemo</license>\n"
                f"    <movie>{escape(r['movie'])}</movie>\n    <start>{start}</start>\n    <end>{end}</end>\n  </media>\n"
            )
            start = end + 1
        f.write("</ACCEDEdescription>\n")
