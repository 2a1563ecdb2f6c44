"""The miniature ImageNet-1k validation set in the official layout: ILSVRC2012_img_val.tar (flat
ILSVRC2012_val_NNNNNNNN.JPEG) and the devkit ILSVRC2012_devkit_t12.tar.gz, whose meta.mat numbers its
synsets (ILSVRC2012_ID) in an order other than the sorted-wnid label order, as the real devkit does."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from timm.data import ImageNetInfo

from pipeline.datasets.miniature.formats import encode_jpeg, encode_mat, write_tar
from pipeline.datasets.miniature.seeds import dataset_rng, image_rng

# Labels of the miniature's classes (real ImageNet-1k classes: tench, goldfish, tabby cat, ambulance, sports car,
# toilet paper). The devkit numbers them in reverse label order, after an internal synset.
CLASSES = (0, 1, 281, 407, 817, 999)
_SYNSET_FIELDS = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
                  "num_train_images")
_INTERNAL = ("n00001740", "entity")  # a synset with children (not a class), as meta.mat's last 860 are


def _synsets(info: ImageNetInfo) -> tuple[np.ndarray, dict[int, int]]:
    """meta.mat's `synsets` struct array (N x 1, the official fields), and label -> ILSVRC2012_ID."""
    ids = {label: i + 2 for i, label in enumerate(reversed(CLASSES))}
    rows = [(1, *_INTERNAL, "the root synset", len(CLASSES), np.array(sorted(ids.values()), np.uint16), 18, 0)]
    rows += [(ids[label], info.index_to_label_name(label), info.index_to_description(label), "", 0,
              np.zeros((1, 0), np.uint16), 0, 1300) for label in sorted(CLASSES, key=ids.get)]
    synsets = np.empty((len(rows), 1), dtype=[(field, object) for field in _SYNSET_FIELDS])
    for i, row in enumerate(rows):
        synsets[i, 0] = row
    return synsets, ids


def _image(rng: np.random.Generator, label: int, grey: bool) -> bytes:
    """A noisy JPEG of a class colour, of a random landscape or portrait size (as the real images vary)."""
    height, width = rng.integers(64, 160, size=2)
    colour = np.random.default_rng(label).integers(0, 256, size=3)
    pixels = np.clip(colour + rng.normal(0, 40, size=(height, width, 3)), 0, 255).astype(np.uint8)
    return encode_jpeg(pixels.mean(-1).astype(np.uint8) if grey else pixels)


def write_imagenet(out: Path, seed: int, counts: dict[str, int]) -> None:
    """counts["val"] images of classes drawn from CLASSES; every fourth is greyscale (the real set has some)."""
    synsets, ids = _synsets(ImageNetInfo())
    n = counts.get("val", 0)
    labels = dataset_rng(seed, "imagenet").choice(CLASSES, size=n)
    images = {f"ILSVRC2012_val_{i + 1:08d}.JPEG": _image(image_rng(seed, "imagenet", "val", i), int(label), i % 4 == 3)
              for i, label in enumerate(labels)}
    truth = "".join(f"{ids[int(label)]}\n" for label in labels).encode()
    write_tar(out / "ILSVRC2012_img_val.tar", images)
    write_tar(out / "ILSVRC2012_devkit_t12.tar.gz", {
        "ILSVRC2012_devkit_t12/data/meta.mat": encode_mat({"synsets": synsets}),
        "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": truth,
    }, compress=True)
