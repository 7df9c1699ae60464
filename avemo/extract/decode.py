"""Decode one video into per-second inputs: a key frame and a spectrogram per 1-s segment.

Segments are cut by timestamp (paper: t = 1 s), so 29.97 fps and variable-frame-rate files cut right.
Frames are decoded straight at 256×256 (paper: key frames resized to 256×256), one second at a time, so
memory stays bounded for long videos.

One timeline for both modalities: t = 0 is the video's start, the presentation time of its first frame
(the video stream's start time, which decord also counts frame times from). Second s holds the frames
whose presentation time lies in [s, s + 1) and the audio samples [s·rate, (s + 1)·rate).

- Frame times are the video packets' presentation timestamps, read with PyAV in the same pass as the
  audio (their decode timestamps where a container has none, as AVI). The pixels are decoded by decord
  where it is installed, else by PyAV through the same scale filter, bit for bit the same
  (`DecodeSettings.video_decoder`, `AVEMO_VIDEO_DECODER`; avemo.extract.video).
- Last second: the video ends where its last frame (by presentation time) ends, that frame's pts plus
  its packet duration. That duration is what the container stores (mp4 `stts`, Matroska block durations)
  and what the ffmpeg CLI gives the last frame (checked on mp4, Matroska and AVI); where a packet carries
  none (or lavf's made-up one tick), the interval from the previous frame, as the CLI does, else one frame
  at the average rate. A second is kept when the video covers it (a trailing partial second only if it
  covers `DecodeSettings.min_last_segment` of it; 1.0: whole seconds only). Not the pts of the next
  frame: the last frame has none, and the stream's or file's duration may include other streams.
- Empty seconds: a second without any frame (a gap in a variable-frame-rate file) takes the frame whose
  presentation time is nearest its middle (s + 0.5; ties → the earlier frame), so every second kept has
  a key frame.
- Audio is decoded with PyAV on the container's presentation timeline (edit lists and encoder delay
  honoured by libavformat/libavcodec), then downmixed to mono and resampled to
  `SpectrogramSettings.sample_rate` by one libswresample context for the whole stream, never flushed
  before its end: `aresample=<rate>:async=1:first_pts=<start>,aformat=flt:mono`, the ffmpeg CLI's
  `-af aresample=<rate>:async=1:first_pts=0 -ac 1`. An audio stream that starts after the video is
  preceded by silence, gaps inside it are filled with silence, audio before the video's start is cut off,
  samples past an mp4 stream's declared end (the encoder's padding) are dropped, a 5.1 track gets
  libswresample's standard mono downmix, and audio shorter than the video is padded with silence. With the
  video starting the file, the samples equal the CLI's (tests/test_reference.py).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction

import av
import av.filter
import numpy as np

from avemo.errors import AvemoError
from avemo.extract.keyframe import key_frame, rgb_histograms
from avemo.extract.spectrogram import SpectrogramSettings, spectrogram_images
from avemo.extract.video import (
    DECODERS,
    ENVIRONMENT,
    LEGACY_DECODER,
    ClipError,
    Video,
    VideoTimeline,
    default_decoder,
    installed,
    open_video,
)

SEGMENT_SECONDS = 1.0  # paper: "we set t = 1"
AUDIO_TIMELINES = ("pts",)


@dataclass(frozen=True)
class DecodeSettings:
    frame_size: int = 256  # paper: key frame resized to 256×256
    hist_bins: int = 32  # per RGB channel; the paper does not say
    min_last_segment: float = 1.0  # keep a trailing partial second only if it lasts this long (1.0: drop it)
    spectrogram: SpectrogramSettings = SpectrogramSettings()
    image_codec: str = "jpeg"  # how the media cache stores key frames and spectrograms: jpeg | png | raw
    jpeg_quality: int = 90
    # How audio is put on the video's timeline. "pts": PyAV + libswresample on the presentation timeline,
    # t = 0 at the first video frame (see the module docstring). Caches decoded before this field existed
    # (decord's AudioReader, start offsets ignored) lack it in their settings, so they are refused on reuse.
    audio_timeline: str = "pts"
    # What decodes the frames: "decord" or "pyav" (same pixels, avemo.extract.video); by default
    # AVEMO_VIDEO_DECODER, else decord where it is installed, else PyAV. Recorded with the media cache, whose
    # clips one decoder makes; caches made before it was recorded were decoded by decord (`media_settings`).
    video_decoder: str = field(default_factory=default_decoder)

    def __post_init__(self) -> None:
        if self.audio_timeline not in AUDIO_TIMELINES:
            raise ValueError(f"audio_timeline must be one of {AUDIO_TIMELINES}, not {self.audio_timeline!r}")
        if self.video_decoder not in DECODERS:
            raise ValueError(f"video_decoder must be one of {DECODERS}, not {self.video_decoder!r}")


@dataclass
class ClipMedia:
    key_frames: np.ndarray  # uint8 [T, size, size, 3]
    key_frame_index: np.ndarray  # int64 [T], index of the chosen frame in the source video
    key_frame_time: np.ndarray  # float64 [T], its timestamp in seconds
    spectrograms: np.ndarray  # uint8 [T, size, size]; zeros when the clip has no audio
    has_audio: bool

    @property
    def n_seconds(self) -> int:
        return len(self.key_frames)


def decode_clip(path: str, settings: DecodeSettings | None = None) -> ClipMedia:
    """Per 1-s segment (paper: t = 1), the key frame at frame_size×frame_size and the spectrogram."""
    settings = settings or DecodeSettings()
    timeline, audio = read_streams(path, settings.spectrogram.sample_rate)
    with open_video(path, settings.frame_size, settings.video_decoder, timeline) as video:
        n_segments = _segment_count(video.end, settings.min_last_segment)
        if n_segments == 0:
            raise ClipError(f"shorter than one second ({video.end:.2f} s)")
        key_frames, key_index = _key_frames(video, n_segments, settings)
        starts = video.starts
    size = settings.frame_size
    if audio is None:
        spectrograms = np.zeros((n_segments, size, size), np.uint8)
    else:
        spectrograms = spectrogram_images(
            audio_segments(audio, n_segments, settings.spectrogram.sample_rate), settings.spectrogram
        )
    return ClipMedia(key_frames, key_index, starts[key_index].astype(np.float64), spectrograms, audio is not None)


def _key_frames(video: Video, n_segments: int, settings: DecodeSettings) -> tuple[np.ndarray, np.ndarray]:
    """Per segment, the key frame (eq. 1-2) among the frames whose presentation time lies in it, and its index."""
    starts = video.starts
    segment_of_frame = np.floor(starts / SEGMENT_SECONDS + 1e-6).astype(np.int64)
    size = settings.frame_size
    key_frames = np.empty((n_segments, size, size, 3), np.uint8)
    key_index = np.empty(n_segments, np.int64)
    for s in range(n_segments):
        members = np.flatnonzero(segment_of_frame == s)
        if len(members) == 0:  # a gap in a variable-frame-rate file: take the frame nearest its middle
            members = np.array([np.abs(starts - (s + 0.5) * SEGMENT_SECONDS).argmin()])
        try:
            frames = video.frames(members.tolist())
        except ClipError as e:
            raise ClipError(f"cannot decode second {s}: {e}") from None
        best = key_frame(rgb_histograms(frames, settings.hist_bins))
        key_frames[s], key_index[s] = frames[best], members[best]
    return key_frames, key_index


def media_settings(stored: dict, settings: DecodeSettings, folder: object) -> dict:
    """What to check a media store's recorded settings (`stored`) against: `settings` as a dict.

    A store made before the decoder was recorded was decoded by decord: it is checked without the field (and
    keeps its manifest). A store whose clips another decoder made is refused: one cache, one decoder."""
    ours = asdict(settings)
    if not installed(settings.video_decoder):
        raise AvemoError(f"{folder}: video_decoder={settings.video_decoder}, which is not installed here; use pyav")
    recorded = stored.get("video_decoder", LEGACY_DECODER) if stored else ours["video_decoder"]
    if recorded != ours["video_decoder"]:
        raise AvemoError(
            f"{folder}: its clips were decoded by {recorded}, not {ours['video_decoder']}: set "
            f"{ENVIRONMENT}={recorded} (installing {recorded} if needed), or use another --cache"
        )
    if stored and "video_decoder" not in stored:
        del ours["video_decoder"]
    return ours


def with_recorded_decoder(stored: dict) -> dict:
    """A media store's recorded settings with its decoder (decord for a store made before it was recorded)."""
    return {"video_decoder": LEGACY_DECODER, **stored} if stored else stored


