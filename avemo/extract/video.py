"""Video frames for the segmenting code (avemo.extract.decode), from one of two decoders behind one interface.

`open_video(path, size, decoder, timeline)` gives a `Video`: `starts` (each frame's presentation time, s from
the video's start, in presentation order), `end` (where the last frame ends) and `frames(indices)` (those
frames as uint8 [n, size, size, 3] RGB). Both take the times from `timeline`, the PyAV packet pass of
`decode.read_streams`, so the same file gives the same seconds and key frame candidates with either decoder.

- decord (the default where it is installed: its wheels exist for Linux x86_64 and Windows x86_64 only):
  frames scaled while decoding by libavfilter's scale filter (bilinear). Where PyAV and decord count other
  frames (rare), decord's own float32 times are used, as before this module existed.
- PyAV (elsewhere, or `AVEMO_VIDEO_DECODER=pyav`): frames decoded in presentation order and put through the
  same filter (`scale=W:H:flags=bilinear,format=rgb24`): the pixels equal decord's bit for bit on every file
  tested (tests/test_video_decoder.py). `VideoFrame.reformat(..., interpolation="BILINEAR")`, the best of
  its interpolations, does not: it differed from decord in 3-19% of the values (mean 0.07-0.34 grey levels,
  up to 22) on three test clips. Frames are decoded forward, one request at a time; a request for a frame
  already passed (other than those of the previous request) decodes again from the start.

A media cache records the decoder that made it (`DecodeSettings.video_decoder`); see decode.py.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass

import av
import av.filter
import numpy as np

from avemo.errors import AvemoError

DECODERS = ("decord", "pyav")
ENVIRONMENT = "AVEMO_VIDEO_DECODER"
LEGACY_DECODER = "decord"  # what decoded every media cache made before the decoder was recorded


class ClipError(Exception):
    """A clip that cannot be used; the message is the reason written to errors.csv."""


@dataclass
class VideoTimeline:
    """Presentation times of a video's frames, in presentation order (decord's index order)."""

    start: np.ndarray  # float64 [n] seconds from the video's start (the first frame's presentation time)
    end: float  # where the last frame ends, seconds from the video's start
    zero: float  # the video's start on the container's timeline, seconds


def installed(decoder: str) -> bool:
    """Whether `decoder` can be used here (PyAV always can: avemo depends on it on every platform)."""
    return decoder == "pyav" or importlib.util.find_spec(decoder) is not None


def default_decoder() -> str:
    """AVEMO_VIDEO_DECODER when set, else decord where it is installed, else PyAV; AvemoError for a value
    that is not a decoder, or names one that is not installed."""
    chosen = os.environ.get(ENVIRONMENT, "").strip().lower()
    if not chosen:
        return "decord" if installed("decord") else "pyav"
    if chosen not in DECODERS:
        raise AvemoError(f"{ENVIRONMENT}={chosen!r}: use one of {', '.join(DECODERS)}, or unset it")
    if not installed(chosen):
        raise AvemoError(
            f"{ENVIRONMENT}={chosen}, but {chosen} is not installed (its wheels exist for Linux and Windows on "
            f"x86_64 only): install it, or set {ENVIRONMENT}=pyav"
        )
    return chosen


def open_video(path: str, size: int, decoder: str, timeline: VideoTimeline | None) -> Video:
    """The frames of `path` at size×size by `decoder`; ClipError when the file cannot be read."""
    if decoder == "decord":
        return DecordVideo(path, size, timeline)
    if decoder == "pyav":
        return PyavVideo(path, size, timeline)
    raise ValueError(f"video decoder {decoder!r}: one of {DECODERS}")


class Video:
    """Frame times and frames of one video (module docstring); a context manager that closes the file."""

    starts: np.ndarray  # float64 [n], s from the video's start
    end: float

    def frames(self, indices: list[int]) -> np.ndarray:
        """uint8 [len(indices), size, size, 3] RGB; ClipError with the reason when they cannot be decoded."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DecordVideo(Video):
    def __init__(self, path: str, size: int, timeline: VideoTimeline | None) -> None:
        import decord

        self._errors = (decord.DECORDError, RuntimeError)  # decord raises RuntimeError on unreadable containers
        try:
            self.reader = decord.VideoReader(path, width=size, height=size, num_threads=1)
            n_frames = len(self.reader)
            if n_frames == 0:
                raise ClipError("no video frames")
            own = self.reader.get_frame_timestamp(range(n_frames))  # [n, 2]: start, end (s), float32
        except self._errors as e:
            raise ClipError(f"cannot read video: {first_line(e)}") from None
        if timeline is not None and len(timeline.start) == n_frames:
            self.starts, self.end = timeline.start, timeline.end
        else:  # PyAV sees other frames than decord (rare): decord's own times
            self.starts, self.end = own[:, 0].astype(np.float64), float(own[-1, 1])

    def frames(self, indices: list[int]) -> np.ndarray:
        try:
            return self.reader.get_batch(list(indices)).asnumpy()
        except self._errors as e:
            raise ClipError(first_line(e)) from None


class PyavVideo(Video):
    def __init__(self, path: str, size: int, timeline: VideoTimeline | None) -> None:
        if timeline is None or len(timeline.start) == 0:
            raise ClipError("cannot read video: no video stream with frame times")
        self.path, self.size = path, size
        self.starts, self.end = timeline.start, timeline.end
        self.container: av.container.InputContainer | None = None
        self.kept: dict[int, np.ndarray] = {}  # the frames of the previous request
        self._rewind()

    def _rewind(self) -> None:
        self.close()
        try:
            self.container = av.open(self.path, metadata_errors="ignore")
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise ClipError(f"cannot read video: {first_line(e)}") from None
        stream = self.container.streams.best("video")
        stream.codec_context.thread_count = 1  # one decoding process per core, as decord's num_threads=1
        self.decoded = self._scaled(stream)
        self.position = 0  # index of the next frame `decoded` gives

    def _scaled(self, stream: av.video.stream.VideoStream) -> Iterator[np.ndarray]:
        """Every frame in presentation order, through the scale filter (rebuilt if the frames change shape)."""
        graph, shape = None, None
        for frame in self.container.decode(stream):
            if (frame.width, frame.height, frame.format.name) != shape:
                graph, shape = scale_graph(self.size, template=stream), (frame.width, frame.height, frame.format.name)
            graph.push(frame)
            yield graph.pull().to_ndarray()

    def frames(self, indices: list[int]) -> np.ndarray:
        wanted = set(indices)
        if any(i < self.position and i not in self.kept for i in wanted):
            self._rewind()
        found = {i: self.kept[i] for i in wanted if i in self.kept}
        try:
            while self.position <= max(wanted):
                frame = next(self.decoded, None)
                if frame is None:
                    raise ClipError(f"the video ends after frame {self.position} of {len(self.starts)}")
                if self.position in wanted:
                    found[self.position] = frame
                self.position += 1
        except av.error.FFmpegError as e:
            raise ClipError(first_line(e)) from None
        self.kept = found
        return np.stack([found[i] for i in indices])

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None


def scale_graph(size: int, **source) -> av.filter.Graph:
    """libavfilter's bilinear scale to size×size RGB, as decord scales (`source`: av.filter.Graph.add_buffer's
    arguments, e.g. template=stream)."""
    graph = av.filter.Graph()
    nodes = [
        graph.add_buffer(**source),
        graph.add("scale", f"{size}:{size}:flags=bilinear"),
        graph.add("format", "rgb24"),
        graph.add("buffersink"),
    ]
    graph.link_nodes(*nodes).configure()
    return graph


def first_line(error: Exception) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(error).__name__
