"""What both sliding-window evaluations share: windows of several images batched into one forward, the logit
resize and the per-pixel mean over overlapping windows.

The benchmark (evaluation/sliding_window.py, the authors' windows) and the zero-shot protocol
(evaluation/zeroshot.py, mmseg's slide inference) cut windows differently and batch and average them the same way.
"""
from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1) of one window
Job = TypeVar("Job")


def batched(jobs: Iterable[tuple[Job, torch.Tensor]], forward: Callable[[torch.Tensor], torch.Tensor],
            batch_size: int) -> Iterator[tuple[Job, torch.Tensor]]:
    """(job, forward's outputs for its inputs) for each (job, N x ... inputs) of `jobs`, in order.

    The inputs of consecutive jobs (an image's windows) go through `forward` together, `batch_size` at a time,
    the last call taking what is left, so a device sees full batches whatever the number of windows per image;
    a job comes out as soon as its last output is in. `forward` must map n inputs to n outputs, each independent
    of the others in the batch.
    """
    waiting: deque[tuple[Job, int]] = deque()  # the jobs not handed out, and their number of inputs
    inputs: list[torch.Tensor] = []  # not forwarded yet
    outputs: list[torch.Tensor] = []  # not handed out yet
    queued = ready = 0
    end = object()
    for job, x in itertools.chain(jobs, [(end, None)]):
        if job is not end:
            waiting.append((job, len(x)))
            inputs.append(x)
            queued += len(x)
        while queued >= batch_size or (job is end and queued):
            batch = torch.cat(inputs) if len(inputs) > 1 else inputs[0]
            n = min(batch_size, queued)
            out = forward(batch[:n])
            if len(out) != n:
                raise ValueError(f"forward returned {len(out)} outputs for {n} inputs")
            outputs.append(out)
            inputs = [batch[n:]] if queued > n else []
            queued, ready = queued - n, ready + n
        while waiting and waiting[0][1] <= ready:
            done, count = waiting.popleft()
            out = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
            ready -= count
            outputs = [out[count:]] if ready else []
            yield done, out[:count]


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of B x K x h x w logits, as the reference does before the loss and in evaluation."""
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class WindowMean:
    """K x H x W per-pixel mean of window scores, fed in batches of (boxes, B x K x h x w scores) with each
    window's scores already at its box's size; the sums live on the first batch's device."""

    def __init__(self, num_classes: int, height: int, width: int):
        self.shape = (num_classes, height, width)
        self.sums = self.counts = None

    def add(self, boxes: Iterable[Box], scores: torch.Tensor) -> None:
        if self.sums is None:
            self.sums = scores.new_zeros(self.shape)
            self.counts = scores.new_zeros((1, *self.shape[1:]))
        for (y0, y1, x0, x1), score in zip(boxes, scores):
            self.sums[:, y0:y1, x0:x1] += score
            self.counts[:, y0:y1, x0:x1] += 1

    def mean(self) -> torch.Tensor:
        return self.sums / self.counts