def decodable_here(settings: DecodeSettings, folder: object) -> DecodeSettings:
    """A media cache's settings for decoding new videos (predict, the joint pass's export) on this machine: where
    its decoder is not installed (decord off Linux/Windows x86_64), PyAV instead, with a note on stderr (the
    frames are the same on every file tested; a cache's own clips are never decoded twice by two decoders)."""
    if installed(settings.video_decoder):
        return settings
    print(
        f"note: {folder} was decoded by {settings.video_decoder}, which is not installed here; decoding new videos "
        "with pyav (the same frames on every file tested)",
        file=sys.stderr,
    )
    return replace(settings, video_decoder="pyav")


def read_audio(path: str, sample_rate: int) -> np.ndarray | None:
    """Mono float32 audio at `sample_rate` on the video's timeline (sample 0 at the first video frame's
    presentation time), or None when the file has no (readable) audio stream."""
    return read_streams(path, sample_rate)[1]


def read_streams(path: str, sample_rate: int) -> tuple[VideoTimeline | None, np.ndarray | None]:
    """One pass over the file with PyAV: the video's frame times and its audio (see `read_audio`).

    Either is None when the file has no such stream or PyAV cannot read it; a packet that fails to decode
    is skipped (its audio becomes silence), as the ffmpeg CLI does, and a read error ends the file there."""
    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError):
        return None, None
    with container:
        video = container.streams.best("video")
        sound = container.streams.best("audio")
        zero = _stream_start(video) if video is not None else Fraction(container.start_time or 0, av.time_base)
        packets: list[tuple[int | None, int]] = []  # video (pts, duration)
        # The stream's end is exact in mp4/mov (sample counts, edit lists); elsewhere it may be an estimate.
        end = _stream_end(sound) if sound is not None and container.format.name.startswith("mov,") else None
        audio = _AudioTimeline(sample_rate, zero, end) if sound is not None else None
        streams = [s for s in (video, sound) if s is not None]
        try:
            for packet in container.demux(streams) if streams else ():
                if packet.size == 0:  # end-of-stream marker
                    continue
                if video is not None and packet.stream.index == video.index:
                    packets.append((packet.pts if packet.pts is not None else packet.dts, packet.duration or 0))
                elif audio is not None:
                    audio.add(packet)
        except av.error.FFmpegError:
            pass  # a damaged or truncated file: keep what was read
        samples = audio.finish() if audio is not None else None
        timeline = _video_timeline(video, packets, zero) if video is not None else None
    return timeline, samples


