"""The miniature Cityscapes (leftImg8bit and gtFine zips) and GTA V (images and labels in parts),
which share Cityscapes' label ids."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.datasets.miniature.formats import encode_png, write_zip
from pipeline.datasets.miniature.painting import CARTOON, PHOTO, Canvas
from pipeline.datasets.miniature.scenes import city_scene
from pipeline.datasets.miniature.seeds import image_rng
from pipeline.datasets.specs import CITYSCAPES_LABEL_IDS, cityscapes_palette


def _city_label(name: str) -> int:
    return 0 if name == "other" else CITYSCAPES_LABEL_IDS[name]


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


def write_cityscapes(out: Path, seed: int, counts: dict[str, int]) -> None:
    images, labels = {}, {}
    for split in ("train", "val"):
        for i in range(counts.get(split, 0)):
            rng = image_rng(seed, "cityscapes", split, i)
            c = Canvas(128, 256, rng, _city_label)
            city_scene(c, PHOTO, out_of_roi=True)
            city = _CITIES[split][i % len(_CITIES[split])]
            stem = f"{city}_{i // len(_CITIES[split]):06d}_000019"
            image = encode_png(c.finish(PHOTO))
            images[f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = image
            for suffix, data in _cityscapes_gt(c).items():
                labels[f"gtFine/{split}/{city}/{stem}_gtFine_{suffix}"] = data
    write_zip(out / "leftImg8bit_trainvaltest.zip", images)
    write_zip(out / "gtFine_trainvaltest.zip", labels)


def write_gta5(out: Path, seed: int, counts: dict[str, int]) -> None:
    n, palette = counts.get("train", 0), cityscapes_palette()
    per_part = max(1, math.ceil(n / 2))
    parts: dict[int, tuple[dict, dict]] = {}
    for i in range(n):
        rng = image_rng(seed, "gta5", "train", i)
        c = Canvas(120, 218, rng, _city_label)
        city_scene(c, CARTOON, out_of_roi=False)
        label = c.label
        if i in (2, n - 1):  # like a few real GTA V pairs: label size differs from the image
            label = np.array(Image.fromarray(label).resize((c.w + 4, c.h + 2), Image.NEAREST))
        images, labels = parts.setdefault(i // per_part + 1, ({}, {}))
        images[f"images/{i + 1:05d}.png"] = encode_png(c.finish(CARTOON))
        labels[f"labels/{i + 1:05d}.png"] = encode_png(label, palette)
    for part, (images, labels) in parts.items():
        write_zip(out / f"{part:02d}_images.zip", images)
        write_zip(out / f"{part:02d}_labels.zip", labels)
