"""Sliding-window inference exactly as the reference evaluates (reference §5).

The image is resized so its shorter side equals the crop, cut into square
windows along the longer side only, the per-window outputs are upsampled to the
crop, averaged where windows overlap and resized back to the original size.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2.functional import resize

from pipeline.evaluation.windows import WindowMean, upsample_logits


def window_starts(length: int, crop: int) -> list[int]:
    """Start offsets of ceil(length / crop) windows with the leftover overlap spread evenly.

    start_j = int(j * (crop - overlap / (n - 1))), overlap = n * crop - length. Computed
    with exact fractions: in floats the last start can truncate one pixel short
    (e.g. length 4107, crop 518), leaving the last row/column uncovered.
    """
    n = math.ceil(length / crop)
    if n <= 1:
        return [0]
    stride = crop - Fraction(n * crop - length, n - 1)
    return [math.floor(j * stride) for j in range(n)]


def resize_short_side(image: torch.Tensor, crop: int) -> torch.Tensor:
    """Resize a 3 x H x W image (bilinear, antialiased) so its shorter side equals `crop`."""
    height, width = image.shape[-2:]
    scale = max(crop / height, crop / width)
    size = [round(height * scale), round(width * scale)]
    return resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)


@torch.no_grad()
def sliding_window_logits(
    model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, crop: int, num_classes: int
) -> torch.Tensor:
    """K x H x W float32 scores for a uint8 3 x H x W image.

    `model` maps B x 3 x crop x crop floats in [0, 1] to B x K x h x w logits (or
    Mask2Former class scores); all windows go through one forward.
    """
    height, width = image.shape[-2:]
    resized = resize_short_side(image, crop)
    along_height = resized.shape[-2] > resized.shape[-1]
    starts = window_starts(max(resized.shape[-2:]), crop)
    full_height, full_width = resized.shape[-2:]
    boxes = [(s, s + crop, 0, full_width) if along_height else (0, full_height, s, s + crop) for s in starts]
    batch = torch.stack([resized[:, y0:y1, x0:x1] for y0, y1, x0, x1 in boxes])

    outputs = model(batch.float() / 255)
    if outputs.shape[:2] != (len(boxes), num_classes):
        raise ValueError(
            f"model returned shape {tuple(outputs.shape)} for {len(boxes)} windows; "
            f"expected {len(boxes)} x {num_classes} x h x w"
        )
    average = WindowMean(num_classes, full_height, full_width)
    average.add(boxes, upsample_logits(outputs.float(), (crop, crop)))
    return upsample_logits(average.mean()[None], (height, width))[0]


def predict(
    model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, crop: int, num_classes: int
) -> torch.Tensor:
    """H x W int64 class map: argmax of the sliding-window scores."""
    return sliding_window_logits(model, image, crop, num_classes).argmax(0)
