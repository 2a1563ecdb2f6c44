"""The miniature COCO 2017 sets: COCO-Stuff (stuffthingmaps PNGs) and COCO-Object (instance
annotations, RLE) on one shared val2017, and COCO Captions on images of its own."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from pipeline.datasets.miniature.captions import seen_classes, write_captions
from pipeline.datasets.miniature.formats import encode_jpeg, encode_png, write_zip
from pipeline.datasets.miniature.painting import PHOTO, Canvas
from pipeline.datasets.miniature.scenes import ade_scene, caption_scene
from pipeline.datasets.miniature.seeds import dataset_rng, image_rng
from pipeline.datasets.specs import (COCO_OBJECT_CLASSES, COCO_STUFF_CLASSES, COCO_STUFF_IDS,
                                     COCO_THING_IDS)

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
    rng = dataset_rng(seed, "coco")
    image_ids = np.cumsum(rng.integers(1, 2000, count)).tolist()
    for i, image_id in enumerate(image_ids):
        rng = image_rng(seed, "coco", "val", i)
        c = Canvas(int(rng.integers(96, 161)), int(rng.integers(128, 201)), rng, _coco_stuff_label)
        ade_scene(c, PHOTO)
        yield f"{image_id:012d}.jpg", image_id, c


def write_coco_stuff(out: Path, seed: int, counts: dict[str, int]) -> None:
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


def write_coco_object(out: Path, seed: int, counts: dict[str, int]) -> None:
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


_CAPTIONS_INFO = {"description": "miniature COCO 2017 captions (synthetic)",
                  "url": "http://cocodataset.org", "version": "1.0", "year": 2017,
                  "contributor": "pipeline miniature", "date_created": "2017/09/01"}
_CAPTIONS_LICENSES = [{"url": "", "id": 1, "name": "synthetic image, no rights reserved"}]


def _caption_ids(seed: int, counts: dict[str, int]) -> dict[str, list[int]]:
    """COCO-style image ids, disjoint between the splits and sorted within each."""
    rng = dataset_rng(seed, "coco_captions")
    n_train = counts.get("train", 0)
    n = n_train + counts.get("val", 0)
    ids = np.cumsum(rng.integers(1, 2000, n))[rng.permutation(n)].tolist()
    return {"train": sorted(ids[:n_train]), "val": sorted(ids[n_train:])}


def captioned_images(seed: int, split: str, image_ids: list[int]):
    """(image id, canvas, uint8 RGB image, captions) per image of a caption split."""
    for i, image_id in enumerate(image_ids):
        rng = image_rng(seed, "coco_captions", split, i)
        c, style, scene = caption_scene(rng)
        image = c.finish(style)
        yield image_id, c, image, write_captions(seen_classes(c), scene, rng)


def write_coco_captions(out: Path, seed: int, counts: dict[str, int]) -> None:
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
