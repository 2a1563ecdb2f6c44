"""What both sliding-window evaluations share: the logit resize and the per-pixel mean over overlapping windows.

The benchmark (evaluation/sliding_window.py, the authors' windows) and the zero-shot protocol
(evaluation/zeroshot.py, mmseg's slide inference) cut windows differently and average them the same way.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1) of one window


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
