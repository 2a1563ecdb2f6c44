"""A synthetic miniature of every dataset of both papers, in their official layouts.

ADE20K, PASCAL VOC, PASCAL Context (VOC2010 tar + Context .mat annotations), Cityscapes,
GTA V, COCO-Stuff (stuffthingmaps PNGs) and COCO-Object (instance annotations, RLE); the COCO
sets share one val2017. COCO Captions has its own images, painted like the segmentation sets'
scenes, each with 5 captions written from the classes visible in it.

Scenes are painted layer by layer (stuff regions, then objects, far to near) with vectorised
numpy masks. A class looks the same in every dataset: its colours, texture and shape depend
only on its name, so a model trained on one miniature transfers to another. Segmentation is
learnable but not trivial: some classes share colours and differ only in texture or shape,
objects occlude each other and vary in size, and every image gets its own illumination,
colour cast and pixel noise. The GTA-like set is rendered in a flat, saturated 'cartoon'
style so that gta5 -> cityscapes is a real domain shift.

Output is deterministic: a numpy Generator per image seeded from (seed, dataset, split,
index), and archives written with fixed timestamps in sorted order.
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import math
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.io
from PIL import Image
from pycocotools import mask as coco_mask

from pipeline.atomic import atomic_path
from pipeline.datasets.specs import (ADE20K_CLASSES, CITYSCAPES_LABEL_IDS, COCO_OBJECT_CLASSES,
                                     COCO_STUFF_CLASSES, COCO_STUFF_IDS, COCO_THING_IDS,
                                     PASCAL_CONTEXT_CLASSES, PASCAL_CONTEXT_IDS, VOC_CLASSES,
                                     cityscapes_palette, get_spec, voc_palette)

# ---------------------------------------------------------------------------- file writers

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _with_parents(names) -> list[str]:
    """Sorted names plus their parent folders ('a/b/' entries), as official archives have."""
    dirs = {name[: i + 1] for name in names for i, ch in enumerate(name) if ch == "/"}
    return sorted(dirs | set(names))


def write_zip(path: Path, files: dict[str, bytes]) -> None:
    """A reproducible zip (fixed timestamps, sorted entries, stored: images are compressed)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name in _with_parents(files):
            info = zipfile.ZipInfo(name, _ZIP_EPOCH)
            info.external_attr = (0o40755 << 16 | 0x10) if name.endswith("/") else 0o100644 << 16
            zf.writestr(info, files.get(name, b""), zipfile.ZIP_STORED)


def write_tar(path: Path, files: dict[str, bytes], compress: bool = False) -> None:
    """A reproducible tar (mtime 0, root owner, sorted entries); gzip-compressed if `compress`."""
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(open(path, "wb"))
        if compress:
            raw = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="wb", mtime=0))
        tf = stack.enter_context(tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT))
        for name in _with_parents(files):
            info = tarfile.TarInfo(name.rstrip("/"))
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(files[name]), 0o644
                tf.addfile(info, io.BytesIO(files[name]))


