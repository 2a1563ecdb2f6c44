"""Scene layouts: ADE20K-like indoor and outdoor scenes, VOC-like object photos and Cityscapes-like
streets, and the mix of them that the captioned images are.

Segmentation is learnable but not trivial: objects occlude each other (painted far to near) and
vary in size, and unlabelled clutter sits among the classes.
"""
from __future__ import annotations

import numpy as np

from pipeline.datasets.miniature.painting import CARTOON, PHOTO, Canvas, Style
from pipeline.datasets.miniature.shapes import place
from pipeline.datasets.specs import CITYSCAPES_LABEL_IDS

STUFF = ("sky", "wall", "floor", "road", "grass", "tree", "water", "building")  # VOC backgrounds


def _foliage(c: Canvas, cx: float, cy: float, size: float) -> np.ndarray:
    """A clump of 2-4 overlapping ellipses (tree crowns, bushes) around (cx, cy)."""
    rng, mask = c.rng, np.zeros((c.h, c.w), bool)
    for _ in range(rng.integers(2, 5)):
        r = rng.uniform(0.5, 1.0) * size
        mask |= c.ellipse(cx + rng.uniform(-.5, .5) * size, cy + rng.uniform(-.5, .3) * size,
                          r * 1.1, r)
    return mask


def ade_scene(c: Canvas, style: Style) -> None:
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


def voc_scene(c: Canvas, style: Style) -> list[int]:
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


def city_scene(c: Canvas, style: Style, out_of_roi: bool) -> None:
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


def _unlabelled(name: str) -> int:
    """Captioned images need no label map: what is visible comes from the canvas's layers."""
    return 0


def caption_scene(rng: np.random.Generator) -> tuple[Canvas, Style, str]:
    """A scene as the segmentation miniatures paint them (so that text learnt on these images
    transfers to their val images), its style and its kind (street | outdoor | indoor | object)."""
    style = CARTOON if rng.random() < 0.15 else PHOTO
    kind = ("ade", "ade", "ade", "voc", "voc", "city", "city")[rng.integers(7)]
    if kind == "city":
        h = int(rng.integers(96, 101))
        c = Canvas(h, 2 * h, rng, _unlabelled)
        city_scene(c, style, out_of_roi=False)
        return c, style, "street"
    if kind == "voc":
        c = Canvas(int(rng.integers(100, 151)), int(rng.integers(120, 181)), rng, _unlabelled)
        voc_scene(c, style)
        return c, style, "object"
    c = Canvas(int(rng.integers(96, 161)), int(rng.integers(128, 201)), rng, _unlabelled)
    ade_scene(c, style)
    return c, style, "outdoor" if "sky" in c.looks else "indoor"
