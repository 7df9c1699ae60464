"""Running avemo under torchrun: which process this is, and how work is shared between processes.

`torchrun --nproc_per_node N avemo extract ...` (and `--nnodes` across machines) starts N processes with
RANK and WORLD_SIZE set; each decodes every N-th clip and writes its own shards (a writer per rank, see
cache.store), fine-tuning runs under DistributedDataParallel, and every rank exports the features of its
share of the media shards. `torchrun ... avemo train ...` trains the heads (and the joint pass) under
DistributedDataParallel, each rank taking its part of every batch. Without torchrun everything below is a
no-op for a single process.
"""

from __future__ import annotations

import os
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def init_from_env() -> None:
    """Join the process group when started by torchrun (gloo on CPU, NCCL on GPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        # share the machine's cores between the ranks on it
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_cpus() -> int:
    """CPUs for this process's decoding workers."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world()))
    return max(1, (os.cpu_count() or 1) // local)


def my_share(items: list[T]) -> list[T]:
    """Every world()-th item, starting at rank(): a deterministic split, whatever the number of ranks."""
    return items[rank() :: world()]


def tag() -> str:
    """Prefix of a summary line: which rank says it (empty without torchrun)."""
    return f"[rank {rank()}/{world()}] " if world() > 1 else ""


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def device_for(device: str) -> str:
    """Each rank on its own GPU."""
    return f"cuda:{torch.cuda.current_device()}" if device == "cuda" and dist.is_initialized() else device
