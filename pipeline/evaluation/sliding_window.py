"""Sliding-window inference exactly as the reference evaluates (reference §5).

The image is resized so its shorter side equals the crop, cut into square
windows along the longer side only, the per-window outputs are upsampled to the
crop, averaged where windows overlap and resized back to the original size.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2.functional import resize

from pipeline.evaluation.windows import Box, Job, WindowMean, batched, upsample_logits


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


def window_crops(image: torch.Tensor, crop: int) -> tuple[torch.Tensor, list[Box], tuple[int, int]]:
    """The windows of a uint8 3 x H x W image (n x 3 x crop x crop), their boxes, and the resized image's size."""
    resized = resize_short_side(image, crop)
    along_height = resized.shape[-2] > resized.shape[-1]
    starts = window_starts(max(resized.shape[-2:]), crop)
    full_height, full_width = resized.shape[-2:]
    boxes = [(s, s + crop, 0, full_width) if along_height else (0, full_height, s, s + crop) for s in starts]
    return torch.stack([resized[:, y0:y1, x0:x1] for y0, y1, x0, x1 in boxes]), boxes, (full_height, full_width)


def merge_windows(outputs: torch.Tensor, boxes: list[Box], resized: tuple[int, int], size: tuple[int, int],
                  crop: int, num_classes: int) -> torch.Tensor:
    """K x H x W float32 scores of an image of `size` from the model's outputs for its `window_crops`."""
    if outputs.shape[:2] != (len(boxes), num_classes):
        raise ValueError(
            f"model returned shape {tuple(outputs.shape)} for {len(boxes)} windows; "
            f"expected {len(boxes)} x {num_classes} x h x w"
        )
    average = WindowMean(num_classes, *resized)
    average.add(boxes, upsample_logits(outputs.float(), (crop, crop)))
    return upsample_logits(average.mean()[None], size)[0]


@torch.no_grad()
def sliding_window_logits(
    model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, crop: int, num_classes: int
) -> torch.Tensor:
    """K x H x W float32 scores for a uint8 3 x H x W image.

    `model` maps B x 3 x crop x crop floats in [0, 1] to B x K x h x w logits (or
    Mask2Former class scores); all windows go through one forward.
    """
    crops, boxes, resized = window_crops(image, crop)
    return merge_windows(model(crops.float() / 255), boxes, resized, image.shape[-2:], crop, num_classes)


def predict(
    model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, crop: int, num_classes: int
) -> torch.Tensor:
    """H x W int64 class map: argmax of the sliding-window scores."""
    return sliding_window_logits(model, image, crop, num_classes).argmax(0)


@torch.no_grad()
def predictions(model: Callable[[torch.Tensor], torch.Tensor], images: Iterable[tuple[Job, torch.Tensor]],
                crop: int, num_classes: int, batch_size: int) -> Iterator[tuple[Job, torch.Tensor]]:
    """(job, `predict`'s class map) for each (job, image) of `images`, in order, the windows of consecutive images
    going through `model` `batch_size` at a time (`windows.batched`)."""
    jobs = (((job, image.shape[-2:], boxes, resized), crops)
            for job, image in images for crops, boxes, resized in [window_crops(image, crop)])
    for (job, size, boxes, resized), outputs in batched(jobs, lambda x: model(x.float() / 255), batch_size):
        yield job, merge_windows(outputs, boxes, resized, size, crop, num_classes).argmax(0)