def encode_png(array: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """PNG of a uint8 HxW (L, or P with a uint8[N,3] palette), uint16 HxW or uint8 HxWx3 array."""
    image = Image.fromarray(array)
    if palette is not None:
        image.putpalette(palette.astype(np.uint8).ravel().tolist())  # L -> P, indices kept
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def encode_mat(arrays: dict[str, np.ndarray]) -> bytes:
    """A compressed MATLAB 5 file, as PASCAL Context's annotations are.

    The 116-byte text header scipy writes holds the creation time; a fixed one keeps output
    deterministic.
    """
    buf = io.BytesIO()
    scipy.io.savemat(buf, arrays, do_compression=True)
    header = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: pipeline miniature".ljust(116)
    return header + buf.getvalue()[116:]


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# ---------------------------------------------------------------------------- appearance

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
STUFF = ("sky", "wall", "floor", "road", "grass", "tree", "water", "building")


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


# ---------------------------------------------------------------------------- canvas

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


# ---------------------------------------------------------------------------- objects

class Frame:
    """Shapes in object coordinates: origin at the bottom centre, y up, 1 = object height."""

    def __init__(self, c: Grid, x: float, b: float, s: float):
        self.c, self.x, self.b, self.s, self.rng = c, x, b, s, c.rng

    def _p(self, u, v):
        return self.x + u * self.s, self.b - v * self.s

    def ellipse(self, u, v, ru, rv, angle=0.0):
        return self.c.ellipse(*self._p(u, v), ru * self.s, rv * self.s, angle)

    def rect(self, u0, v0, u1, v1):
        (x0, bottom), (x1, top) = self._p(u0, v0), self._p(u1, v1)
        return self.c.rect(x0, top, x1, bottom)

    def poly(self, points):
        return self.c.poly([self._p(u, v) for u, v in points])

    def bar(self, u0, v0, u1, v1, width):
        return self.c.bar(*self._p(u0, v0), *self._p(u1, v1), width * self.s)

    def ring(self, u, v, r, width):
        return self.c.ring(*self._p(u, v), r * self.s, width * self.s)


# Each builder returns (mask, detail mask or None); details get the accent colour.

def _person(f: Frame):
    legs = f.bar(-.06, .45, -.08, 0, .08) | f.bar(.06, .45, .08, 0, .08)
    arms = f.bar(-.14, .75, -.2, .42, .06) | f.bar(.14, .75, .2, .42, .06)
    return legs | arms | f.ellipse(0, .6, .14, .2), f.ellipse(0, .9, .08, .1)


def _car(f: Frame):
    cabin = f.poly([(-.7, .6), (-.45, 1), (.5, 1), (.8, .6)])
    wheels = f.ellipse(-.7, .18, .18, .18) | f.ellipse(.7, .18, .18, .18)
    return f.rect(-1.1, .15, 1.1, .62) | cabin, wheels | (cabin & f.rect(-1, .66, 1, .92))


def _bus(f: Frame):
    wheels = f.ellipse(-.9, .12, .12, .12) | f.ellipse(.9, .12, .12, .12)
    return f.rect(-1.3, .1, 1.3, 1), wheels


def _truck(f: Frame):
    wheels = f.ellipse(-.8, .13, .13, .13) | f.ellipse(.8, .13, .13, .13)
    return f.rect(.6, .1, 1.1, .7) | f.rect(-1.1, .15, .55, 1), wheels


def _bicycle(f: Frame):
    wheels = f.ring(-.38, .25, .25, .05) | f.ring(.38, .25, .25, .05)
    frame = f.bar(-.38, .25, 0, .25, .05) | f.bar(0, .25, .15, .65, .05)
    frame |= f.bar(-.38, .25, -.2, .6, .05) | f.bar(.15, .65, .38, .25, .05)
    return wheels | frame | f.bar(-.25, .62, .2, .7, .05), None


def _chair(f: Frame):
    legs = f.bar(-.25, .45, -.28, 0, .08) | f.bar(.25, .45, .28, 0, .08)
    return f.rect(-.3, .45, -.2, 1) | f.rect(-.3, .42, .3, .52) | legs, None


def _table(f: Frame):
    legs = f.bar(-.7, .85, -.7, 0, .1) | f.bar(.7, .85, .7, 0, .1)
    return f.rect(-.85, .85, .85, 1) | legs, None


def _boat(f: Frame):
    hull = f.poly([(-1, .35), (1, .35), (.7, 0), (-.7, 0)])
    sail = f.poly([(.05, 1), (.05, .4), (.6, .4)])
    return hull | f.bar(0, 1, 0, .35, .04), sail


def _cat(f: Frame):
    ears = f.poly([(.37, .8), (.45, 1), (.53, .85)]) | f.poly([(.58, .85), (.66, 1), (.74, .8)])
    legs = f.bar(-.35, .3, -.35, 0, .1) | f.bar(.3, .3, .3, 0, .1)
    body = f.ellipse(0, .4, .55, .25) | f.ellipse(.55, .7, .22, .2)
    return body | ears | legs | f.bar(-.5, .4, -.85, .8, .07), None


def _bird(f: Frame):
    wing = f.poly([(-.1, .45), (.15, .45), (-.3, 1)])
    beak = f.poly([(.4, .65), (.4, .55), (.55, .6)])
    return f.ellipse(0, .35, .35, .2, -20) | f.ellipse(.3, .6, .13, .13) | wing, beak


def _aeroplane(f: Frame):
    wings = f.poly([(-.1, .45), (.25, .45), (-.35, 0), (-.55, 0)])
    tail = f.poly([(-1.15, .45), (-.85, .45), (-1.15, 1)])
    return f.ellipse(0, .45, 1.2, .15) | wings | tail, None


def _pole(f: Frame):
    return f.bar(0, 0, 0, 1, .04), None


def _sign(f: Frame):
    kind = f.rng.integers(3)
    if kind == 0:
        return f.ellipse(0, .5, .5, .5), None
    if kind == 1:
        return f.poly([(-.5, 1), (.5, 1), (0, 0)]), None
    return f.rect(-.5, 0, .5, 1), None


def _light(f: Frame):
    return f.rect(-.2, 0, .2, 1), None


THINGS = {"person": _person, "car": _car, "bus": _bus, "truck": _truck, "bicycle": _bicycle,
          "chair": _chair, "table": _table, "boat": _boat, "cat": _cat, "bird": _bird,
          "aeroplane": _aeroplane, "pole": _pole, "traffic sign": _sign, "traffic light": _light}


def place(c: Canvas, name: str, x: float, b: float, s: float, style: Style) -> None:
    """Paint object `name` of height s standing at (x, b).

    Shapes are evaluated only in the window that can hold the object (|u| <= 1.3, 0 <= v <= 1).
    """
    rows = slice(max(int(b - 1.05 * s) - 2, 0), max(min(int(b + 0.05 * s) + 3, c.h), 0))
    cols = slice(max(int(x - 1.35 * s) - 2, 0), max(min(int(x + 1.35 * s) + 3, c.w), 0))
    mask, detail = np.zeros((c.h, c.w), bool), np.zeros((c.h, c.w), bool)
    window = Frame(Grid(c.xx[rows, cols], c.yy[rows, cols], c.rng), x, b, s)
    mask[rows, cols], part = THINGS[name](window)
    if part is not None:
        detail[rows, cols] = part
    c.paint(mask, name, detail=detail, style=style)


# ---------------------------------------------------------------------------- scenes

def _foliage(c: Canvas, cx: float, cy: float, size: float) -> np.ndarray:
    """A clump of 2-4 overlapping ellipses (tree crowns, bushes) around (cx, cy)."""
    rng, mask = c.rng, np.zeros((c.h, c.w), bool)
    for _ in range(rng.integers(2, 5)):
        r = rng.uniform(0.5, 1.0) * size
        mask |= c.ellipse(cx + rng.uniform(-.5, .5) * size, cy + rng.uniform(-.5, .3) * size,
                          r * 1.1, r)
    return mask


def _ade_scene(c: Canvas, style: Style) -> None:
    rng, h, w = c.rng, c.h, c.w
    everywhere = np.ones((h, w), bool)
    if rng.random() < 0.6:  # outdoor: sky, a band of buildings/trees/walls, a ground
        c.paint(everywhere, "sky", style=style)
        horizon, floor_y = h * rng.uniform(0.3, 0.5), h * rng.uniform(0.6, 0.8)
        seeds = rng.uniform(0, w, rng.integers(1, 4))
        slanted = c.xx[..., None] - seeds + 0.3 * (c.yy[..., None] - horizon)
        region = np.abs(slanted).argmin(-1)
        for k in range(len(seeds)):
            name = ("building", "tree", "wall", "building")[rng.integers(4)]
            top = horizon - rng.uniform(0, 0.3) * h
            below = c.below(top, rng.uniform(0, 0.08) * h, rng.uniform(20, 80))
            c.paint((region == k) & below, name, style=style)
        ground = ("road", "grass", "water")[rng.integers(3)]
        below = c.below(floor_y, rng.uniform(0, 0.04) * h, rng.uniform(40, 160))
        c.paint(below, ground, style=style)
        if rng.random() < 0.5:
            c.paint(_foliage(c, rng.uniform(0, w), horizon, 0.18 * h), "tree", style=style)
        things = ("person", "car", "bus", "bicycle", "person", "car")
        things += ("boat",) if ground == "water" else ()
    else:  # indoor: wall, maybe a ceiling, a floor
        c.paint(everywhere, "wall", style=style)
        if rng.random() < 0.5:
            c.paint(~c.below(h * rng.uniform(0.08, 0.2)), "ceiling", style=style)
        floor_y = h * rng.uniform(0.6, 0.75)
        c.paint(c.below(floor_y, rng.uniform(0, 0.02) * h), "floor", style=style)
        things = ("person", "chair", "table", "chair", "person")
    for _ in range(rng.integers(0, 3)):  # unlabelled regions: windows, paintings, clutter
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h * 0.8)
        box = c.rect(x0, y0, x0 + rng.uniform(.1, .35) * w, y0 + rng.uniform(.1, .3) * h)
        c.clutter(box, "other", style)
    objects = [(rng.uniform(floor_y, h * 1.05), rng.uniform(0, w), str(rng.choice(things)))
               for _ in range(rng.integers(1, 5))]
    for b, x, name in sorted(objects):  # far to near
        place(c, name, x, b, h * rng.uniform(0.15, 0.5), style)