class _AudioTimeline:
    """Decoded audio frames → one libswresample context (never flushed until the end) → mono float32."""

    def __init__(self, sample_rate: int, zero: Fraction, end: Fraction | None) -> None:
        self.sample_rate = sample_rate
        self.zero = round(zero * sample_rate)  # the video's start, in output samples
        self.first: int | None = None  # output pts of the first sample produced
        self.end = end  # the stream's declared end (s), where the container states it exactly
        self.graph: av.filter.Graph | None = None
        self.source: tuple | None = None  # (format, rate, layout) the graph was built for
        self.chunks: list[np.ndarray] = []
        self.emitted = 0
        self.failed = False  # audio that libswresample cannot take (e.g. a layout it does not know): None

    def add(self, packet: av.Packet) -> None:
        if self.failed:
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            return  # a damaged packet: skipped; async=1 fills the hole with silence
        try:
            self._resample(frames)
        except (av.error.FFmpegError, ValueError):
            self.failed = True

    def _resample(self, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            if frame.pts is None or frame.samples == 0:
                continue
            frame = self._cut_at_end(frame)
            if frame is None:
                continue
            source = (frame.format.name, frame.sample_rate, frame.layout.name)
            if self.graph is not None and source != self.source:  # format change mid-stream: a new context
                self._drain(flush=True)
                self.graph = None
            if self.first is None:
                # Start at the video's start or, if the audio starts earlier, at the audio's start:
                # libswresample pads a late start with silence exactly, but drops an early start only down
                # to its 0.1 s hard-compensation threshold; so audio before the video's start is decoded
                # and cut off in `finish`.
                self.first = min(self.zero, round(frame.pts * _time_base(frame) * self.sample_rate))
            if self.graph is None:
                self.graph = self._graph(frame, self.first + self.emitted)
                self.source = source
            self.graph.push(frame)
            self._drain()

    def finish(self) -> np.ndarray | None:
        if self.graph is None or self.failed:
            return None
        try:
            self._drain(flush=True)
        except (av.error.FFmpegError, ValueError):
            return None
        if not self.chunks:
            return None
        samples = np.concatenate(self.chunks)[self.zero - self.first :]
        return samples if len(samples) else None

    def _cut_at_end(self, frame: av.AudioFrame) -> av.AudioFrame | None:
        """The part of `frame` before the stream's declared end (mp4/mov only): decoders leave the encoder's
        end padding (about one codec frame of near-silence) past it, which the ffmpeg CLI leaves out."""
        if self.end is None:
            return frame
        keep = round((self.end - frame.pts * _time_base(frame)) * frame.sample_rate)
        if keep >= frame.samples:
            return frame
        if keep <= 0:
            return None
        data = frame.to_ndarray()
        data = data[:, :keep] if frame.format.is_planar else data[:, : keep * len(frame.layout.channels)]
        cut = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name, layout=frame.layout.name)
        cut.sample_rate, cut.pts, cut.time_base = frame.sample_rate, frame.pts, frame.time_base
        return cut

    def _graph(self, frame: av.AudioFrame, first_pts: int) -> av.filter.Graph:
        graph = av.filter.Graph()
        nodes = [
            graph.add_abuffer(
                format=frame.format.name,
                sample_rate=frame.sample_rate,
                layout=frame.layout.name,
                time_base=_time_base(frame),
            ),
            graph.add("aresample", f"{self.sample_rate}:async=1:first_pts={first_pts}"),
            graph.add("aformat", f"sample_fmts=flt:channel_layouts=mono:sample_rates={self.sample_rate}"),
            graph.add("abuffersink"),
        ]
        graph.link_nodes(*nodes).configure()
        return graph

    def _drain(self, flush: bool = False) -> None:
        if flush:
            self.graph.push(None)
        while True:
            try:
                out = self.graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            self.chunks.append(samples)
            self.emitted += len(samples)


