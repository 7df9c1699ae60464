"""The two video decoders (avemo.extract.video): decord where it is installed, PyAV everywhere.

On the same real mp4 both give the same frame times, seconds, key frame indices and times, and the same
pixels: the tolerance is 0 (bit for bit), as measured on every clip here (PyAV frames go through the same
libavfilter scale filter as decord's, bilinear). The PyAV path is also checked against the ffmpeg CLI, so it
is covered where decord is not installed; and a media cache records its decoder and refuses another one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from avemo.cache import ShardStore
from avemo.datasets.manifest import read_manifest
from avemo.datasets.media import write_mp4
from avemo.errors import AvemoError
from avemo.extract.decode import (
    DecodeSettings,
    decodable_here,
    decode_clip,
    media_settings,
    read_streams,
    with_recorded_decoder,
)
from avemo.extract.finetune import FinetuneSettings
from avemo.extract.pipeline import ExtractSettings, extract
from avemo.extract.video import ENVIRONMENT, default_decoder, installed, open_video
from avemo.extract.workers import decode_for_cache

from helpers import make_clip

needs_decord = pytest.mark.skipif(not installed("decord"), reason="decord has no wheel for this platform")


def write_b_frames(path: Path, seconds: float = 3.0, size: tuple[int, int] = (384, 288)) -> Path:
    """H.264 with B-frames (decode order differs from presentation order), larger than 256×256 (scaled down)."""
    width, height = size
    rng = np.random.default_rng(5)
    levels = np.cumsum(rng.integers(-12, 13, size=(int(seconds * 25), 1, 1, 3)), axis=0) + 128
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "x264-params": "bframes=3:b-adapt=0", "crf": "26"}
        for level in levels:
            rgb = np.clip(level + rng.integers(-20, 21, size=(height, width, 3)), 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory, sample_corpus) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("decoders")
    rows = list(csv.DictReader(sample_corpus.open()))[:2]
    out = {f"sample{i}": sample_corpus.parent / row["path"] for i, row in enumerate(rows)}
    out["ntsc"] = make_clip(folder / "ntsc.mp4", seconds=3.5, fps=Fraction(30000, 1001), seed=3)
    # variable frame rate: 10 fps in second 0, 40 fps in second 1, no frame in seconds 2 and 3, then two
    times = [i / 10 for i in range(10)] + [1 + i / 40 for i in range(40)] + [4.0, 4.5]
    frames = np.random.default_rng(2).integers(0, 256, size=(len(times), 48, 64, 3), dtype=np.uint8)
    write_mp4(folder / "vfr.mp4", frames, fps=25, frame_times=times, audio=np.zeros(5 * 16000), audio_rate=16000)
    out["vfr"] = folder / "vfr.mp4"
    out["b_frames"] = write_b_frames(folder / "b-frames.mp4")
    return out


def test_the_b_frame_clip_really_reorders_frames(clips):
    with av.open(str(clips["b_frames"])) as container:
        pts = [p.pts for p in container.demux(video=0) if p.size]
    assert pts != sorted(pts)  # decode order is not presentation order


@needs_decord
@pytest.mark.parametrize("name", ["sample0", "sample1", "ntsc", "vfr", "b_frames"])
def test_both_decoders_give_the_same_seconds_key_frames_and_pixels(clips, name):
    path = str(clips[name])
    decord_media = decode_clip(path, DecodeSettings(video_decoder="decord"))
    pyav_media = decode_clip(path, DecodeSettings(video_decoder="pyav"))
    assert pyav_media.n_seconds == decord_media.n_seconds >= 3
    np.testing.assert_array_equal(pyav_media.key_frame_index, decord_media.key_frame_index)
    np.testing.assert_array_equal(pyav_media.key_frame_time, decord_media.key_frame_time)
    np.testing.assert_array_equal(pyav_media.key_frames, decord_media.key_frames)  # tolerance 0
    np.testing.assert_array_equal(pyav_media.spectrograms, decord_media.spectrograms)


@needs_decord
@pytest.mark.parametrize("name", ["ntsc", "vfr", "b_frames"])
def test_both_decoders_give_the_same_frame_times_and_every_frame(clips, name):
    path = str(clips[name])
    timeline, _ = read_streams(path, 16000)
    with open_video(path, 256, "decord", timeline) as a, open_video(path, 256, "pyav", timeline) as b:
        np.testing.assert_array_equal(a.starts, b.starts)
        assert a.end == b.end
        every = list(range(len(a.starts)))
        np.testing.assert_array_equal(a.frames(every), b.frames(every))


def test_pyav_gives_frames_in_any_order_of_requests(clips):
    """Forward in segments, a gap's frame from the previous request, and one already passed (decoded again)."""
    path = str(clips["b_frames"])
    timeline, _ = read_streams(path, 16000)
    with open_video(path, 256, "pyav", timeline) as video:
        every = video.frames(list(range(len(video.starts))))
        assert every.shape == (75, 256, 256, 3)
        assert len({frame.tobytes() for frame in every}) == 75  # every frame differs: a wrong index shows
    with open_video(path, 256, "pyav", timeline) as video:
        for request in ([0, 1, 2], [2], [10, 11], [30], [5, 6], [74], [0]):
            np.testing.assert_array_equal(video.frames(request), every[request])