def _voc_scene(c: Canvas, style: Style) -> list[int]:
    """Stuff regions and clutter labelled background, then 1-3 objects; returns their layers."""
    rng, h, w = c.rng, c.h, c.w
    seeds = np.stack([rng.uniform(0, w, 4), rng.uniform(0, h, 4)], 1)[: rng.integers(2, 5)]
    dist = (c.xx[..., None] - seeds[:, 0]) ** 2 + (c.yy[..., None] - seeds[:, 1]) ** 2
    region = dist.argmin(-1)
    for k in range(len(seeds)):
        c.paint(region == k, STUFF[rng.integers(len(STUFF))], "background", style=style)
    for _ in range(rng.integers(0, 3)):
        radii = rng.uniform(.05, .2, 2) * (w, h)
        blob = c.ellipse(rng.uniform(0, w), rng.uniform(0, h), *radii, rng.uniform(0, 180))
        c.clutter(blob, "background", style)
    names = ("person", "car", "bus", "bicycle", "boat", "chair", "cat", "bird", "aeroplane")
    layers = []
    for i in range(rng.integers(1, 4)):
        s = min(h, w) * rng.uniform(0.35, 0.8) * (0.75 ** i)
        name = names[rng.integers(len(names))]
        half = s * (1.1 if name in ("car", "bus", "aeroplane") else 0.6)
        x = rng.uniform(min(half, w / 2), max(w - half, w / 2))
        layers.append(len(c.layers))
        place(c, name, x, rng.uniform(min(s, h * 0.9), h), s, style)
    return layers


def _city_scene(c: Canvas, style: Style, out_of_roi: bool) -> None:
    """Street scene: sky, buildings, vegetation, road, sidewalks, objects in perspective."""
    rng, h, w = c.rng, c.h, c.w
    c.paint(np.ones((h, w), bool), "sky", style=style)
    yh, vx = h * rng.uniform(0.36, 0.48), w * rng.uniform(0.4, 0.6)  # horizon, vanishing point
    x = 0.0
    while x < w:
        bw = w * rng.uniform(0.08, 0.25)
        name = "wall" if rng.random() < 0.15 else "building"
        block = c.rect(x, yh - h * rng.uniform(0.05, 0.35), x + bw, yh + 0.05 * h)
        c.paint(block, name, style=style)
        x += bw
    if rng.random() < 0.3:
        x0 = rng.uniform(0, w * 0.7)
        fence = c.rect(x0, yh - 0.06 * h, x0 + w * rng.uniform(0.1, 0.3), yh + 0.02 * h)
        c.paint(fence, "fence", style=style)
    for _ in range(rng.integers(1, 4)):
        crown = _foliage(c, rng.uniform(0, w), yh - 0.1 * h, 0.13 * h)
        c.paint(crown, "vegetation", style=style)
    # ground: road inside a perspective wedge, sidewalks beside it, terrain or sidewalk outside
    ground, spread, depth = c.yy >= yh, np.abs(c.xx - vx), np.maximum(c.yy - yh, 0)
    k_road = rng.uniform(1.2, 2.0)
    k_side = k_road * rng.uniform(1.3, 1.8)
    road, side = spread < depth * k_road + 1, spread < depth * k_side
    c.paint(ground & ~side, "terrain" if rng.random() < 0.5 else "sidewalk", style=style)
    c.paint(ground & side & ~road, "sidewalk", style=style)
    c.paint(ground & road, "road", style=style)
    if rng.random() < 0.5:
        blob = c.ellipse(rng.uniform(0, w), yh + rng.uniform(0, .1) * h, .04 * w, .05 * h)
        c.clutter(blob, "other", style)
    if rng.random() < 0.3:
        x0 = vx + rng.choice([-1, 1]) * k_side * 0.3 * h
        c.paint(c.rect(x0, yh + .15 * h, x0 + .04 * w, yh + .25 * h), "static", style=style)
    objects = []  # (bottom y, x, name, height); sizes grow with distance below the horizon
    for _ in range(rng.integers(1, 5)):
        b = yh + rng.uniform(0.1, 1.0) * (h - yh)
        name = ("car", "car", "car", "truck", "bus")[rng.integers(5)]
        x = vx + rng.uniform(-0.8, 0.8) * k_road * (b - yh)
        objects.append((b, x, name, (b - yh) * rng.uniform(0.45, 0.65)))
    for _ in range(rng.integers(0, 4)):
        b = yh + rng.uniform(0.1, 1.0) * (h - yh)
        x = vx + rng.choice([-1, 1]) * rng.uniform(k_road, k_side) * (b - yh)
        name = "bicycle" if rng.random() < 0.25 else "person"
        objects.append((b, x, name, (b - yh) * rng.uniform(0.9, 1.2)))
    for _ in range(rng.integers(0, 3)):
        b = yh + rng.uniform(0.2, 1.0) * (h - yh)
        x = vx + rng.choice([-1, 1]) * k_side * (b - yh)
        objects.append((b, x, "pole", (b - yh) * rng.uniform(1.4, 2.0)))
    for b, x, name, s in sorted(objects):  # far to near
        place(c, name, x, b, s, style)
        if name == "pole":
            top = "traffic sign" if rng.random() < 0.6 else "traffic light"
            place(c, top, x, b - s * 0.85, s * (0.25 if top == "traffic sign" else 0.35), style)
    if rng.random() < 0.7:
        bonnet = np.sqrt(np.clip(1 - ((c.xx - w / 2) / (0.6 * w)) ** 2, 0, 1))
        c.paint(c.yy >= h - h * rng.uniform(0.05, 0.09) * bonnet, "ego vehicle", style=style)
    if out_of_roi:
        c.label[:, :2] = c.label[:, -2:] = CITYSCAPES_LABEL_IDS["out of roi"]


