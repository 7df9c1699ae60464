from dataclasses import asdict

import numpy as np
import pytest

from avemo.cache.store import ShardStore
from avemo.datasets.media import write_mp4
from avemo.errors import AvemoError
from avemo.extract.decode import ClipError, DecodeSettings, decode_clip, read_audio
from avemo.extract.video import DECODERS, ENVIRONMENT, installed

from helpers import make_clip


@pytest.fixture(autouse=True, params=[d for d in DECODERS if installed(d)])
def video_decoder(request, monkeypatch):
    """Every test here runs with each video decoder installed (decord where it has a wheel; PyAV always)."""
    monkeypatch.setenv(ENVIRONMENT, request.param)
    return request.param


def test_clip_with_audio_gives_one_key_frame_and_spectrogram_per_second(tmp_path):
    media = decode_clip(str(make_clip(tmp_path / "a.mp4", seconds=4.2, audio_hz=1000)))
    assert media.has_audio and media.n_seconds == 4
    assert media.key_frames.shape == (4, 256, 256, 3) and media.spectrograms.shape == (4, 256, 256)
    # a 1 kHz tone: the brightest spectrogram row sits at 1000/8000 of the height from the bottom
    rows = media.spectrograms.astype(float).mean(2).argmax(1)
    assert np.all(np.abs(rows - 255 * (1 - 1000 / 8000)) < 4)


def test_trailing_partial_second_can_be_kept(tmp_path):
    path = str(make_clip(tmp_path / "a.mp4", seconds=2.6))
    assert decode_clip(path, DecodeSettings(min_last_segment=0.5)).n_seconds == 3
    assert decode_clip(path).n_seconds == 2


def test_clip_without_audio_gets_silent_spectrograms(tmp_path):
    media = decode_clip(str(make_clip(tmp_path / "mute.mp4", seconds=2, audio_hz=None)))
    assert not media.has_audio and media.n_seconds == 2
    assert media.spectrograms.shape == (2, 256, 256) and media.spectrograms.max() == 0


def test_variable_frame_rate_is_cut_by_timestamp(tmp_path):
    # 10 frames in the first second, 40 in the second, 5 in the third, then one that starts a fourth
    times = [i / 10 for i in range(10)] + [1 + i / 40 for i in range(40)] + [2 + i / 5 for i in range(5)] + [3.0]
    frames = np.random.default_rng(0).integers(0, 256, size=(len(times), 48, 64, 3), dtype=np.uint8)
    path = tmp_path / "vfr.mp4"
    write_mp4(path, frames, fps=25, frame_times=times, audio=np.zeros(3 * 16000), audio_rate=16000)
    media = decode_clip(str(path))
    assert media.n_seconds == 3
    assert 0 <= media.key_frame_index[0] < 10 <= media.key_frame_index[1] < 50 <= media.key_frame_index[2]
    assert np.all((media.key_frame_time >= np.arange(3)) & (media.key_frame_time < np.arange(3) + 1))


def test_unusable_clips_raise_clip_error_with_a_reason(tmp_path):
    short = make_clip(tmp_path / "short.mp4", seconds=0.6)
    with pytest.raises(ClipError, match="shorter than one second"):
        decode_clip(str(short))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(ClipError, match="cannot read video"):
        decode_clip(str(corrupt))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(make_clip(tmp_path / "whole.mp4", seconds=3).read_bytes()[:3000])
    with pytest.raises(ClipError):
        decode_clip(str(truncated))


def test_audio_is_decoded_in_phase_with_what_was_written(tmp_path):
    # a 440 Hz sine written from t = 0 at 44.1 kHz decodes in phase at 16 kHz (decord's AudioReader ran
    # ~1 ms late, 0.44 of a cycle: a mean difference of 0.63 here)
    path = make_clip(tmp_path / "a.mp4", seconds=3, audio_hz=440, audio_rate=44100)
    audio = read_audio(str(path), 16000)
    written = 0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * 16000) / 16000)
    assert len(audio) >= len(written)  # the writer pads its last AAC frame with silence
    assert np.abs(audio[800:40000] - written[800:40000]).mean() < 0.01  # AAC's own error, away from the ends


def test_read_audio_is_none_without_a_readable_audio_stream(tmp_path):
    assert read_audio(str(make_clip(tmp_path / "mute.mp4", seconds=2, audio_hz=None)), 16000) is None
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 40)
    assert read_audio(str(junk), 16000) is None
    assert read_audio(str(tmp_path / "missing.mp4"), 16000) is None


def test_caches_decoded_before_the_audio_timeline_are_refused(tmp_path):
    settings = asdict(DecodeSettings())
    assert settings["audio_timeline"] == "pts"
    store = ShardStore(tmp_path / "media", "media")
    store.check_settings({k: v for k, v in settings.items() if k != "audio_timeline"})  # an old cache's
    with pytest.raises(AvemoError, match="audio_timeline"):
        store.check_settings(settings)
    with pytest.raises(ValueError, match="audio_timeline"):
        DecodeSettings(audio_timeline="decord")
