"""Raster painting: each class's look, the photo and cartoon styles, and the canvas scenes are
painted on, layer by layer with vectorised numpy masks.

A class looks the same in every dataset (its colours and texture depend only on its name), so
a model trained on one miniature transfers to another; some classes share colours and differ
only in texture or shape. Every image gets its own illumination, colour cast and pixel noise.
The cartoon style (flat, saturated) makes gta5 -> cityscapes a real domain shift.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Look:
    colors: tuple[tuple[int, int, int], ...]  # one is drawn per instance
    accent: tuple[int, int, int]  # second texture colour, and the colour of object details
    texture: str  # flat | stripes | checker | dots | grid | noise | blobs | gradient
    freq: float = 0.1  # cycles per pixel
    angle: float = 0.0  # degrees


_MASONRY = ((190, 175, 150), (170, 170, 180), (200, 190, 170))
LOOKS = {
    "sky": Look(((120, 165, 220), (150, 185, 230), (185, 200, 215)), (235, 240, 250), "gradient",
                angle=90),
    "ceiling": Look(((215, 210, 200),), (185, 180, 170), "noise", 0.04),
    # wall and building share colours; only the window grid tells them apart
    "wall": Look(_MASONRY, (150, 140, 120), "noise", 0.05),
    "building": Look(_MASONRY, (70, 75, 90), "grid", 0.12),
    "floor": Look(((150, 110, 75), (170, 130, 90)), (110, 75, 50), "stripes", 0.15, 0),
    "table": Look(((150, 110, 75),), (110, 75, 50), "stripes", 0.1, 0),
    "chair": Look(((130, 90, 55), (110, 75, 45)), (80, 55, 35), "stripes", 0.2, 90),
    "road": Look(((105, 105, 110), (120, 115, 115)), (80, 80, 85), "noise", 0.3),
    "sidewalk": Look(((105, 105, 110), (120, 115, 115)), (170, 165, 160), "checker", 0.12),
    "grass": Look(((70, 130, 50), (90, 140, 55)), (120, 170, 70), "stripes", 0.35, 90),
    "tree": Look(((70, 130, 50), (60, 110, 45)), (30, 70, 30), "blobs", 0.12),
    "water": Look(((60, 100, 150), (70, 120, 160)), (140, 180, 210), "stripes", 0.2, 0),
    "person": Look(((200, 70, 60), (60, 80, 160), (80, 80, 80), (220, 180, 60)), (230, 190, 160),
                   "stripes", 0.15, 0),
    "car": Look(((180, 30, 40), (30, 60, 160), (200, 200, 205), (40, 40, 45)), (25, 25, 30),
                "stripes", 0.05, 90),
    "bus": Look(((180, 30, 40), (200, 200, 205)), (40, 50, 70), "grid", 0.15),
    "truck": Look(((200, 200, 205), (60, 90, 60)), (40, 40, 40), "stripes", 0.1, 90),
    "bicycle": Look(((40, 40, 40), (160, 30, 30)), (150, 150, 160), "flat"),
    "boat": Look(((230, 230, 230), (200, 60, 40)), (40, 60, 120), "stripes", 0.12, 0),
    "cat": Look(((200, 150, 90), (120, 110, 100), (60, 55, 50)), (70, 50, 35), "stripes", 0.25, 80),
    "bird": Look(((90, 70, 50), (60, 60, 70)), (200, 190, 170), "dots", 0.2),
    "aeroplane": Look(((200, 200, 210), (230, 230, 235)), (120, 120, 140), "gradient", angle=0),
    "pole": Look(((140, 140, 140), (110, 110, 115)), (90, 90, 90), "flat"),
    "traffic sign": Look(((220, 200, 30), (40, 80, 170), (210, 210, 210)), (200, 40, 40), "flat"),
    "traffic light": Look(((35, 35, 35),), (240, 170, 30), "dots", 0.3),
    "fence": Look(((170, 150, 140),), (100, 90, 80), "stripes", 0.25, 90),
    "ego vehicle": Look(((40, 40, 45),), (70, 70, 80), "gradient", angle=90),
    "static": Look(((120, 100, 80),), (90, 70, 50), "checker", 0.2),
}
ALIASES = {"vegetation": "tree", "terrain": "grass"}
TEXTURES = ("flat", "stripes", "checker", "dots", "grid", "noise", "blobs", "gradient")


@dataclass(frozen=True)
class Style:
    texture_amp: float = 1.0
    freq_scale: float = 1.0
    saturation: float = 1.0
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    blur: bool = True
    noise: float = 6.0
    illumination: float = 0.25


PHOTO = Style()
CARTOON = Style(texture_amp=0.3, freq_scale=2.2, saturation=1.9, cast=(1.1, 1.0, 0.8),
                blur=False, noise=1.5, illumination=0.08)


class Grid:
    """Pixel coordinates (of a canvas or a window of it) and bool masks of shapes on them."""

    def __init__(self, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator):
        self.xx, self.yy, self.rng = xx, yy, rng

    def ellipse(self, cx, cy, rx, ry, angle=0.0):
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        dx, dy = self.xx - cx, self.yy - cy
        u, v = (dx * c + dy * s) / max(rx, 0.5), (dy * c - dx * s) / max(ry, 0.5)
        return u * u + v * v <= 1

    def rect(self, x0, y0, x1, y1):
        return (self.xx >= x0) & (self.xx < x1) & (self.yy >= y0) & (self.yy < y1)

    def poly(self, points):
        """Convex polygon, either orientation."""
        sides = []
        for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]):
            sides.append((x1 - x0) * (self.yy - y0) - (y1 - y0) * (self.xx - x0))
        sides = np.stack(sides)
        return (sides >= 0).all(0) | (sides <= 0).all(0)

    def bar(self, x0, y0, x1, y1, width):
        """Thick line segment."""
        dx, dy = x1 - x0, y1 - y0
        along = ((self.xx - x0) * dx + (self.yy - y0) * dy) / max(dx * dx + dy * dy, 1e-6)
        t = np.clip(along, 0, 1)
        ex, ey = self.xx - (x0 + t * dx), self.yy - (y0 + t * dy)
        return ex * ex + ey * ey <= max(width / 2, 0.7) ** 2

    def ring(self, cx, cy, r, width):
        d = np.hypot(self.xx - cx, self.yy - cy)
        return (d <= r) & (d >= r - max(width, 1.0))

    def below(self, y0, amp=0.0, period=100.0):
        """Pixels below a wavy horizontal line around y0."""
        phase = self.rng.uniform(0, 2 * math.pi)
        return self.yy >= y0 + amp * np.sin(self.xx * (2 * math.pi / period) + phase)


class Canvas(Grid):
    """Image, raw label and per-pixel owning layer, painted front to back."""

    def __init__(self, h: int, w: int, rng: np.random.Generator, label_of: Callable[[str], int],
                 label_dtype=np.uint8):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        super().__init__(xx, yy, rng)
        self.h, self.w, self.label_of = h, w, label_of
        self.image = np.zeros((h, w, 3), np.float32)
        self.label = np.zeros((h, w), label_dtype)
        self.owner = np.full((h, w), -1, np.int16)
        self.layers: list[str] = []  # label name of each layer
        self.looks: list[str | None] = []  # class each layer is painted as; None for clutter

    # -- painting
    def texture(self, kind: str, freq: float, angle: float,
                window: tuple[slice, slice]) -> np.ndarray:
        """A texture field in [0, 1] over a window of the canvas."""
        rng, xx, yy = self.rng, self.xx[window], self.yy[window]
        a = math.radians(angle + rng.uniform(-15, 15))
        phase = rng.uniform(0, 1, 2).astype(np.float32) / max(freq, 1e-3)
        x, y = xx + phase[0], yy + phase[1]
        if kind == "flat":
            return np.zeros_like(xx)
        if kind == "stripes":
            return 0.5 + 0.5 * np.sin((x * math.cos(a) + y * math.sin(a)) * (2 * math.pi * freq))
        if kind == "checker":
            return ((np.floor(x * freq) + np.floor(y * freq)) % 2).astype(np.float32)
        if kind == "dots":
            u, v = (x * freq) % 1 - 0.5, (y * freq) % 1 - 0.5
            return (u * u + v * v < 0.09).astype(np.float32)
        if kind == "grid":
            return (((x * freq) % 1 > 0.35) & ((y * freq) % 1 > 0.4)).astype(np.float32)
        if kind == "noise":
            return self._value_noise(freq, xx.shape)
        if kind == "blobs":
            return (self._value_noise(freq, xx.shape) > 0.5).astype(np.float32)
        if kind == "gradient":
            ramp = xx * math.cos(a) + yy * math.sin(a)
            return (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        raise ValueError(f"unknown texture {kind!r}")

    def _value_noise(self, freq: float, shape: tuple[int, int]) -> np.ndarray:
        """Bilinearly interpolated random lattice with spacing 1/freq pixels."""
        h, w = shape
        grid = self.rng.random((int(h * freq) + 2, int(w * freq) + 2), dtype=np.float32)
        return _upsample(_upsample(grid, h, freq).T, w, freq).T

    def paint(self, mask: np.ndarray, look: str | Look, label: str | None = None,
              detail: np.ndarray | None = None, style: Style = PHOTO) -> None:
        """Paint `mask` with a look (a class name or a Look), labelled `label` (default: look).

        `detail` (e.g. wheels, heads) is painted in the accent colour with the same label.
        Textures are computed only over the mask's bounding box.
        """
        self.looks.append(look if isinstance(look, str) else None)
        if isinstance(look, str):
            label = label or look
            look = LOOKS[ALIASES.get(look, look)]
        layer = len(self.layers)
        self.layers.append(label)
        if detail is not None:
            mask = mask | detail
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if not rows.size:
            return
        window = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        rng = self.rng
        base = np.array(look.colors[rng.integers(len(look.colors))], np.float32)
        base = base * rng.uniform(0.88, 1.12, 3).astype(np.float32)
        accent = np.array(look.accent, np.float32)
        field = self.texture(look.texture, look.freq * style.freq_scale, look.angle, window)
        colour = base + (accent - base) * (field[..., None] * np.float32(style.texture_amp))
        if detail is not None:
            colour = np.where(detail[window][..., None], accent, colour)
        m = mask[window]
        self.image[window] = np.where(m[..., None], colour, self.image[window])
        self.label[window] = np.where(m, self.label_of(label), self.label[window])
        self.owner[window] = np.where(m, layer, self.owner[window])

    def clutter(self, mask: np.ndarray, label: str, style: Style) -> None:
        """Unrelated stuff (random colours and texture), labelled `label`."""
        rng = self.rng
        colour, accent = (tuple(rng.integers(30, 226, 3).tolist()) for _ in range(2))
        look = Look((colour,), accent, TEXTURES[rng.integers(len(TEXTURES))],
                    float(rng.uniform(0.05, 0.3)), float(rng.uniform(0, 180)))
        self.paint(mask, look, label, style=style)

    def visible(self, layer: int) -> np.ndarray:
        return self.owner == layer

    def finish(self, style: Style) -> np.ndarray:
        """Style, per-image illumination and colour cast, blur and noise -> uint8 RGB."""
        rng, img = self.rng, self.image
        grey = (img[..., 0] + img[..., 1] + img[..., 2])[..., None] / 3
        img = grey + (img - grey) * style.saturation
        gain = 1 + style.illumination * rng.uniform(-1, 1)
        cast = np.array(style.cast, np.float32) * rng.uniform(0.94, 1.06, 3).astype(np.float32)
        a = rng.uniform(0, 2 * math.pi)
        ramp = (self.xx / self.w - 0.5) * math.cos(a) + (self.yy / self.h - 0.5) * math.sin(a)
        img = img * (gain * cast) * (1 + style.illumination * ramp)[..., None]
        if style.blur:
            p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
            img = (p[:-2] + 2 * p[1:-1] + p[2:]) / 4
            img = (img[:, :-2] + 2 * img[:, 1:-1] + img[:, 2:]) / 4
        # uniform noise with standard deviation style.noise (cheaper than Gaussian)
        img += (rng.random(img.shape, dtype=np.float32) - 0.5) * np.float32(style.noise * 12 ** 0.5)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _upsample(a: np.ndarray, n: int, freq: float) -> np.ndarray:
    """Rows of `a` linearly interpolated at positions i * freq, i < n.

    Elementwise rather than a matrix product: BLAS threads make tiny products slow.
    """
    pos = np.arange(n, dtype=np.float32) * freq
    i, f = pos.astype(np.int64), (pos % 1)[:, None]
    return a[i] * (1 - f) + a[i + 1] * f


def dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation."""
    p = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= p[dy:dy + h, dx:dx + w]
    return out