# ---------------------------------------------------------------------------- captions
#
# COCO-Captions-like text for the SimZSS text alignment, written from what a canvas shows.
# Large classes are mentioned more often than small ones, some visible classes go unmentioned,
# and the wording mixes concept-bank words ("car", "traffic light") with words outside the
# bank ("man", "street", "photo"), synonyms, plurals, counts and compounds, as people write.

# Words for each painted class, with weights; mostly benchmark class names.
CAPTION_WORDS = {
    "person": (("person", 3), ("man", 2), ("woman", 2), ("pedestrian", 1)),
    "car": (("car", 6), ("sedan", 1)),
    "bus": (("bus", 4), ("city bus", 1)),
    "truck": (("truck", 4), ("delivery truck", 1)),
    "bicycle": (("bicycle", 3), ("bike", 2)),
    "boat": (("boat", 4), ("sailboat", 1)),
    "cat": (("cat", 4), ("kitten", 1)),
    "bird": (("bird", 5), ("pigeon", 1)),
    "aeroplane": (("airplane", 3), ("aeroplane", 1), ("plane", 2)),
    "chair": (("chair", 1),),
    "table": (("table", 3), ("dining table", 2), ("kitchen table", 1)),
    "pole": (("pole", 1),),
    "traffic sign": (("traffic sign", 2), ("street sign", 2), ("road sign", 1), ("sign", 2)),
    "traffic light": (("traffic light", 4), ("traffic signal", 1)),
    "sky": (("sky", 1),),
    "building": (("building", 4), ("apartment building", 1)),
    "wall": (("wall", 4), ("brick wall", 1)),
    "ceiling": (("ceiling", 1),),
    "floor": (("floor", 1),),
    "road": (("road", 3), ("street", 2)),
    "sidewalk": (("sidewalk", 3), ("pavement", 1)),
    "grass": (("grass", 3), ("lawn", 1)),
    "terrain": (("grass", 2), ("terrain", 1)),
    "tree": (("tree", 4), ("bush", 1)),
    "vegetation": (("tree", 3), ("vegetation", 1), ("bush", 1)),
    "water": (("water", 4), ("pond", 1)),
    "fence": (("fence", 1),),
}
_ADJECTIVES = {
    "person": ("young", "tall"), "car": ("small", "old"), "bus": ("large", "long"),
    "truck": ("large", "big"), "bicycle": ("old",), "boat": ("small", "white"),
    "cat": ("small", "fluffy"), "bird": ("small", "little"), "aeroplane": ("large", "small"),
    "chair": ("wooden", "empty"), "table": ("wooden", "small"), "pole": ("tall",),
    "sky": ("blue", "clear", "bright"), "building": ("tall", "old", "large"),
    "wall": ("plain", "painted"), "ceiling": ("white", "high"), "floor": ("wooden", "tiled"),
    "road": ("paved", "wide"), "grass": ("green",), "tree": ("green", "leafy", "tall"),
    "water": ("calm",), "fence": ("low", "long"),
}
_MASS_NOUNS = {"grass", "water", "vegetation", "terrain", "pavement"}  # 'green grass'
_ONE_ONLY = _MASS_NOUNS | {"sky", "ceiling", "floor", "road", "street"}  # never plural
_GROUPS = {"person": "a group of", "bird": "a flock of", "car": "a row of", "chair": "a set of"}
_QUANTIFIERS = ("some", "several", "a few")
# preposition before each stuff class as a place ("a man standing ON the sidewalk")
_PREPOSITIONS = {
    "sky": ("under",), "building": ("in front of", "next to", "near"),
    "wall": ("in front of", "against", "by"), "ceiling": ("under",), "floor": ("on",),
    "road": ("on", "in"), "sidewalk": ("on", "along"), "grass": ("on", "in"), "terrain": ("on",),
    "tree": ("near", "beside", "under"), "vegetation": ("near", "beside"),
    "water": ("on", "near", "by"), "fence": ("next to", "behind", "along"),
}
# what a thing does at a place: replaces the preposition
_MOTIONS = {
    ("car", "road"): ("driving down", "parked on"), ("bus", "road"): ("driving down", "stopped on"),
    ("truck", "road"): ("driving down", "parked on"), ("person", "road"): ("crossing",),
    ("person", "sidewalk"): ("walking along", "walking on"),
    ("boat", "water"): ("floating on", "sailing on"),
    ("bird", "sky"): ("flying in",), ("aeroplane", "sky"): ("flying in", "flying through"),
    ("cat", "floor"): ("sitting on", "lying on"), ("cat", "grass"): ("sitting in", "lying in"),
    ("bicycle", "sidewalk"): ("parked on",), ("person", "grass"): ("standing on", "sitting on"),
}
_POSES = {"person": ("standing", "sitting"), "car": ("parked",), "bus": ("parked",),
          "truck": ("parked",), "bicycle": ("parked",), "cat": ("sitting",), "bird": ("perched",)}
_ATTACHED = {"traffic light": "pole", "traffic sign": "pole"}  # "a traffic light on a pole"
_SCENE_NOUNS = {
    "street": ("a city street", "a street scene", "an urban scene", "a view of a city street"),
    "outdoor": ("an outdoor scene", "a scene outside", "a scenic view"),
    "indoor": ("a room", "an indoor scene", "a small room", "an interior"),
    "object": ("a photo", "a picture", "an image", "a close up photo"),
}
_PREFIXES = ("a photo of ", "a picture of ", "an image of ", "a close up of ")
_DAYTIME = (" on a sunny day", " during the day", " in the afternoon", " on a clear day")
CAPTIONS_PER_IMAGE = 5
_MIN_PIXELS = 20  # smaller visible parts are not noticed
# area multipliers: objects catch the eye more than stuff, and signals more than their size says
_SALIENCE = {**{name: 8.0 for name in THINGS}, "traffic light": 32.0, "traffic sign": 32.0,
             "fence": 4.0}
