"""The reference training augmentation (notes section 5), driven by one torch.Generator."""
from __future__ import annotations

import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=g).item()


def _coin(g: torch.Generator, p: float = 0.5) -> bool:
    return torch.rand((), generator=g).item() < p


def _randint(g: torch.Generator, high: int) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (), generator=g))


class TrainAugment:
    """Colour jitter, hflip, ScaleJitter, pad, crop with at least one labelled pixel.

    image uint8 3xHxW, label uint8 HxW -> image uint8 3 x crop x crop, label int64 crop x crop.
    """

    def __init__(self, crop: int, scale_range: tuple[float, float] = (0.5, 2.0),
                 ignore_index: int = 255, max_crop_tries: int = 10):
        if crop < 1 or max_crop_tries < 1:
            raise ValueError(f"crop ({crop}) and max_crop_tries ({max_crop_tries}) must be >= 1")
        self.crop, self.scale_range = crop, scale_range
        self.ignore_index, self.max_crop_tries = ignore_index, max_crop_tries

    def __call__(self, image: torch.Tensor, label: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        g = generator
        image = colour_jitter(image, g)
        if _coin(g):
            image, label = image.flip(-1), label.flip(-1)
        image, label = self.scale_jitter(image, label, g)
        image, label = self.pad(image, label)
        return self.random_crop(image, label, g)

    def scale_jitter(self, image, label, g):
        """torchvision ScaleJitter: scale 1 fits the whole image inside the crop."""
        h, w = image.shape[-2:]
        r = min(self.crop / h, self.crop / w) * _uniform(g, *self.scale_range)
        size = [max(1, int(h * r)), max(1, int(w * r))]
        image = F.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        label = F.resize(label[None], size, interpolation=InterpolationMode.NEAREST)[0]
        return image, label

    def pad(self, image, label):
        """Pad bottom/right up to the crop size: image with 0, label with ignore."""
        h, w = image.shape[-2:]
        pad = (0, max(self.crop - w, 0), 0, max(self.crop - h, 0))
        return nnf.pad(image, pad, value=0), nnf.pad(label, pad, value=self.ignore_index)

    def random_crop(self, image, label, g):
        """RandomCrop, redrawn until the crop holds a labelled pixel, at most max_crop_tries times.

        The authors redraw without a limit (and drop single-valued label maps beforehand); with the cap, the last
        draw is returned even if every pixel is ignore. Such a crop gives the linear loss 0 with zero gradients, and
        Mask2Former only its no-object class term (tests/test_training.py).
        """
        h, w = label.shape
        for _ in range(self.max_crop_tries):
            i, j = _randint(g, h - self.crop + 1), _randint(g, w - self.crop + 1)
            crop_label = label[i:i + self.crop, j:j + self.crop]
            if (crop_label != self.ignore_index).any():
                break
        return image[:, i:i + self.crop, j:j + self.crop], crop_label.long()


def colour_jitter(image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """mmseg PhotoMetricDistortion semantics with torchvision ops, on uint8."""
    if _coin(g):
        image = F.adjust_brightness(image, _uniform(g, 1 - 32 / 255, 1 + 32 / 255))

    def contrast(img):
        return F.adjust_contrast(img, _uniform(g, 0.5, 1.5)) if _coin(g) else img

    def saturation_hue(img):
        if _coin(g):
            img = F.adjust_saturation(img, _uniform(g, 0.5, 1.5))
        if _coin(g):
            img = F.adjust_hue(img, _uniform(g, -18 / 360, 18 / 360))
        return img

    steps = (contrast, saturation_hue) if _coin(g) else (saturation_hue, contrast)
    for step in steps:
        image = step(image)
    return image
