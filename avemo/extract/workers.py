"""Decoding clips for the media cache in worker processes.

This module imports no torch: spawned workers start in a fraction of a second instead of loading torch
and torchvision in every process. A worker ends when the process that started it dies (killed, crashed):
the kernel sends it SIGKILL (Linux: PR_SET_PDEATHSIG), and a watchdog thread checks its parent elsewhere; so
no decoder, and then no multiprocessing resource tracker, outlives a `kill -9` of `avemo extract`.
Each worker runs its numerical libraries on one thread (OMP/OpenBLAS/MKL): N workers on N cores each
starting N threads made decoding 5× slower on a 16-core machine (51 against 256 video-seconds per second,
`avemo bench extract`, H100 machine, issue 15).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from avemo.cache.images import ImageBlock, encode_block
from avemo.extract.decode import ClipError, DecodeSettings, decode_clip


@dataclass
class EncodedClip:
    """A decoded clip as the media cache stores it (images encoded in the worker that decoded them)."""

    key_frames: ImageBlock
    spectrograms: ImageBlock
    key_frame_index: np.ndarray
    key_frame_time: np.ndarray
    has_audio: bool

    @property
    def n_seconds(self) -> int:
        return len(self.key_frame_index)


def decode_for_cache(job: tuple[str, DecodeSettings]) -> EncodedClip | str:
    """Decode and encode one clip; a clip that cannot be used gives the reason as a string."""
    path, settings = job
    try:
        m = decode_clip(path, settings)
    except ClipError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - one odd file must not stop a day-long run
        return f"unexpected {type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
    return EncodedClip(
        encode_block(m.key_frames, settings.image_codec, settings.jpeg_quality),
        encode_block(m.spectrograms, settings.image_codec, settings.jpeg_quality),
        m.key_frame_index,
        m.key_frame_time,
        m.has_audio,
    )


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Worker initializer: end this process when `parent` (the process that spawned it) is gone."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="avemo-parent-watch", daemon=True).start()


def in_order(function: Callable, jobs: list, workers: int) -> Iterator:
    """function(job) for each job, in order, computed by `workers` spawned processes (0: one per CPU).

    At most two jobs per worker are in flight, so memory stays bounded however many clips there are."""
    workers = min(workers or os.cpu_count() or 1, max(len(jobs), 1))
    if workers <= 1:
        yield from map(function, jobs)
        return
    spawn = multiprocessing.get_context("spawn")  # fork is unsafe once torch's threads run
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn, initializer=die_with_parent, initargs=(os.getpid(),))
    with one_thread_children(), pool:
        pending: collections.deque = collections.deque()
        for job in jobs:
            pending.append(pool.submit(function, job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@contextlib.contextmanager
def one_thread_children() -> Iterator[None]:
    """Processes started meanwhile run OMP, OpenBLAS and MKL on one thread each (they read these variables
    when they load; this process's own libraries are loaded already and keep their threads)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def decoded_seconds(job: tuple[str, DecodeSettings]) -> int:
    """Decode only (for `avemo bench extract`): the number of seconds a clip gives, 0 if unusable."""
    path, settings = job
    try:
        return decode_clip(path, settings).n_seconds
    except ClipError:
        return 0