_BACKDROPS = ("sky", "building", "wall", "ceiling", "tree", "vegetation", "fence", "water")


@dataclass(frozen=True)
class Seen:
    count: int  # visible instances (layers), at least _MIN_PIXELS each
    area: float  # their share of the image


def seen_classes(c: Canvas) -> dict[str, Seen]:
    """The captionable classes visible on a canvas, largest first."""
    pixels = np.bincount(c.owner.ravel() + 1, minlength=len(c.looks) + 1)[1:]
    counts, areas = {}, {}
    for look, n in zip(c.looks, pixels.tolist()):
        if look in CAPTION_WORDS and n >= _MIN_PIXELS:
            counts[look] = counts.get(look, 0) + 1
            areas[look] = areas.get(look, 0.0) + n / (c.h * c.w)
    return {name: Seen(counts[name], areas[name])
            for name in sorted(areas, key=areas.get, reverse=True)}


@functools.cache
def _inflect():
    """inflect's engine, imported on first use: the import takes seconds (typeguard)."""
    import inflect
    return inflect.engine()


@functools.cache
def _plural(word: str) -> str:
    return _inflect().plural_noun(word)


@functools.cache
def _a(word: str) -> str:
    return _inflect().a(word)


def _choice(rng: np.random.Generator, options):
    return options[rng.integers(len(options))]


def _pick(seen: dict[str, Seen], names: list[str], k: int, rng: np.random.Generator) -> list[str]:
    """k of `names` without replacement, likelier the larger and the more salient they are."""
    weights = np.array([seen[n].area * _SALIENCE.get(n, 1.0) for n in names]) ** 0.75
    k = min(k, len(names))
    chosen = rng.choice(len(names), size=k, replace=False, p=weights / weights.sum())
    return [names[i] for i in chosen]


def _word(name: str, rng: np.random.Generator) -> str:
    words, weights = zip(*CAPTION_WORDS[name])
    word = words[rng.choice(len(words), p=np.array(weights) / sum(weights))]
    if name in _ADJECTIVES and rng.random() < 0.3:
        return f"{_choice(rng, _ADJECTIVES[name])} {word}"
    return word


def _thing_phrase(name: str, n: int, rng: np.random.Generator) -> tuple[str, bool]:
    """'a wooden chair', 'two cars', 'several people', 'a flock of birds'; and whether plural."""
    word = _word(name, rng)
    if n == 1 or rng.random() < 0.1:
        return _a(word), False
    plural, r = _plural(word), rng.random()
    if name in _GROUPS and n >= 3 and r < 0.3:
        return f"{_GROUPS[name]} {plural}", False
    if r < 0.65:
        return f"{_inflect().number_to_words(n)} {plural}", True
    return f"{_choice(rng, _QUANTIFIERS + (('many',) if n >= 4 else ()))} {plural}", True


def _stuff_phrase(name: str, n: int, rng: np.random.Generator) -> str:
    """'the road', 'a blue sky', 'green grass', 'some buildings'."""
    word = _word(name, rng)
    head = word.split()[-1]
    if head not in _ONE_ONLY and n > 1:
        return f"{_choice(rng, ('some ', 'the ', ''))}{_plural(word)}"
    if head in _MASS_NOUNS and word != head and rng.random() < 0.5:
        return word
    return f"the {word}" if word == head or rng.random() < 0.5 else _a(word)


def _place(subject: str, seen: dict[str, Seen], rng: np.random.Generator) -> str:
    """' parked on the road', ' under a blue sky' for a thing; '' when no stuff is seen."""
    stuff = [n for n in seen if n in _PREPOSITIONS]
    if not stuff:
        return ""
    where = _pick(seen, stuff, 1, rng)[0]
    place = _stuff_phrase(where, seen[where].count, rng)
    if (subject, where) in _MOTIONS and rng.random() < 0.6:
        return f" {_choice(rng, _MOTIONS[subject, where])} {place}"
    pose = f" {_choice(rng, _POSES[subject])}" if subject in _POSES and rng.random() < 0.4 else ""
    return f"{pose} {_choice(rng, _PREPOSITIONS[where])} {place}"


def _mention(name: str, seen: dict[str, Seen], rng: np.random.Generator) -> tuple[str, bool]:
    """A noun phrase for any seen class; things may carry what they hang on."""
    if name not in THINGS:
        return _stuff_phrase(name, seen[name].count, rng), seen[name].count > 1
    text, plural = _thing_phrase(name, seen[name].count, rng)
    support = _ATTACHED.get(name)
    if support in seen and rng.random() < 0.5:
        text += f" on {'poles' if plural else 'a pole'}"
    return text, plural


def _subject_caption(things, seen, scene, rng) -> str:
    """'two cars parked on the road', 'a photo of a cat sitting on the floor'."""
    subject = _pick(seen, things, 1, rng)[0]
    text = _mention(subject, seen, rng)[0]
    if rng.random() < 0.9:
        text += _place(subject, seen, rng)
    if "sky" in seen and rng.random() < 0.15:
        text += _choice(rng, _DAYTIME)
    return (_choice(rng, _PREFIXES) if rng.random() < 0.2 else "") + text


def _pair_caption(things, seen, scene, rng) -> str:
    """'a man and a bicycle on the sidewalk', 'a bus next to two cars'."""
    first, second = _pick(seen, things, 2, rng)
    joint = _choice(rng, (" and ", " and ", " next to ", " near ", " with "))
    text = _mention(first, seen, rng)[0] + joint + _mention(second, seen, rng)[0]
    return text + (_place(second, seen, rng) if rng.random() < 0.5 else "")


def _there_caption(things, seen, scene, rng) -> str:
    """'there are three people standing on the grass'."""
    subject = _pick(seen, things, 1, rng)[0]
    text, plural = _mention(subject, seen, rng)
    return f"there {'are' if plural else 'is'} {text}{_place(subject, seen, rng)}"


def _scene_caption(things, seen, scene, rng) -> str:
    """'a city street with cars, a bus and buildings'."""
    names = _pick(seen, list(seen), int(rng.integers(2, 4)), rng)
    parts = [_mention(n, seen, rng)[0] for n in names]
    listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    return f"{_choice(rng, _SCENE_NOUNS[scene])} with {listed}"


