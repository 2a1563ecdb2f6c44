"""Image views for the text alignment: open_clip's RandomResizedCrop, or one fixed view for the feature cache."""
from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from pipeline.datasets.augment import _randint, _uniform

RATIO = (3 / 4, 4 / 3)


def random_resized_crop_box(height: int, width: int, scale: tuple[float, float], g: torch.Generator,
                            ratio: tuple[float, float] = RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) drawn as torchvision's RandomResizedCrop.get_params, from generator `g`."""
    area, log_ratio = height * width, (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(g, *scale)
        aspect = math.exp(_uniform(g, *log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return _randint(g, height - h + 1), _randint(g, width - w + 1), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(image: torch.Tensor, size: int, scale: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """uint8 3xHxW -> uint8 3 x size x size, bicubic (open_clip's training transform before normalisation)."""
    top, left, h, w = random_resized_crop_box(*image.shape[-2:], scale, g)
    return F.resized_crop(image, top, left, h, w, [size, size], interpolation=InterpolationMode.BICUBIC,
                          antialias=True)


def full_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """The whole (square, center-cropped) image resized to size x size: the cached view."""
    return F.resize(image, [size, size], interpolation=InterpolationMode.BICUBIC, antialias=True)
