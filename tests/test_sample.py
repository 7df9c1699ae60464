import csv
from collections import Counter

import av
import numpy as np
import pytest

from avemo.datasets.manifest import read_manifest
from avemo.datasets.sample import arousal_of, write_sample
from avemo.extract.decode import read_audio


def test_arousal_needs_both_modalities():
    pairs = [(v, a) for v in range(3) for a in range(3)]
    classes = Counter(arousal_of(v, a) for v, a in pairs)
    assert classes == {-1: 3, 0: 3, 1: 3}  # balanced: the majority class scores 1/3
    # The best guess from one level alone is right 5 times in 9, for either modality.
    for which in (0, 1):
        right = 0
        for level in range(3):
            labels = Counter(arousal_of(*p) for p in pairs if p[which] == level)
            right += labels.most_common(1)[0][1]
        assert right == 5


def test_corpus_files_and_manifest(sample_corpus):
    root = sample_corpus.parent
    clips = read_manifest(sample_corpus)
    assert len(clips) == 18
    rows = list(csv.DictReader(open(sample_corpus)))
    assert Counter((r["visual_level"], r["audio_level"]) for r in rows) == {
        (str(v), str(a)): 2 for v in range(3) for a in range(3)
    }
    for row, clip in zip(rows, clips):
        assert clip.arousal == arousal_of(int(row["visual_level"]), int(row["audio_level"]))
    # a movie's clips stay on one side of the split, and both sides exist
    sides = {}
    for row in rows:
        sides.setdefault(row["movie"], set()).add(row["split"])
    assert all(len(s) == 1 for s in sides.values())
    assert {r["split"] for r in rows} == {"train", "test"}
    # real H.264 + AAC, 25 fps, 8-12 s
    frames = _frames(clips[0].path)
    with av.open(str(clips[0].path)) as container:
        assert abs(float(container.streams.video[0].average_rate) - 25) < 0.01 and 8 <= len(frames) / 25 <= 12
    assert len(read_audio(str(clips[0].path), 16000)) > 8 * 16000
    # MediaEval-format annotations: tab separated, sets file in CRLF with 1 = learning
    affect = (root / "annotations" / "ACCEDEaffect.txt").read_text().splitlines()
    assert affect[0] == "id\tname\tvalenceClass\tarousalClass" and len(affect) == 19
    sets = (root / "annotations" / "ACCEDEsets.txt").read_bytes()
    assert sets.startswith(b"id\tname\tset\r\n")
    learning = {line.split("\t")[1] for line in sets.decode().splitlines()[1:] if line.endswith("\t1")}
    assert learning == {r["path"].split("/")[1] for r in rows if r["split"] == "train"}


def test_visual_level_is_visible_in_any_frame(sample_corpus):
    rows = list(csv.DictReader(open(sample_corpus)))
    for row in rows[:6]:
        video = _frames(sample_corpus.parent / row["path"])
        means = video[[0, len(video) // 2, len(video) - 1]].reshape(3, -1).mean(1)
        assert np.all(np.abs(means - (45, 125, 205)[int(row["visual_level"])]) < 30)


def test_same_seed_same_corpus(tmp_path):
    a = write_sample(tmp_path / "a", clips=2, seed=5, workers=2)  # one clip per worker
    b = write_sample(tmp_path / "b", clips=2, seed=5, workers=1)  # same files whatever the worker count
    c = write_sample(tmp_path / "c", clips=2, seed=6, workers=1)
    assert a.read_text() == b.read_text() != c.read_text()
    for name in ("ACCEDEaffect.txt", "ACCEDEsets.txt", "ACCEDEdescription.xml"):
        assert (a.parent / "annotations" / name).read_bytes() == (b.parent / "annotations" / name).read_bytes()
    files = sorted(p.relative_to(a.parent) for p in a.parent.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.parent) for p in b.parent.rglob("*") if p.is_file())
    assert all((a.parent / f).read_bytes() == (b.parent / f).read_bytes() for f in files)  # the mp4s too, byte for byte
    frames = [_frames(m.parent / "data" / "ACCEDE00001.mp4")[10] for m in (a, b)]
    assert np.array_equal(*frames)


def _frames(path) -> np.ndarray:
    """Every frame of a video as decoded RGB, uint8 [n, H, W, 3] (PyAV: installed everywhere)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_a_larger_frame_size_for_benchmarks(tmp_path):
    """`size`: frames as large as real video's (decoding time grows with it); the labels do not change."""
    small = write_sample(tmp_path / "small", clips=2, seed=3, workers=1)
    large = write_sample(tmp_path / "large", clips=2, seed=3, workers=1, size=(320, 180))
    assert small.read_text() == large.read_text()
    frames = _frames(large.parent / "data" / "ACCEDE00000.mp4")
    assert frames.shape[1:] == (180, 320, 3)
    with pytest.raises(ValueError, match="even and at least 36"):
        write_sample(tmp_path / "odd", clips=2, size=(321, 180))
