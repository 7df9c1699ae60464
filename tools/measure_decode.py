"""Before/after figures for issue 11 items 1-2: audio timeline and last-second rule in avemo/extract/decode.py.

Run from the repository root:  .venv/bin/python tools/measure_decode.py
"Old" is `git show 0a8db6c:avemo/extract/decode.py`, the decoder before issue 11 (or OLD=path/to/decode.py),
"new" the working tree's.
Reference: the ffmpeg CLI of imageio-ffmpeg:
  ffmpeg -i X -vn -af aresample=16000:async=1:first_pts=0 -ac 1 -f f32le -
cut into 1-s rows and turned into spectrograms by avemo.extract.spectrogram.spectrogram_images.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.getcwd())
import imageio_ffmpeg  # noqa: E402

from avemo.extract import decode as new  # noqa: E402
from avemo.extract.spectrogram import SpectrogramSettings, spectrogram_images  # noqa: E402

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
RATE = 16000
H264 = "-c:v libx264 -preset ultrafast"


def load_old():
    source = os.environ.get("OLD")
    old = ["git", "show", "0a8db6c:avemo/extract/decode.py"]
    text = Path(source).read_text() if source else subprocess.check_output(old, text=True)
    path = Path(tempfile.mkdtemp()) / "decode_old.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("decode_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["decode_old"] = module
    spec.loader.exec_module(module)
    return module


def ff(*args):
    subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def ff_audio(path):
    out = subprocess.run(
        [
            FFMPEG,
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-vn",
            "-af",
            f"aresample={RATE}:async=1:first_pts=0",
            "-ac",
            "1",
            "-f",
            "f32le",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(out, np.float32)


def rows(audio, n):
    out = np.zeros((n, RATE), np.float32)
    flat = audio[: n * RATE]
    out.reshape(-1)[: len(flat)] = flat
    return out


def onset(x, threshold=0.25):
    return np.flatnonzero(np.abs(x) > threshold)[0] / RATE


def main():
    old = load_old()
    folder = Path(tempfile.mkdtemp())
    # 1. a 10 s chirp (50 Hz -> 7.5 kHz, amplitude 0.5, AAC 44.1 kHz stereo) under a 25 fps video
    chirp = folder / "chirp.mp4"
    chirp_audio = "aevalsrc='0.5*sin(2*PI*(50*t+(7450/20)*t*t))|0.5*sin(2*PI*(50*t+(7450/20)*t*t))':s=44100:d=10"
    video = "-f lavfi -i testsrc=size=160x120:rate=25:duration={}".format
    ff(*video(10).split(), "-f", "lavfi", "-i", chirp_audio, *f"{H264} -c:a aac -b:a 192k -shortest".split(), str(chirp))
    # 2. audio starting 0.5 s after the video, a 50 ms 1 kHz burst at 1.5 s of the audio = 2.0 s of the video
    late = folder / "late.mp4"
    burst_audio = "aevalsrc='if(between(t,1.5,1.55),0.5*sin(2*PI*1000*t),0)':s=44100:d=3.5"
    ff(
        *video(4).split(),
        "-itsoffset",
        "0.5",
        "-f",
        "lavfi",
        "-i",
        burst_audio,
        *f"-map 0:v -map 1:a {H264} -c:a aac".split(),
        str(late),
    )
    settings = SpectrogramSettings()
    for name, module in (("old", old), ("new", new)):
        media = module.decode_clip(str(chirp))
        reference = spectrogram_images(rows(ff_audio(chirp), media.n_seconds), settings)
        diff = np.abs(media.spectrograms.astype(float) - reference.astype(float)).mean(axis=(1, 2))
        burst = onset(module.read_audio(str(late), RATE))
        print(
            f"{name}: chirp {media.n_seconds} s, spectrogram |diff| vs ffmpeg CLI mean {diff.mean():.2f} grey levels "
            f"(per second min {diff.min():.2f} max {diff.max():.2f}); late-audio burst at {burst:.4f} s, "
            f"error {1000 * (burst - 2.0):+.1f} ms (ffmpeg CLI {1000 * (onset(ff_audio(late)) - 2.0):+.1f} ms)"
        )
    # 3. seconds kept: variable-frame-rate files whose last frame lasts to 4.0 s, in several containers
    vfr = folder / "vfr.mp4"
    _write_vfr(vfr)
    for ext in ("mp4", "mkv", "avi"):
        path = vfr if ext == "mp4" else folder / f"vfr.{ext}"
        if ext != "mp4":
            ff("-i", str(vfr), "-c:v", "libx264", "-preset", "ultrafast", "-fps_mode", "passthrough", str(path))
        counts = []
        for module in (old, new):
            try:
                counts.append(str(module.decode_clip(str(path)).n_seconds))
            except Exception as e:  # noqa: BLE001 - the old code crashes on AVI
                counts.append(f"{type(e).__name__}({e})")
        print(f"vfr.{ext}: seconds old {counts[0]}, new {counts[1]}, ffmpeg CLI {_cli_seconds(path)}")


def _write_vfr(path):
    """25 fps for 2 s, a gap, frames at 3.0 and 3.5 s; the last lasts to 4.0 s (packet durations set)."""
    from fractions import Fraction

    import av

    times = [i / 25 for i in range(50)] + [3.0, 3.5]
    ends = times[1:] + [4.0]
    duration = {round(t * 1000): round((e - t) * 1000) for t, e in zip(times, ends)}
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        stream.codec_context.time_base = Fraction(1, 1000)

        def mux(packets):
            for packet in packets:
                packet.duration = duration[packet.pts]
                container.mux(packet)

        for t in times:
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            mux(stream.encode(frame))
        mux(stream.encode(None))


def _cli_seconds(path):
    """Whole seconds covered by the video as the ffmpeg CLI decodes it (last frame's pts + duration)."""
    log = subprocess.run(
        [
            FFMPEG,
            "-nostdin",
            "-hide_banner",
            "-i",
            str(path),
            "-map",
            "0:v",
            "-fps_mode",
            "passthrough",
            "-vf",
            "showinfo",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
    ).stderr
    ends = []
    for line in log.splitlines():
        if "pts_time:" in line and "duration_time:" in line:
            fields = dict(f.split(":", 1) for f in line.split("]", 1)[1].split() if ":" in f)
            ends.append(float(fields["pts_time"]) + float(fields["duration_time"]))
    return int(np.floor(max(ends) + 1e-6))


if __name__ == "__main__":
    main()
