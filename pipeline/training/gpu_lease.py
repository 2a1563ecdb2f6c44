"""One GPU per experiment when DVC's queue runs several on one machine.

`dvc queue start -j N` does not assign GPUs: every worker sees all of them. With
PIPELINE_GPU_LEASE=<folder> in the environment, a process instead takes the first GPU whose lock file
in <folder> no other process holds (waiting while all are taken) and keeps it until it exits.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO

import torch

GPU_LEASE_ENV = "PIPELINE_GPU_LEASE"
_held: list[IO] = []


def lease(count: int, lock_dir: str | os.PathLike, poll_s: float = 5.0) -> int:
    """The index of a device among `count` that this process now holds alone (an flock, released at exit)."""
    if _held:
        return int(Path(_held[0].name).stem.removeprefix("gpu"))
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    while True:
        for index in range(count):
            handle = open(Path(lock_dir) / f"gpu{index}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _held.append(handle)
            return index
        time.sleep(poll_s)


def single_process_device() -> torch.device:
    """CUDA (a leased GPU when PIPELINE_GPU_LEASE is set) when there is one, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    lock_dir = os.environ.get(GPU_LEASE_ENV)
    if not lock_dir:
        return torch.device("cuda")
    index = lease(torch.cuda.device_count(), lock_dir)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
