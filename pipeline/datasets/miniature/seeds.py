"""The random generators of the miniature: one per image, seeded from (seed, dataset, split,
index), so an image does not change when other images or datasets are added or removed."""
from __future__ import annotations

import numpy as np

_CODES = {"ade20k": 0, "pascal_voc": 1, "cityscapes": 2, "gta5": 3, "pascal_context": 4, "coco": 5,
          "coco_captions": 6, "imagenet": 7}


def image_rng(seed: int, dataset: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _CODES[dataset], ("train", "val").index(split), index])


def dataset_rng(seed: int, dataset: str) -> np.random.Generator:
    """For what is drawn once per dataset (image ids); stream 2 is neither train's nor val's."""
    return np.random.default_rng([seed, _CODES[dataset], 2])
