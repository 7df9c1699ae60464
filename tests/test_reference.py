"""decode_clip against an independent decode by the ffmpeg CLI (the binary shipped by imageio-ffmpeg).

The clips are real files made in the test: video frames written with PyAV, audio added by the ffmpeg CLI
(AAC, with the edit lists and encoder delay that come with it): audio starting 0.5 s after the video, video
starting 0.32 s after the audio, variable frame rate with two empty seconds and a last frame lasting to a
whole second, 29.97 fps, 5.1 audio, and H.264 + MP3 in AVI. The reference is what the CLI decodes:

- frames: `ffmpeg -i X -map 0:v -fps_mode passthrough -vf showinfo,scale=256:256:flags=bilinear
  -pix_fmt rgb24 -f rawvideo -` (bilinear is the scaler decord's libavfilter uses: the pixels agree
  exactly), with each frame's presentation time and duration from showinfo; the video lasts to the last
  frame's pts + duration;
- audio: `ffmpeg -i X -vn -af aresample=16000:async=1:first_pts=0 -ac 1 -f f32le -`, whose t = 0 is the
  file's start; where the video starts later (one clip), the CLI's samples and frame times are shifted by
  the video's start (read with PyAV), as decode_clip's t = 0 is the video's first frame;
- key frames: eq. 1-2 (avemo.extract.keyframe, checked elsewhere against hand-written maths) on the CLI's
  frames of each second, an empty second taking the frame nearest its middle;
- spectrograms: avemo.extract.spectrogram.spectrogram_images on the CLI's audio cut into 1-s rows.

Tolerances, for each clip: the number of seconds, every key frame index and its pixels exactly (AVI: each
key frame in its second, as AVI has no presentation times to compare); key frame times to 1 µs; every
second's spectrogram within a mean absolute difference of 1 grey level; the decoded samples within 1e-3
of the CLI's over the whole video (resampler and decoder rounding; in practice identical); a 1 kHz burst's
onset (first sample above half its amplitude) within 10 ms of where it was put on the timeline.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from avemo.datasets.media import write_mp4
from avemo.extract.decode import decode_clip, read_audio
from avemo.extract.keyframe import key_frame, rgb_histograms
from avemo.extract.spectrogram import SpectrogramSettings, spectrogram_images
from avemo.extract.video import DECODERS, ENVIRONMENT, installed

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
RATE = 16000
SIZE = 256


@pytest.fixture(autouse=True, params=[d for d in DECODERS if installed(d)])
def video_decoder(request, monkeypatch):
    """Every reference check runs with each video decoder installed (decord where it has a wheel; PyAV always)."""
    monkeypatch.setenv(ENVIRONMENT, request.param)
    return request.param


BURST = "if(between(t,{at},{at}+0.05),0.5*sin(2*PI*1000*t),0)"  # 50 ms of 1 kHz at amplitude 0.5
CHIRP = "0.5*sin(2*PI*(100*t+600*t*t))"  # 100 Hz rising by 1.2 kHz a second


def ffmpeg(*args: str) -> bytes:
    done = subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-y", *args], capture_output=True, check=True)
    return done.stdout if done.stdout else done.stderr


def random_walk_frames(n: int, seed: int) -> np.ndarray:
    """64×48 RGB frames whose colour wanders, so every second has a clear key frame."""
    rng = np.random.default_rng(seed)
    levels = np.cumsum(rng.integers(-12, 13, size=(n, 1, 1, 3)), axis=0) + 128
    return np.clip(levels + rng.integers(-20, 21, size=(n, 48, 64, 3)), 0, 255).astype(np.uint8)


def add_audio(
    video: Path,
    out: Path,
    source: str,
    seconds: float,
    delay: float = 0.0,
    layout: str = "stereo",
    codecs: tuple[str, ...] = ("-c:v", "copy", "-c:a", "aac", "-b:a", "256k"),
) -> Path:
    """`video`'s stream copied, plus `source` (an aevalsrc expression, or one per channel joined by |) as
    AAC starting `delay` seconds after the video (before it if negative)."""
    channels = {"stereo": 2, "5.1": 6}[layout]
    audio = f"aevalsrc='{'|'.join([source] * channels) if '|' not in source else source}':c={layout}:s=44100:d={seconds}"
    late_audio = ["-itsoffset", str(delay)] if delay > 0 else []
    late_video = ["-itsoffset", str(-delay)] if delay < 0 else []
    ffmpeg(
        "-loglevel", "error", *late_video, "-i", str(video), *late_audio, "-f", "lavfi", "-i", audio,
        "-map", "0:v", "-map", "1:a", *codecs, str(out),
    )  # fmt: skip
    return out


def write_vfr(path: Path, times: list[float], end: float, seed: int) -> Path:
    """H.264 mp4 with frames at `times` (s), each lasting to the next, the last to `end` (packet durations)."""
    duration = {round(t * 1000): round((e - t) * 1000) for t, e in zip(times, times[1:] + [end])}
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "26"}
        stream.codec_context.time_base = Fraction(1, 1000)

        def mux(packets: list[av.Packet]) -> None:
            for packet in packets:
                packet.duration = duration[packet.pts]
                container.mux(packet)

        for t, rgb in zip(times, random_walk_frames(len(times), seed)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            mux(stream.encode(frame))
        mux(stream.encode(None))
    return path


# -- the reference decode ------------------------------------------------------------------------------
def reference_frames(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CLI's frames at 256×256 (presentation order) and each one's pts and duration in seconds."""
    command = [FFMPEG, "-nostdin", "-hide_banner", "-i", str(path), "-map", "0:v", "-fps_mode", "passthrough"]
    command += ["-vf", f"showinfo,scale={SIZE}:{SIZE}:flags=bilinear", "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]
    done = subprocess.run(command, capture_output=True, check=True)
    frames = np.frombuffer(done.stdout, np.uint8).reshape(-1, SIZE, SIZE, 3)
    pts, duration = [], []
    for line in done.stderr.decode().splitlines():
        if "Parsed_showinfo" in line and "pts_time:" in line:
            fields = dict(f.split(":", 1) for f in line.split("]", 1)[1].split() if ":" in f)
            pts.append(float(fields["pts_time"]))
            duration.append(float(fields["duration_time"]))
    assert len(pts) == len(frames)
    return frames, np.array(pts), np.array(duration)


def reference_audio(path: Path) -> np.ndarray:
    af = f"aresample={RATE}:async=1:first_pts=0"
    return np.frombuffer(
        ffmpeg("-loglevel", "error", "-i", str(path), "-vn", "-af", af, "-ac", "1", "-f", "f32le", "-"), np.float32
    )


def reference_key_frames(frames: np.ndarray, pts: np.ndarray, n_seconds: int) -> np.ndarray:
    second = np.floor(pts + 1e-6).astype(int)
    chosen = []
    for s in range(n_seconds):
        members = np.flatnonzero(second == s)
        if len(members) == 0:  # a second with no frame: the frame nearest its middle
            members = np.array([np.abs(pts - (s + 0.5)).argmin()])
        chosen.append(members[key_frame(rgb_histograms(frames[members], 32))])
    return np.array(chosen)


def one_second_rows(audio: np.ndarray, n_seconds: int) -> np.ndarray:
    rows = np.zeros(n_seconds * RATE, np.float32)
    rows[: min(len(audio), len(rows))] = audio[: len(rows)]
    return rows.reshape(n_seconds, RATE)


def onset(audio: np.ndarray) -> float:
    """Seconds to the first sample above half the burst's amplitude."""
    return np.flatnonzero(np.abs(audio) > 0.25)[0] / RATE


def starts(path: Path) -> dict[str, float]:
    """Presentation time (s) of the file's start, its first video frame and its first decoded audio sample."""
    with av.open(str(path)) as container:
        out = {"file": container.start_time / av.time_base}
        video = container.streams.video[0]
        out["video"] = float(video.start_time * video.time_base)
        sound = container.streams.audio[0]
        frame = next(f for p in container.demux(sound) for f in p.decode())
        out["audio"] = float(frame.pts * frame.time_base)
    return out


# -- the clips -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    """name → (file, the seconds it should give)."""
    folder = tmp_path_factory.mktemp("reference")
    out = {}
    # (a) audio starting 0.5 s after the video (an mp4 edit list), the burst at 1.5 s of the audio = 2.0 s
    video = folder / "late-audio-video.mp4"
    write_mp4(video, random_walk_frames(100, 1), fps=25)
    out["late_audio"] = add_audio(video, folder / "late.mp4", BURST.format(at=1.5), 3.5, delay=0.5), 4
    # (a') the other way round: the video starts 0.32 s after the audio, whose burst at 1.5 s is then at
    # 1.18 s of the video (audio before the video's start is left out)
    out["late_video"] = add_audio(video, folder / "late-video.mp4", BURST.format(at=1.5), 4.5, delay=-0.32), 4
    # (b) variable frame rate: 10 fps in second 0, 40 fps in second 1, nothing in seconds 2 and 3, frames at
    # 4.0 and 4.5 s, the last lasting to 5.0 s
    times = [i / 10 for i in range(10)] + [1 + i / 40 for i in range(40)] + [4.0, 4.5]
    video = write_vfr(folder / "vfr-video.mp4", times, end=5.0, seed=2)
    out["vfr"] = add_audio(video, folder / "vfr.mp4", CHIRP, 5.0), 5
    # (c) 29.97 fps, 105 frames: 3.5035 s, three whole seconds
    video = folder / "ntsc-video.mp4"
    write_mp4(video, random_walk_frames(105, 3), fps=Fraction(30000, 1001))
    out["ntsc"] = add_audio(video, folder / "ntsc.mp4", CHIRP, 3.6), 3
    # (d) 5.1 audio: a quiet tone in each channel (FL FR FC LFE BL BR), and a burst at 1.2 s in the centre
    video = folder / "surround-video.mp4"
    write_mp4(video, random_walk_frames(75, 4), fps=25)
    tones = [f"0.05*sin(2*PI*{hz}*t)" for hz in (300, 500)] + [BURST.format(at=1.2)]
    tones += ["0.05*sin(2*PI*60*t)"] + [f"0.05*sin(2*PI*{hz}*t)" for hz in (2000, 3500)]
    out["surround"] = add_audio(video, folder / "surround.mp4", "|".join(tones), 3.0, layout="5.1"), 3
    # (e) H.264 and MP3 in AVI, where decord 0.6.0 reads no timestamps (its frame times come out as -3.7e17)
    video = folder / "avi-video.mp4"
    write_mp4(video, random_walk_frames(75, 5), fps=25)
    codecs = ("-c:v", "libx264", "-preset", "ultrafast", "-c:a", "mp3")
    out["avi"] = add_audio(video, folder / "avi.avi", CHIRP, 3.0, codecs=codecs), 3
    return out


def test_the_late_audio_clip_really_starts_its_audio_late(clips):
    path, _ = clips["late_audio"]
    at = starts(path)
    assert at["file"] == at["video"] == 0.0
    # the edit list starts the audio stream 0.5 s late, less the AAC encoder's priming frame (1024 samples at
    # 44.1 kHz), which this edit list keeps in (the decoder's near-silent first frame)
    assert at["audio"] == pytest.approx(0.5 - 1024 / 44100, abs=1e-4)


def test_the_late_video_clip_really_starts_its_video_late(clips):
    at = starts(clips["late_video"][0])
    assert at["file"] == 0.0 and at["audio"] == 0.0 and at["video"] == pytest.approx(0.32, abs=1e-3)


@pytest.mark.parametrize("name", ["late_audio", "late_video", "vfr", "ntsc", "surround"])
def test_decode_matches_the_ffmpeg_cli(clips, name):
    path, expected_seconds = clips[name]
    at = starts(path)
    video_start = at["video"] - at["file"]  # the CLI's t = 0 is the file's start; decode_clip's the video's

    media = decode_clip(str(path))
    frames, pts, duration = reference_frames(path)
    pts = pts - video_start
    n_seconds = int(np.floor((pts[-1] + duration[-1]) + 1e-6))
    assert media.n_seconds == n_seconds == expected_seconds

    reference_index = reference_key_frames(frames, pts, n_seconds)
    np.testing.assert_array_equal(media.key_frame_index, reference_index)
    np.testing.assert_allclose(media.key_frame_time, pts[reference_index], atol=1e-6)
    np.testing.assert_array_equal(media.key_frames, frames[reference_index])

    cli_audio = reference_audio(path)[round(video_start * RATE) :]
    ours = read_audio(str(path), RATE)
    span = min(len(ours), len(cli_audio), n_seconds * RATE)
    assert span >= n_seconds * RATE - RATE // 100  # audio over the whole video (to 10 ms)
    np.testing.assert_allclose(ours[:span], cli_audio[:span], atol=1e-3)

    reference = spectrogram_images(one_second_rows(cli_audio, n_seconds), SpectrogramSettings())
    per_second = np.abs(media.spectrograms.astype(float) - reference.astype(float)).mean(axis=(1, 2))
    assert np.all(per_second <= 1.0), per_second


def test_h264_in_avi_decodes_like_the_cli(clips):
    """AVI stores no presentation times: libavformat guesses them for H.264 (PyAV's frames at (i + 2)/25,
    the CLI's at 0, 2/25, 3/25, ...), so the key frames are checked for lying in their second, not by index."""
    path, expected_seconds = clips["avi"]
    media = decode_clip(str(path))
    frames, pts, duration = reference_frames(path)
    assert media.n_seconds == int(np.floor(pts[-1] + duration[-1] + 1e-6)) == expected_seconds
    assert np.all((media.key_frame_time >= np.arange(3)) & (media.key_frame_time < np.arange(3) + 1))
    np.testing.assert_array_equal(media.key_frames, frames[media.key_frame_index])
    cli_audio = reference_audio(path)
    np.testing.assert_allclose(read_audio(str(path), RATE)[: 3 * RATE], cli_audio[: 3 * RATE], atol=1e-3)
    reference = spectrogram_images(one_second_rows(cli_audio, 3), SpectrogramSettings())
    assert np.abs(media.spectrograms.astype(float) - reference.astype(float)).mean(axis=(1, 2)).max() <= 1.0


@pytest.mark.parametrize(("name", "at"), [("late_audio", 2.0), ("late_video", 1.18), ("surround", 1.2)])
def test_the_burst_lands_where_it_was_put(clips, name, at):
    path, _ = clips[name]
    assert onset(read_audio(str(path), RATE)) == pytest.approx(at, abs=0.010)