def _stuff_caption(things, seen, scene, rng) -> str:
    """'tall buildings under a blue sky', 'the road near some trees'."""
    second = _pick(seen, [n for n in seen if n in _BACKDROPS], 1, rng)[0]
    first = _pick(seen, [n for n in seen if n not in (*THINGS, "sky", second)], 1, rng)[0]
    return (f"{_mention(first, seen, rng)[0]} {_choice(rng, _PREPOSITIONS[second])} "
            f"{_stuff_phrase(second, seen[second].count, rng)}")


def _caption(seen: dict[str, Seen], scene: str, rng: np.random.Generator) -> str:
    things = [n for n in seen if n in THINGS]
    forms = [(_scene_caption, 3)]
    if things:
        forms += [(_subject_caption, 4), (_there_caption, 2)]
    if len(things) >= 2:
        forms.append((_pair_caption, 2))
    if any(n in _BACKDROPS for n in seen) and len(set(seen) - set(THINGS) - {"sky"}) >= 2:
        forms.append((_stuff_caption, 1))
    functions, weights = zip(*forms)
    form = functions[rng.choice(len(forms), p=np.array(weights) / sum(weights))]
    text = form(things, seen, scene, rng)
    return text[0].upper() + text[1:] + ("." if rng.random() < 0.8 else "")


def write_captions(seen: dict[str, Seen], scene: str, rng: np.random.Generator) -> list[str]:
    """CAPTIONS_PER_IMAGE different captions of the seen classes of a `scene` kind
    (street | outdoor | indoor | object)."""
    if not seen:
        return [f"{_choice(rng, _SCENE_NOUNS[scene]).capitalize()}."] * CAPTIONS_PER_IMAGE
    captions: list[str] = []
    for _ in range(10 * CAPTIONS_PER_IMAGE):
        text = _caption(seen, scene, rng)
        if text not in captions:
            captions.append(text)
        if len(captions) == CAPTIONS_PER_IMAGE:
            return captions
    return (captions * CAPTIONS_PER_IMAGE)[:CAPTIONS_PER_IMAGE]


def _unlabelled(name: str) -> int:
    """Captioned images need no label map: what is visible comes from the canvas's layers."""
    return 0


def caption_scene(rng: np.random.Generator) -> tuple[Canvas, Style, str]:
    """A scene as the segmentation miniatures paint them (so that text learnt on these images
    transfers to their val images), its style and its kind (street | outdoor | indoor | object)."""
    style = CARTOON if rng.random() < 0.15 else PHOTO
    kind = _choice(rng, ("ade", "ade", "ade", "voc", "voc", "city", "city"))
    if kind == "city":
        h = int(rng.integers(96, 101))
        c = Canvas(h, 2 * h, rng, _unlabelled)
        _city_scene(c, style, out_of_roi=False)
        return c, style, "street"
    if kind == "voc":
        c = Canvas(int(rng.integers(100, 151)), int(rng.integers(120, 181)), rng, _unlabelled)
        _voc_scene(c, style)
        return c, style, "object"
    c = Canvas(int(rng.integers(96, 161)), int(rng.integers(128, 201)), rng, _unlabelled)
    _ade_scene(c, style)
    return c, style, "outdoor" if "sky" in c.looks else "indoor"

# ---------------------------------------------------------------------------- datasets

_CODES = {"ade20k": 0, "pascal_voc": 1, "cityscapes": 2, "gta5": 3, "pascal_context": 4, "coco": 5,
          "coco_captions": 6}


def _rng(seed: int, dataset: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _CODES[dataset], ("train", "val").index(split), index])


def _ade_label(name: str) -> int:
    return 0 if name == "other" else ADE20K_CLASSES.index(name) + 1


def _voc_label(name: str) -> int:
    return VOC_CLASSES.index(name)


def _city_label(name: str) -> int:
    return 0 if name == "other" else CITYSCAPES_LABEL_IDS[name]


def _write_ade20k(out: Path, seed: int, counts: dict[str, int]) -> None:
    files = {}
    for split, sub in (("train", "training"), ("val", "validation")):
        for i in range(counts.get(split, 0)):
            rng = _rng(seed, "ade20k", split, i)
            c = Canvas(int(rng.integers(96, 161)), int(rng.integers(128, 201)), rng, _ade_label)
            _ade_scene(c, PHOTO)
            name = f"ADE_{split}_{i + 1:08d}"
            files[f"ADEChallengeData2016/images/{sub}/{name}.jpg"] = encode_jpeg(c.finish(PHOTO))
            files[f"ADEChallengeData2016/annotations/{sub}/{name}.png"] = encode_png(c.label)
    write_zip(out / "ADEChallengeData2016.zip", files)


def _voc_ids(rng: np.random.Generator, counts: dict[str, int]) -> dict[str, list[str]]:
    """Sorted official-style ids ('2008_000123'), train and val interleaved like the real lists."""
    n_train, n = counts.get("train", 0), counts.get("train", 0) + counts.get("val", 0)
    serial = np.cumsum(rng.integers(1, 40, n))
    keys = [f"{2007 + s // 1000}_{s % 1000:06d}" for s in serial]
    order = rng.permutation(n)
    return {"train": sorted(keys[j] for j in order[:n_train]),
            "val": sorted(keys[j] for j in order[n_train:])}


def _write_pascal_voc(out: Path, seed: int, counts: dict[str, int]) -> None:
    base, files, palette = "VOCdevkit/VOC2012", {}, voc_palette()
    ids = _voc_ids(np.random.default_rng([seed, _CODES["pascal_voc"], 2]), counts)
    for split in ("train", "val"):
        for i, key in enumerate(ids[split]):
            rng = _rng(seed, "pascal_voc", split, i)
            c = Canvas(int(rng.integers(100, 151)), int(rng.integers(120, 181)), rng, _voc_label)
            objects = _voc_scene(c, PHOTO)
            border = np.zeros((c.h, c.w), bool)
            for layer in objects:  # VOC marks object outlines as 255 (~2 px wide here)
                vis = c.visible(layer)
                border |= dilate(vis) & dilate(~vis)
            c.label[border] = 255
            files[f"{base}/JPEGImages/{key}.jpg"] = encode_jpeg(c.finish(PHOTO))
            files[f"{base}/SegmentationClass/{key}.png"] = encode_png(c.label, palette)
    for split, keys in {**ids, "trainval": ids["train"] + ids["val"]}.items():
        listing = "".join(f"{k}\n" for k in sorted(keys))
        files[f"{base}/ImageSets/Segmentation/{split}.txt"] = listing.encode()
    write_tar(out / "VOCtrainval_11-May-2012.tar", files)


