"""Could NVDEC decode for avemo? A probe for issue 15's extraction goal, run by tools/gpu_bench.sh.

Decoding is the extraction's bound (README, Speed): every frame of every second is decoded for the key-frame
rule, and a core decodes 720p H.264 at about 8 video-seconds per second. PyAV's wheels carry FFmpeg's CUDA
hardware decoding (`av.codec.hwaccel`). On the clips of a manifest this prints:
1. whether the frames decoded on the GPU, through the same scale filter (bilinear to 256×256, RGB), equal
   avemo's CPU frames (`PyavVideo`) — H.264 decoding is exact, the colour conversion may differ;
2. video-seconds decoded per second, CPU and GPU, by one process and by PROCESSES processes at once.
Nothing in avemo uses the GPU decoder yet; this measures whether it should.

Usage: python tools/gpu_decode_probe.py MANIFEST [PROCESSES] (default: one per CPU).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
import time

import av
import av.codec.hwaccel
import numpy as np

from avemo.datasets.manifest import read_manifest
from avemo.extract.decode import read_streams
from avemo.extract.video import open_video, scale_graph

SIZE = 256


def gpu_frames(path: str) -> np.ndarray:
    """Every frame, decoded by CUDA (no software fallback), scaled as avemo scales."""
    hwaccel = av.codec.hwaccel.HWAccel(device_type="cuda", allow_software_fallback=False)
    out, graph, shape = [], None, None
    with av.open(path, hwaccel=hwaccel) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if (frame.width, frame.height, frame.format.name) != shape:
                shape = (frame.width, frame.height, frame.format.name)
                graph = scale_graph(SIZE, width=frame.width, height=frame.height, format=frame.format, time_base=stream.time_base)
            graph.push(frame)
            out.append(graph.pull().to_ndarray())
    return np.stack(out)


def cpu_frames(path: str) -> np.ndarray:
    """Every frame as avemo decodes it with PyAV (one thread)."""
    timeline, _ = read_streams(path, 16000)
    video = open_video(path, SIZE, "pyav", timeline)
    try:
        return video.frames(list(range(len(timeline.start))))
    finally:
        video.close()


def seconds_of(job: tuple[str, str]) -> float:
    """Decode one clip with `how` (cpu or gpu); its duration in seconds (frames / 25 is close enough here)."""
    how, path = job
    frames = gpu_frames(path) if how == "gpu" else cpu_frames(path)
    return len(frames) / 25.0


def rate(how: str, paths: list[str], processes: int) -> float:
    started = time.perf_counter()
    if processes == 1:
        total = sum(seconds_of((how, p)) for p in paths)
    else:
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(processes, spawn) as pool:
            total = sum(pool.map(seconds_of, [(how, p) for p in paths]))
    return total / (time.perf_counter() - started)


def main(manifest: str, processes: int) -> None:
    paths = [str(c.path) for c in read_manifest(manifest)]
    print(f"PyAV {av.__version__}, hardware devices compiled in: {av.codec.hwaccel.hwdevices_available()}")
    try:
        worst = 0
        for path in paths[:8]:
            a, b = cpu_frames(path), gpu_frames(path)
            if a.shape != b.shape:
                print(f"{os.path.basename(path)}: CPU {a.shape} frames, GPU {b.shape}")
                continue
            worst = max(worst, int(np.abs(a.astype(np.int16) - b).max()))
        print(f"GPU frames against avemo's CPU frames ({min(8, len(paths))} clips): largest difference {worst} (0: equal)")
    except Exception as e:  # noqa: BLE001 - a probe: say why the GPU decoder is not usable and stop
        print(f"GPU decoding unusable here: {type(e).__name__}: {e}")
        return
    for how in ("cpu", "gpu"):  # one process: 4 clips; all: 4 clips each (kept short: the script has a timeout)
        for n in (1, processes):
            print(f"{how} decode, {n} process(es): {rate(how, paths[: 4 * n], n):.0f} video-seconds per second")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else os.cpu_count() or 1)
