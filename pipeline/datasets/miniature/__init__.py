"""A synthetic miniature of every dataset of both papers, in their official layouts.

ADE20K, PASCAL VOC, PASCAL Context (VOC2010 tar + Context .mat annotations), Cityscapes,
GTA V, COCO-Stuff (stuffthingmaps PNGs) and COCO-Object (instance annotations, RLE); the COCO
sets share one val2017. COCO Captions has its own images, painted like the segmentation sets'
scenes, each with 5 captions written from the classes visible in it. ImageNet-1k's validation
tar and devkit hold a few noise images of six real classes. `img2dataset` writes the captioned images as
img2dataset's WebDataset shards, the layout of web-scale caption sets.

One module per concern: formats (reproducible archives and image files), painting (looks,
styles, canvas), shapes (objects), scenes (layouts), captions (text), seeds (per-image
generators); ade20k, pascal, cityscapes, coco, imagenet and img2dataset write the datasets. Output is deterministic.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.atomic import atomic_path
from pipeline.datasets.miniature.ade20k import write_ade20k
from pipeline.datasets.miniature.cityscapes import write_cityscapes, write_gta5
from pipeline.datasets.miniature.coco import (write_coco_captions, write_coco_object,
                                              write_coco_stuff)
from pipeline.datasets.miniature.imagenet import write_imagenet
from pipeline.datasets.miniature.img2dataset import write_img2dataset_split
from pipeline.datasets.miniature.pascal import write_pascal_context, write_pascal_voc
from pipeline.datasets.specs import CLASSIFICATION_SPLITS, get_spec

_CAPTION_SPLITS = {"coco_captions": ("train", "val"), "img2dataset": ("train",)}  # caption sets have no segmentation spec

_WRITERS = {"ade20k": write_ade20k, "pascal_voc": write_pascal_voc,
            "cityscapes": write_cityscapes, "gta5": write_gta5,
            "pascal_context": write_pascal_context, "coco_stuff": write_coco_stuff,
            "coco_object": write_coco_object, "coco_captions": write_coco_captions,
            "imagenet": write_imagenet, "img2dataset": write_img2dataset_split}


def generate(out_root: Path, seed: int, counts: dict[str, dict[str, int]]) -> dict:
    """Write out_root/<dataset>/ in the official layout for each dataset in `counts`."""
    summary = {}
    for dataset, split_counts in counts.items():
        splits = _CAPTION_SPLITS.get(dataset) or CLASSIFICATION_SPLITS.get(dataset) or get_spec(dataset).splits
        unknown = set(split_counts) - set(splits)
        if unknown:
            raise ValueError(f"{dataset} has no split(s) {sorted(unknown)}; "
                             f"available: {list(splits)}")
        with atomic_path(Path(out_root) / dataset) as tmp:
            tmp.mkdir()
            _WRITERS[dataset](tmp, seed, split_counts)
        summary[dataset] = dict(split_counts)
    return summary
