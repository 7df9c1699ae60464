import numpy as np
import pytest

from avemo.extract.decode import DecodeSettings, decode_clip, read_streams
from avemo.extract.keyframe import key_frame, rgb_histograms
from avemo.extract.video import open_video

from helpers import make_clip


@pytest.mark.parametrize("bins", [8, 32, 64, 256])
def test_histograms_match_numpy_per_channel(bins):
    frames = np.random.default_rng(0).integers(0, 256, size=(4, 9, 7, 3), dtype=np.uint8)
    hists = rgb_histograms(frames, bins=bins)
    for i in range(4):
        expected = [np.histogram(frames[i, ..., c], bins=bins, range=(0, 256))[0] / 63 for c in range(3)]
        np.testing.assert_allclose(hists[i], np.concatenate(expected))


def test_bins_must_divide_256():
    with pytest.raises(ValueError, match="divide 256"):
        rgb_histograms(np.zeros((1, 2, 2, 3), np.uint8), bins=24)


def test_key_frame_is_nearest_to_mean_histogram_in_l1():
    # eq. 1-2 by brute force: two dark frames, one bright, one mid; the mean sits nearest a dark one
    frames = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (10, 10, 250, 130)])
    hists = rgb_histograms(frames, bins=8)
    mean = hists.mean(0)
    distances = [np.abs(h - mean).sum() for h in hists]
    assert key_frame(hists) == int(np.argmin(distances)) == 0  # ties go to the earliest frame


@pytest.mark.parametrize("fps", [25, 29.97])
def test_decoded_key_frames_follow_the_rule_on_a_real_clip(tmp_path, fps):
    path = str(make_clip(tmp_path / "clip.mp4", seconds=3.5, fps=fps))
    media = decode_clip(path, DecodeSettings(hist_bins=32))
    assert media.n_seconds == 3  # the trailing half second is dropped
    # brute force over every decoded frame, segments by frame time i / fps
    timeline, _ = read_streams(path, 16000)
    with open_video(path, 256, DecodeSettings().video_decoder, timeline) as video:
        frames = video.frames(list(range(len(video.starts))))
    times = np.arange(len(frames)) / fps
    for s in range(3):
        members = np.flatnonzero((times >= s - 1e-3) & (times < s + 1 - 1e-3))
        hists = rgb_histograms(frames[members], 32)
        best = members[int(np.argmin(np.abs(hists - hists.mean(0)).sum(1)))]
        assert media.key_frame_index[s] == best
        assert s <= media.key_frame_time[s] < s + 1
        np.testing.assert_array_equal(media.key_frames[s], frames[best])
