"""Class lists and raw-label -> train-id mappings of the four benchmark datasets."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import PipelineError


class DataError(PipelineError):
    """Bad or missing data; the message names the file(s) and what was expected."""


ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# Official Cityscapes label table (cityscapesScripts labels.py): (name, labelId, trainId, color).
# 'license plate' (labelId -1) never appears in labelIds PNGs and is omitted.
CITYSCAPES_LABELS = (
    ("unlabeled", 0, 255, (0, 0, 0)),
    ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)),
    ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
)

CITYSCAPES_LABEL_IDS = {name: label_id for name, label_id, _, _ in CITYSCAPES_LABELS}


def voc_palette() -> np.ndarray:
    """The official PASCAL VOC colormap, uint8[256, 3] (bit-interleaved class index)."""
    idx = np.arange(256)
    palette = np.zeros((256, 3), np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (idx >> channel) & 1
            palette[:, channel] |= bit << (7 - shift)
        idx = idx >> 3
    return palette.astype(np.uint8)


def cityscapes_palette() -> np.ndarray:
    """uint8[256, 3]: labelId -> official Cityscapes colour (the palette of GTA V labels)."""
    palette = np.zeros((256, 3), np.uint8)
    for _, label_id, _, color in CITYSCAPES_LABELS:
        palette[label_id] = color
    return palette


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    classes: tuple[str, ...]
    lut: np.ndarray
    valid: np.ndarray
    splits: tuple[str, ...]
    ignore_index: int = 255

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def map_labels(self, raw: np.ndarray, source: str) -> np.ndarray:
        """Raw label values -> uint8 train ids; DataError if a value is not a legal raw value."""
        raw = np.asarray(raw)
        if raw.dtype != np.uint8:
            bad = np.unique(raw[(raw < 0) | (raw > 255)])
            if bad.size:
                raise DataError(f"{source}: label values {bad.tolist()} are outside 0..255 "
                                f"(expected raw {self.name} label ids)")
            raw = raw.astype(np.uint8)
        present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
        bad = present[~self.valid[present]]
        if bad.size:
            raise DataError(f"{source}: label values {bad.tolist()} are not valid {self.name} "
                            f"label ids (expected {_describe(self.valid)})")
        return self.lut[raw]


def _describe(valid: np.ndarray) -> str:
    """Compact text of a bool[256] mask, e.g. '0..20, 255'."""
    values = np.flatnonzero(valid)
    runs, start = [], values[0]
    for prev, cur in zip(values, list(values[1:]) + [None]):
        if cur is None or cur != prev + 1:
            runs.append(f"{start}..{prev}" if prev > start else f"{start}")
            start = cur
    return ", ".join(runs)


def _table(pairs: dict[int, int], valid_values) -> tuple[np.ndarray, np.ndarray]:
    lut = np.full(256, 255, np.uint8)
    for raw, train_id in pairs.items():
        lut[raw] = train_id
    valid = np.zeros(256, bool)
    valid[list(valid_values)] = True
    lut.setflags(write=False)
    valid.setflags(write=False)
    return lut, valid


def _ade20k() -> DatasetSpec:
    # reduce_zero_label: 0 = 'other' -> ignore, 1..150 -> 0..149.
    lut, valid = _table({i: i - 1 for i in range(1, 151)}, range(151))
    return DatasetSpec("ade20k", ADE20K_CLASSES, lut, valid, ("train", "val"))


def _pascal_voc() -> DatasetSpec:
    lut, valid = _table({i: i for i in range(21)}, [*range(21), 255])
    return DatasetSpec("pascal_voc", VOC_CLASSES, lut, valid, ("train", "val"))


def _cityscapes_like(name: str, splits: tuple[str, ...]) -> DatasetSpec:
    train = sorted((t, n) for n, _, t, _ in CITYSCAPES_LABELS if t != 255)
    classes = tuple(n for _, n in train)
    lut, valid = _table({i: t for _, i, t, _ in CITYSCAPES_LABELS}, range(34))
    return DatasetSpec(name, classes, lut, valid, splits)


SPECS: dict[str, DatasetSpec] = {
    "ade20k": _ade20k(),
    "pascal_voc": _pascal_voc(),
    "cityscapes": _cityscapes_like("cityscapes", ("train", "val")),
    # GTA V labels are Cityscapes labelIds; it is evaluated on Cityscapes val.
    "gta5": _cityscapes_like("gta5", ("train",)),
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; expected one of {sorted(SPECS)}") from None