_CITIES = {"train": ("aachen", "bochum", "bremen", "cologne", "darmstadt"),
           "val": ("frankfurt", "lindau", "munster")}
_HAS_INSTANCES = {"person", "rider", "car", "truck", "bus", "caravan", "trailer", "train",
                  "motorcycle", "bicycle"}


def _cityscapes_gt(c: Canvas) -> dict[str, bytes]:
    """The gtFine files of one image: labelIds, color, instanceIds and polygons."""
    instances = c.label.astype(np.uint16)
    objects, counters = [], {}
    for layer, name in enumerate(c.layers):
        ys, xs = np.nonzero(c.visible(layer))
        if not len(ys):
            continue
        label_name = "unlabeled" if name == "other" else name
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        objects.append({"label": label_name, "polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]})
        if label_name in _HAS_INSTANCES:
            label_id = _city_label(name)
            k = counters[label_id] = counters.get(label_id, -1) + 1
            own = (c.owner == layer) & (c.label == label_id)
            instances[own] = label_id * 1000 + k
    polygons = {"imgHeight": c.h, "imgWidth": c.w, "objects": objects}
    return {"labelIds.png": encode_png(c.label),
            "color.png": encode_png(cityscapes_palette()[c.label]),
            "instanceIds.png": encode_png(instances),
            "polygons.json": json.dumps(polygons, indent=4).encode()}


def _write_cityscapes(out: Path, seed: int, counts: dict[str, int]) -> None:
    images, labels = {}, {}
    for split in ("train", "val"):
        for i in range(counts.get(split, 0)):
            rng = _rng(seed, "cityscapes", split, i)
            c = Canvas(128, 256, rng, _city_label)
            _city_scene(c, PHOTO, out_of_roi=True)
            city = _CITIES[split][i % len(_CITIES[split])]
            stem = f"{city}_{i // len(_CITIES[split]):06d}_000019"
            image = encode_png(c.finish(PHOTO))
            images[f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = image
            for suffix, data in _cityscapes_gt(c).items():
                labels[f"gtFine/{split}/{city}/{stem}_gtFine_{suffix}"] = data
    write_zip(out / "leftImg8bit_trainvaltest.zip", images)
    write_zip(out / "gtFine_trainvaltest.zip", labels)


def _write_gta5(out: Path, seed: int, counts: dict[str, int]) -> None:
    n, palette = counts.get("train", 0), cityscapes_palette()
    per_part = max(1, math.ceil(n / 2))
    parts: dict[int, tuple[dict, dict]] = {}
    for i in range(n):
        rng = _rng(seed, "gta5", "train", i)
        c = Canvas(120, 218, rng, _city_label)
        _city_scene(c, CARTOON, out_of_roi=False)
        label = c.label
        if i in (2, n - 1):  # like a few real GTA V pairs: label size differs from the image
            label = np.array(Image.fromarray(label).resize((c.w + 4, c.h + 2), Image.NEAREST))
        images, labels = parts.setdefault(i // per_part + 1, ({}, {}))
        images[f"images/{i + 1:05d}.png"] = encode_png(c.finish(CARTOON))
        labels[f"labels/{i + 1:05d}.png"] = encode_png(label, palette)
    for part, (images, labels) in parts.items():
        write_zip(out / f"{part:02d}_images.zip", images)
        write_zip(out / f"{part:02d}_labels.zip", labels)


_CONTEXT_OTHER = 431  # a full-Context label id outside the 59 classes: background after mapping


def _context_label(name: str) -> int:
    if name == "other":
        return _CONTEXT_OTHER
    return PASCAL_CONTEXT_IDS[PASCAL_CONTEXT_CLASSES.index(name)]


def _write_pascal_context(out: Path, seed: int, counts: dict[str, int]) -> None:
    """VOC2010 images and split lists, and Context's trainval.tar.gz of 459-class LabelMaps."""
    base, images, labels = "VOCdevkit/VOC2010", {}, {}
    ids = _voc_ids(np.random.default_rng([seed, _CODES["pascal_context"], 2]), counts)
    for split in ("train", "val"):
        for i, key in enumerate(ids[split]):
            rng = _rng(seed, "pascal_context", split, i)
            c = Canvas(int(rng.integers(100, 151)), int(rng.integers(120, 181)), rng, _context_label,
                       label_dtype=np.uint16)
            _ade_scene(c, PHOTO)
            images[f"{base}/JPEGImages/{key}.jpg"] = encode_jpeg(c.finish(PHOTO))
            labels[f"trainval/{key}.mat"] = encode_mat({"LabelMap": c.label})
    for split, keys in {**ids, "trainval": ids["train"] + ids["val"]}.items():
        images[f"{base}/ImageSets/Main/{split}.txt"] = "".join(f"{k}\n" for k in sorted(keys)).encode()
    write_tar(out / "VOCtrainval_03-May-2010.tar", images)
    write_tar(out / "trainval.tar.gz", labels, compress=True)


_COCO_NAMES = {"table": "dining table", "sky": "sky-other", "building": "building-other",
               "wall": "wall-other", "water": "water-other", "ceiling": "ceiling-other",
               "floor": "floor-other"}


def _coco_stuff_label(name: str) -> int:
    """0-indexed COCO-Stuff id (COCO category id - 1); 255 = unlabeled."""
    if name == "other":
        return 255
    return COCO_STUFF_IDS[COCO_STUFF_CLASSES.index(_COCO_NAMES.get(name, name))]


def _coco_images(seed: int, count: int):
    """The miniature's val2017: (file name, image id, canvas) per image, the same for every COCO set."""
    rng = np.random.default_rng([seed, _CODES["coco"], 2])
    image_ids = np.cumsum(rng.integers(1, 2000, count)).tolist()
    for i, image_id in enumerate(image_ids):
        rng = _rng(seed, "coco", "val", i)
        c = Canvas(int(rng.integers(96, 161)), int(rng.integers(128, 201)), rng, _coco_stuff_label)
        _ade_scene(c, PHOTO)
        yield f"{image_id:012d}.jpg", image_id, c


def _write_coco_stuff(out: Path, seed: int, counts: dict[str, int]) -> None:
    images, maps = {}, {}
    for file_name, _, c in _coco_images(seed, counts.get("val", 0)):
        images[f"val2017/{file_name}"] = encode_jpeg(c.finish(PHOTO))
        maps[f"val2017/{file_name[:-4]}.png"] = encode_png(c.label)
    write_zip(out / "val2017.zip", images)
    write_zip(out / "stuffthingmaps_trainval2017.zip", maps)


def _instances(c: Canvas, image_id: int, first_id: int) -> list[dict]:
    """COCO instance annotations (compressed RLE) of the visible things of a canvas."""
    annotations = []
    for layer, name in enumerate(c.layers):
        mask = c.visible(layer)
        raw = _coco_stuff_label(name)
        if raw + 1 not in COCO_THING_IDS or not mask.any():
            continue
        rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        ys, xs = np.nonzero(mask)
        bbox = [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]
        annotations.append({"id": first_id + len(annotations), "image_id": image_id,
                            "category_id": raw + 1, "iscrowd": 0, "area": float(mask.sum()),
                            "bbox": bbox, "segmentation": {"size": list(rle["size"]),
                                                           "counts": rle["counts"].decode()}})
    return annotations


def _write_coco_object(out: Path, seed: int, counts: dict[str, int]) -> None:
    images, entries, annotations = {}, [], []
    for file_name, image_id, c in _coco_images(seed, counts.get("val", 0)):
        images[f"val2017/{file_name}"] = encode_jpeg(c.finish(PHOTO))
        entries.append({"id": image_id, "file_name": file_name, "height": c.h, "width": c.w})
        annotations += _instances(c, image_id, len(annotations) + 1)
    categories = [{"id": cid, "name": name, "supercategory": "thing"}
                  for cid, name in zip(COCO_THING_IDS, COCO_OBJECT_CLASSES[1:])]
    instances = {"info": {"description": "miniature COCO 2017"}, "images": entries,
                 "annotations": annotations, "categories": categories}
    write_zip(out / "val2017.zip", images)
    write_zip(out / "annotations_trainval2017.zip",
              {"annotations/instances_val2017.json": json.dumps(instances).encode()})


_CAPTION_SPLITS = {"coco_captions": ("train", "val")}  # caption sets have no segmentation spec
_CAPTIONS_INFO = {"description": "miniature COCO 2017 captions (synthetic)",
                  "url": "http://cocodataset.org", "version": "1.0", "year": 2017,
                  "contributor": "pipeline miniature", "date_created": "2017/09/01"}
_CAPTIONS_LICENSES = [{"url": "", "id": 1, "name": "synthetic image, no rights reserved"}]


def _caption_ids(seed: int, counts: dict[str, int]) -> dict[str, list[int]]:
    """COCO-style image ids, disjoint between the splits and sorted within each."""
    rng = np.random.default_rng([seed, _CODES["coco_captions"], 2])
    n_train = counts.get("train", 0)
    n = n_train + counts.get("val", 0)
    ids = np.cumsum(rng.integers(1, 2000, n))[rng.permutation(n)].tolist()
    return {"train": sorted(ids[:n_train]), "val": sorted(ids[n_train:])}


def captioned_images(seed: int, split: str, image_ids: list[int]):
    """(image id, canvas, uint8 RGB image, captions) per image of a caption split."""
    for i, image_id in enumerate(image_ids):
        rng = _rng(seed, "coco_captions", split, i)
        c, style, scene = caption_scene(rng)
        image = c.finish(style)
        yield image_id, c, image, write_captions(seen_classes(c), scene, rng)


def _write_coco_captions(out: Path, seed: int, counts: dict[str, int]) -> None:
    """<split>2017.zip and annotations_trainval2017.zip with captions_<split>2017.json."""
    ids, annotations_files, next_id = _caption_ids(seed, counts), {}, 1
    for split in (s for s in ("train", "val") if s in counts):
        images, entries, annotations = {}, [], []
        for image_id, c, image, captions in captioned_images(seed, split, ids[split]):
            file_name = f"{image_id:012d}.jpg"
            images[f"{split}2017/{file_name}"] = encode_jpeg(image)
            entries.append({"license": 1, "file_name": file_name,
                            "coco_url": f"http://images.cocodataset.org/{split}2017/{file_name}",
                            "height": c.h, "width": c.w, "date_captured": "2013-11-14 11:18:45",
                            "id": image_id})
            for caption in captions:
                annotations.append({"image_id": image_id, "id": next_id, "caption": caption})
                next_id += 1
        data = {"info": _CAPTIONS_INFO, "licenses": _CAPTIONS_LICENSES, "images": entries,
                "annotations": annotations}
        annotations_files[f"annotations/captions_{split}2017.json"] = json.dumps(data).encode()
        write_zip(out / f"{split}2017.zip", images)
    write_zip(out / "annotations_trainval2017.zip", annotations_files)


_WRITERS = {"ade20k": _write_ade20k, "pascal_voc": _write_pascal_voc,
            "cityscapes": _write_cityscapes, "gta5": _write_gta5,
            "pascal_context": _write_pascal_context, "coco_stuff": _write_coco_stuff,
            "coco_object": _write_coco_object, "coco_captions": _write_coco_captions}


def generate(out_root: Path, seed: int, counts: dict[str, dict[str, int]]) -> dict:
    """Write out_root/<dataset>/ in the official layout for each dataset in `counts`."""
    summary = {}
    for dataset, split_counts in counts.items():
        splits = _CAPTION_SPLITS.get(dataset) or get_spec(dataset).splits
        unknown = set(split_counts) - set(splits)
        if unknown:
            raise ValueError(f"{dataset} has no split(s) {sorted(unknown)}; "
                             f"available: {list(splits)}")
        with atomic_path(Path(out_root) / dataset) as tmp:
            tmp.mkdir()
            _WRITERS[dataset](tmp, seed, split_counts)
        summary[dataset] = dict(split_counts)
    return summary
