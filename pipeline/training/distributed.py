"""One process or many: what a training loop needs to know about torchrun's processes.

A stage started by `torchrun` (the `LAUNCH` environment variable in dvc.yaml's commands) finds
RANK / WORLD_SIZE / LOCAL_RANK in its environment and joins the process group (NCCL on CUDA, gloo
on CPU); started by plain `python` it is process 0 of 1 and nothing here communicates.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from pipeline.training.gpu_lease import single_process_device


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes metrics, dvclive logs and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self) -> torch.device:
        if self.distributed and torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return single_process_device()

    def means(self, values: torch.Tensor) -> list[float]:
        """The means over processes of a 1-D tensor of per-process numbers (float64, on the training device): one
        all-reduce and one read to the host."""
        if not self.distributed:
            return values.tolist()
        values = values.clone()
        dist.all_reduce(values)
        return [value / self.world_size for value in values.tolist()]

    def gather_objects(self, obj) -> list:
        """Every process's `obj` (picklable), in rank order."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def rows(self, x: torch.Tensor, grad: bool) -> tuple[torch.Tensor, int]:
        """All processes' rows of `x` concatenated in rank order, and where this process's rows start.

        Row counts may differ between processes (they are padded for the collective and stripped).
        With `grad`, the gather is differentiable: a process's rows receive the sum of the gradients
        that every process's loss puts on them.
        """
        if not self.distributed:
            return x, 0
        counts = torch.zeros(self.world_size, dtype=torch.long, device=x.device)
        counts[self.rank] = len(x)
        dist.all_reduce(counts)
        counts = counts.tolist()
        padded = torch.cat([x, x.new_zeros(max(counts) - len(x), *x.shape[1:])])
        if grad:
            parts = dist_fn.all_gather(padded)
        else:
            parts = [torch.empty_like(padded) for _ in range(self.world_size)]
            dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, counts)]), sum(counts[:self.rank])

    def average_gradients(self, module: nn.Module) -> None:
        """Mean of the gradients over processes, in one coalesced all-reduce (what DDP does in buckets)."""
        if not self.distributed:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def init_processes() -> Processes:
    """Join torchrun's process group when launched by it; otherwise one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Processes()
    procs = Processes(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(procs.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return procs


def close_processes(procs: Processes) -> None:
    """No barrier: the other processes leave while the main one evaluates and writes."""
    if procs.distributed and dist.is_initialized():
        dist.destroy_process_group()