def test_pyav_frames_equal_the_ffmpeg_cli(clips):
    """The PyAV path against an independent decode (no decord needed): the CLI's bilinear scale to 256×256."""
    path = str(clips["b_frames"])
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", path, "-map", "0:v"]
    command += ["-fps_mode", "passthrough", "-vf", "scale=256:256:flags=bilinear", "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]
    cli = np.frombuffer(subprocess.run(command, capture_output=True, check=True).stdout, np.uint8).reshape(-1, 256, 256, 3)
    timeline, _ = read_streams(path, 16000)
    with open_video(path, 256, "pyav", timeline) as video:
        np.testing.assert_array_equal(video.frames(list(range(len(cli)))), cli)
    media = decode_clip(path, DecodeSettings(video_decoder="pyav"))
    np.testing.assert_array_equal(media.key_frames, cli[media.key_frame_index])


def test_unusable_clips_give_a_reason_with_pyav(tmp_path):
    settings = DecodeSettings(video_decoder="pyav")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    assert decode_for_cache((str(corrupt), settings)).startswith("cannot read video")
    short = make_clip(tmp_path / "short.mp4", seconds=0.6)
    assert decode_for_cache((str(short), settings)).startswith("shorter than one second")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(make_clip(tmp_path / "whole.mp4", seconds=3).read_bytes()[:3000])
    assert isinstance(decode_for_cache((str(truncated), settings)), str)


def test_the_environment_chooses_the_decoder(monkeypatch):
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    assert DecodeSettings().video_decoder == ("decord" if installed("decord") else "pyav")
    monkeypatch.setenv(ENVIRONMENT, "PyAV ")
    assert DecodeSettings().video_decoder == "pyav"
    monkeypatch.setenv(ENVIRONMENT, "opencv")
    with pytest.raises(AvemoError, match=f"{ENVIRONMENT}='opencv': use one of decord, pyav"):
        default_decoder()
    with pytest.raises(ValueError, match="video_decoder"):
        DecodeSettings(video_decoder="opencv")


def test_without_decord_pyav_decodes_and_a_decord_cache_is_read_with_a_note(monkeypatch, capsys, clips):
    monkeypatch.setitem(sys.modules, "decord", None)  # as on macOS or Linux aarch64: `import decord` fails
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    assert not installed("decord") and DecodeSettings().video_decoder == "pyav"
    assert decode_clip(str(clips["ntsc"])).n_seconds == 3
    monkeypatch.setenv(ENVIRONMENT, "decord")
    with pytest.raises(AvemoError, match=f"decord is not installed .*set {ENVIRONMENT}=pyav"):
        DecodeSettings()
    with pytest.raises(AvemoError, match="video_decoder=decord, which is not installed here; use pyav"):
        media_settings({}, DecodeSettings(video_decoder="decord"), "CACHE/media")  # extract refuses before decoding
    here = decodable_here(DecodeSettings(video_decoder="decord"), "CACHE/media")  # predict on a decord cache
    assert here.video_decoder == "pyav"
    assert "note: CACHE/media was decoded by decord, which is not installed here" in capsys.readouterr().err
    assert decodable_here(here, "CACHE/media") == here and capsys.readouterr().err == ""


def test_a_media_cache_keeps_one_decoder():
    decord_made = asdict(DecodeSettings(video_decoder="decord"))
    before = {k: v for k, v in decord_made.items() if k != "video_decoder"}  # a cache made before the record
    assert with_recorded_decoder(before) == decord_made and with_recorded_decoder({}) == {}
    with pytest.raises(AvemoError, match=f"decoded by decord, not pyav: set {ENVIRONMENT}=decord"):
        media_settings(before, DecodeSettings(video_decoder="pyav"), "old")  # e.g. resumed on a Mac
    pyav_made = asdict(DecodeSettings(video_decoder="pyav"))
    assert media_settings({}, DecodeSettings(video_decoder="pyav"), "empty") == pyav_made
    assert media_settings(pyav_made, DecodeSettings(video_decoder="pyav"), "new") == pyav_made


@needs_decord
def test_a_media_cache_keeps_one_decoder_with_decord():
    decord_made = asdict(DecodeSettings(video_decoder="decord"))
    before = {k: v for k, v in decord_made.items() if k != "video_decoder"}
    assert media_settings(before, DecodeSettings(video_decoder="decord"), "old") == before  # the manifest stays
    with pytest.raises(AvemoError, match=f"decoded by pyav, not decord: set {ENVIRONMENT}=pyav"):
        media_settings(asdict(DecodeSettings(video_decoder="pyav")), DecodeSettings(video_decoder="decord"), "new")


def _extract(clips: list, cache: Path) -> str:
    settings = ExtractSettings(
        decode=DecodeSettings(),  # the decoder that AVEMO_VIDEO_DECODER names
        weights="tiny",
        clips_per_shard=2,
        batch_size=8,
        workers=1,
        finetune=FinetuneSettings(mode="none"),
    )
    with contextlib.redirect_stdout(io.StringIO()) as out:
        extract(clips, cache, settings)
    return out.getvalue()


def test_extract_with_pyav_records_it_and_a_resume_cannot_mix_decoders(sample_corpus, tmp_path, monkeypatch):
    clips = read_manifest(sample_corpus)[:3]
    monkeypatch.setenv(ENVIRONMENT, "pyav")
    _extract(clips[:2], tmp_path / "cache")
    media = ShardStore(tmp_path / "cache" / "media", "media")
    assert media.settings["video_decoder"] == "pyav"
    index = media.read_index()
    assert sorted(index["clip_id"]) == sorted(c.clip_id for c in clips[:2]) and index["n_seconds"].min() >= 5
    frames = media.read_seconds("key_frames")
    assert frames.shape[1:] == (256, 256, 3) and frames.std() > 10
    if installed("decord"):  # the same cache resumed by decord: refused before any decoding
        monkeypatch.setenv(ENVIRONMENT, "decord")
        with pytest.raises(AvemoError, match=f"decoded by pyav, not decord: set {ENVIRONMENT}=pyav"):
            _extract(clips, tmp_path / "cache")
    monkeypatch.setenv(ENVIRONMENT, "pyav")  # by pyav: the third clip is added
    assert "2 already cached" in _extract(clips, tmp_path / "cache")
    assert len(ShardStore(tmp_path / "cache" / "media", "media").read_index()["clip_id"]) == 3


@needs_decord
def test_a_cache_made_before_the_decoder_was_recorded_resumes_with_decord(sample_corpus, tmp_path, monkeypatch):
    clips = read_manifest(sample_corpus)[:2]
    monkeypatch.setenv(ENVIRONMENT, "decord")
    _extract(clips[:1], tmp_path / "cache")
    for kind in ("media", "features"):  # as an older avemo wrote them: no video_decoder
        manifest = tmp_path / "cache" / kind / "manifest.json"
        data = json.loads(manifest.read_text())
        settings = data["settings"] if kind == "media" else data["settings"]["media"]
        del settings["video_decoder"]
        manifest.write_text(json.dumps(data))
    assert "1 already cached" in _extract(clips, tmp_path / "cache")
    assert "video_decoder" not in ShardStore(tmp_path / "cache" / "media", "media").settings
    monkeypatch.setenv(ENVIRONMENT, "pyav")
    with pytest.raises(AvemoError, match="decoded by decord, not pyav"):
        _extract(clips, tmp_path / "cache")
