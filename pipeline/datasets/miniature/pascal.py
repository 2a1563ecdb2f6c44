"""The miniature PASCAL VOC 2012 and PASCAL Context (VOC2010 images, Context's .mat label maps)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.datasets.miniature.formats import encode_jpeg, encode_mat, encode_png, write_tar
from pipeline.datasets.miniature.painting import PHOTO, Canvas, dilate
from pipeline.datasets.miniature.scenes import ade_scene, voc_scene
from pipeline.datasets.miniature.seeds import dataset_rng, image_rng
from pipeline.datasets.specs import (PASCAL_CONTEXT_CLASSES, PASCAL_CONTEXT_IDS, VOC_CLASSES,
                                     voc_palette)


def _voc_label(name: str) -> int:
    return VOC_CLASSES.index(name)


def _voc_ids(rng: np.random.Generator, counts: dict[str, int]) -> dict[str, list[str]]:
    """Sorted official-style ids ('2008_000123'), train and val interleaved like the real lists."""
    n_train, n = counts.get("train", 0), counts.get("train", 0) + counts.get("val", 0)
    serial = np.cumsum(rng.integers(1, 40, n))
    keys = [f"{2007 + s // 1000}_{s % 1000:06d}" for s in serial]
    order = rng.permutation(n)
    return {"train": sorted(keys[j] for j in order[:n_train]),
            "val": sorted(keys[j] for j in order[n_train:])}


def write_pascal_voc(out: Path, seed: int, counts: dict[str, int]) -> None:
    base, files, palette = "VOCdevkit/VOC2012", {}, voc_palette()
    ids = _voc_ids(dataset_rng(seed, "pascal_voc"), counts)
    for split in ("train", "val"):
        for i, key in enumerate(ids[split]):
            rng = image_rng(seed, "pascal_voc", split, i)
            c = Canvas(int(rng.integers(100, 151)), int(rng.integers(120, 181)), rng, _voc_label)
            objects = voc_scene(c, PHOTO)
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


_CONTEXT_OTHER = 431  # a full-Context label id outside the 59 classes: background after mapping


def _context_label(name: str) -> int:
    if name == "other":
        return _CONTEXT_OTHER
    return PASCAL_CONTEXT_IDS[PASCAL_CONTEXT_CLASSES.index(name)]


def write_pascal_context(out: Path, seed: int, counts: dict[str, int]) -> None:
    """VOC2010 images and split lists, and Context's trainval.tar.gz of 459-class LabelMaps."""
    base, images, labels = "VOCdevkit/VOC2010", {}, {}
    ids = _voc_ids(dataset_rng(seed, "pascal_context"), counts)
    for split in ("train", "val"):
        for i, key in enumerate(ids[split]):
            rng = image_rng(seed, "pascal_context", split, i)
            c = Canvas(int(rng.integers(100, 151)), int(rng.integers(120, 181)), rng, _context_label,
                       label_dtype=np.uint16)
            ade_scene(c, PHOTO)
            images[f"{base}/JPEGImages/{key}.jpg"] = encode_jpeg(c.finish(PHOTO))
            labels[f"trainval/{key}.mat"] = encode_mat({"LabelMap": c.label})
    for split, keys in {**ids, "trainval": ids["train"] + ids["val"]}.items():
        images[f"{base}/ImageSets/Main/{split}.txt"] = "".join(f"{k}\n" for k in sorted(keys)).encode()
    write_tar(out / "VOCtrainval_03-May-2010.tar", images)
    write_tar(out / "trainval.tar.gz", labels, compress=True)