def _stream_end(stream: av.stream.Stream) -> Fraction | None:
    if stream.start_time is None or not stream.duration:
        return None
    return Fraction((stream.start_time + stream.duration) * stream.time_base)


def _time_base(frame: av.AudioFrame) -> Fraction:
    return frame.time_base or Fraction(1, frame.sample_rate)


def _stream_start(stream: av.stream.Stream) -> Fraction:
    return Fraction(stream.start_time * stream.time_base) if stream.start_time is not None else Fraction(0)


def _video_timeline(stream: av.stream.Stream, packets: list[tuple[int | None, int]], zero: Fraction) -> VideoTimeline | None:
    """Frame start times (sorted, as decord indexes frames) and the end of the last frame."""
    if not packets or any(pts is None for pts, _ in packets):
        return None
    pts = np.array([p for p, _ in packets], np.int64)
    duration = np.array([d for _, d in packets], np.int64)
    order = np.argsort(pts, kind="stable")
    pts, duration = pts[order], duration[order]
    tb = float(stream.time_base)
    start = (pts - round(zero / stream.time_base)) * tb
    last = int(duration[-1])
    gap = int(pts[-1] - pts[-2]) if len(pts) > 1 else 0
    if last > 0 and not (last == 1 and gap > 2):  # the ffmpeg CLI's test for a duration lavf made up
        end = start[-1] + last * tb
    elif gap > 0:  # no duration: the interval from the previous frame
        end = start[-1] + gap * tb
    elif stream.average_rate:
        end = start[-1] + 1.0 / float(stream.average_rate)
    else:
        end = start[-1]
    return VideoTimeline(start, float(end), float(zero))


def audio_segments(audio: np.ndarray, n_segments: int, sample_rate: int) -> np.ndarray:
    """Cut audio into n 1-s rows, padding with silence where the audio ends early."""
    per = round(SEGMENT_SECONDS * sample_rate)
    out = np.zeros((n_segments, per), np.float32)
    flat = audio[: n_segments * per]
    out.reshape(-1)[: len(flat)] = flat
    return out


def _segment_count(duration: float, min_last_segment: float) -> int:
    whole = math.floor(duration / SEGMENT_SECONDS + 1e-6)
    rest = duration - whole * SEGMENT_SECONDS
    return whole + (1 if min_last_segment < SEGMENT_SECONDS and rest >= min_last_segment - 1e-6 else 0)
