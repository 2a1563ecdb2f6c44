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
            img = adjust_hue(img, _uniform(g, -18 / 360, 18 / 360))
        return img

    steps = (contrast, saturation_hue) if _coin(g) else (saturation_hue, contrast)
    for step in steps:
        image = step(image)
    return image


def _sectors(*sets: set[int]) -> torch.Tensor:
    """3 x 1 uint8 bit sets of hue sectors, one per output channel (R, G, B)."""
    return torch.tensor([sum(1 << sector for sector in s) for s in sets], dtype=torch.uint8)[:, None]


# The hue sectors (0-5, and 6: sector 0 reached by rounding) in which R, G and B take a pixel's largest, smallest
# and middle value: torchvision's `_hsv_to_rgb` table.
_LARGEST = _sectors({0, 5, 6}, {1, 2}, {3, 4})
_SMALLEST = _sectors({2, 3}, {4, 5}, {0, 1, 6})
_MIDDLE = _sectors({1, 4}, {0, 3, 6}, {2, 5})
_TINY = 1e-30  # a divisor for grey pixels, whose numerators are 0 (torchvision divides them by 1)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] as torchvision's `to_dtype` computes it."""
    return x.float().mul_(1 / 255)


def adjust_hue(image: torch.Tensor, hue_factor: float) -> torch.Tensor:
    """torchvision's `adjust_hue` of a uint8 3 x H x W image, bit for bit, about 5x faster on a CPU.

    torchvision's float32 RGB -> HSV -> RGB round trip gives every pixel its largest and smallest channel value
    back exactly (checked for every largest, smallest pair), so only the middle value needs it. That value and the
    new hue's sector come from torchvision's float32 operations in its order; the sector says which channel takes
    which value. No boolean masks, index gathers or channel reductions, which cost torchvision most of its time on
    a CPU.
    tests/test_augment.py compares the two on every kind of pixel (and, marked slow, on all 2^24 colours).
    """
    x = image.contiguous().reshape(3, -1)  # decoded images are channels-last, and strided planes are slow
    r, g, b = x
    hi = torch.maximum(torch.maximum(r, g), b)
    lo = torch.minimum(torch.minimum(r, g), b)
    middle = r + g + b - hi - lo  # wraps around in uint8, and lands in range
    r_hi, g_hi, _ = (hi - x).clamp_(max=1) ^ 1  # 1 where the channel holds the largest value
    r_lo, g_lo, b_lo = (x - lo).clamp_(max=1) ^ 1
    case = (r_hi ^ 1) * ((g_hi ^ 1) + 1)  # torchvision's hue formula: 0 (R largest), 1 (G, not R), 2 (B)
    plus = r_hi * g_lo + (r_hi ^ 1) * (g_hi * b_lo + (g_hi ^ 1) * r_lo)  # the channel after the largest is smallest
    v = _unit(hi)
    span = _unit(lo).neg_().add_(v)
    s = span / v.clamp(min=_TINY)
    # torchvision's hr, hg or hb: (c + 2 * case) - 1 with c = (v - middle) / span, or (2 * case + 1) - c
    h = _unit(middle).neg_().add_(v).div_(span.clamp_(min=_TINY))
    plus_f = plus.float()
    h = h.mul_(plus_f * 2 - 1).add_((case * 2 + 1 - plus).float()).sub_(plus_f)
    h = h.mul_(1 / 6).add_(1).frac_().add_(hue_factor)  # fmod(., 1) of a value in [5/6, 11/6), then the shift
    h6 = h.sub_(h.floor()).mul_(6)  # remainder(., 1) of a value in [-1/2, 3/2)
    sector_f = h6.floor()
    sf = h6.sub_(sector_f).mul_(s)
    sector = sector_f.to(torch.uint8)
    odd = (sector & 1).float()
    q = sf.neg().add_(1).mul_(v).clamp_(0, 1).mul_(odd)  # the middle value of odd sectors
    t = sf.add_(s.neg_().add_(1)).mul_(v).clamp_(0, 1).mul_(odd.neg_().add_(1))  # of even ones
    mid = q.add_(t).mul_(255 + 1.0 - 1e-3).to(torch.uint8)  # torchvision's float -> uint8
    out = (_LARGEST >> sector & 1) * hi + (_SMALLEST >> sector & 1) * lo + (_MIDDLE >> sector & 1) * mid
    return out.reshape(image.shape)
