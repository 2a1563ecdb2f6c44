"""Class lists and raw-label -> train-id mappings of the benchmark datasets, and label views."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import DataError


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

# PASCAL Context: the 60 ids (of the 459-class full labels, 0 = unlabeled) kept by mmseg's
# converter, sorted; PASCAL_CONTEXT_IDS[i] -> train id i, every other id -> 0 (background).
PASCAL_CONTEXT_IDS = (
    0, 2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105,
    113, 115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308,
    324, 326, 347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)
PASCAL_CONTEXT_CLASSES = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat",
    "book", "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person",
    "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign",
    "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)
PASCAL_CONTEXT_NUM_IDS = 460  # full label ids 0..459

# COCO-Stuff-164k, in mmseg's COCOStuffDataset order: the 80 COCO things, then 91 stuff classes.
COCO_STUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence",
    "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog",
    "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house",
    "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net",
    "paper", "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield",
    "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea",
    "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)
# 0-indexed COCO-Stuff ids 0..181 that no annotation uses (unused COCO thing category ids - 1).
_COCO_STUFF_UNUSED = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
COCO_STUFF_IDS = tuple(i for i in range(182) if i not in _COCO_STUFF_UNUSED)
# The 80 COCO category ids (1-indexed) in increasing order, and COCO-Object's classes.
COCO_THING_IDS = tuple(i + 1 for i in COCO_STUFF_IDS[:80])
COCO_OBJECT_CLASSES = ("background", *COCO_STUFF_CLASSES[:80])

# ---------------------------------------------------------------- zero-shot prompt names
# The class names the SimZSS protocol (TCL's MMSegmentation datasets) puts in the text prompts,
# verbatim, one per class of the benchmark, in its train-id order. The tuples above stay the
# datasets' own names (fine-tuning metrics and readers use them). Background entries are kept so
# each table has its benchmark's length; zero-shot scoring leaves them out of the prompts.

# wysoczanska/clip_dinoiser segmentation/datasets/pascal_voc.py (PascalVOCDataset.CLASSES).
# Two words for 'diningtable' and 'pottedplant'; 'tvmonitor' stays one word there.
VOC_PROMPT_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa",
    "train", "tvmonitor",
)
# wysoczanska/clip_dinoiser segmentation/datasets/pascal_voc20.py (PascalVOCDataset20.CLASSES):
# the same names without 'background'.
VOC20_PROMPT_NAMES = VOC_PROMPT_NAMES[1:]
# wysoczanska/clip_dinoiser segmentation/datasets/pascal_context.py (PascalContextDataset.CLASSES).
PASCAL_CONTEXT_PROMPT_NAMES = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat",
    "book", "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person",
    "plate", "platform", "potted plant", "road", "rock", "sheep", "shelves", "sidewalk", "sign",
    "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)
# wysoczanska/clip_dinoiser segmentation/datasets/pascal_context.py (PascalContextDataset59.CLASSES):
# the same names without 'background'.
PASCAL_CONTEXT59_PROMPT_NAMES = PASCAL_CONTEXT_PROMPT_NAMES[1:]
# wysoczanska/clip_dinoiser segmentation/datasets/coco_stuff.py (COCOStuffDataset.CLASSES): the
# dataset's own names, suffixes included ('sky-other', 'desk-stuff', 'wall-brick', 'playingfield').
COCO_STUFF_PROMPT_NAMES = COCO_STUFF_CLASSES
# wysoczanska/clip_dinoiser segmentation/datasets/coco_object.py (COCOObjectDataset.CLASSES):
# background + COCO-Stuff's 80 things, with 'aeroplane' where COCO says 'airplane'.
COCO_OBJECT_PROMPT_NAMES = ("background", *("aeroplane" if c == "airplane" else c
                                            for c in COCO_STUFF_CLASSES[:80]))
# mmseg 0.x mmseg/datasets/ade.py (ADE20KDataset.CLASSES; clip_dinoiser's configs use the
# built-in dataset). Its 'bed ' has a trailing space, which the CLIP tokenizer drops.
ADE20K_PROMPT_NAMES = ADE20K_CLASSES
# mmseg 0.x mmseg/datasets/cityscapes.py (CityscapesDataset.CLASSES), the 19 train ids; GTA V
# is scored on the same classes.
CITYSCAPES_PROMPT_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
PROMPT_NAMES = {
    "pascal_voc": VOC_PROMPT_NAMES,
    "pascal_voc20": VOC20_PROMPT_NAMES,
    "pascal_context": PASCAL_CONTEXT_PROMPT_NAMES,
    "pascal_context59": PASCAL_CONTEXT59_PROMPT_NAMES,
    "coco_stuff": COCO_STUFF_PROMPT_NAMES,
    "coco_object": COCO_OBJECT_PROMPT_NAMES,
    "ade20k": ADE20K_PROMPT_NAMES,
    "cityscapes": CITYSCAPES_PROMPT_NAMES,
    "gta5": CITYSCAPES_PROMPT_NAMES,
}


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
    """A dataset's classes and raw id -> train id table (`lut`, legal raw ids: `valid`).

    The tables cover raw ids 0..len(lut)-1, at least 0..255; longer when raw ids exceed 255
    (PASCAL Context's full labels).
    """
    name: str
    classes: tuple[str, ...]
    lut: np.ndarray
    valid: np.ndarray
    splits: tuple[str, ...]
    ignore_index: int = 255

    def __post_init__(self):
        if not len(self.lut) == len(self.valid) >= 256:
            raise ValueError(f"{self.name}: lut and valid must have one equal length >= 256")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def map_labels(self, raw: np.ndarray, source: str) -> np.ndarray:
        """Raw label ids (any integer dtype) -> uint8 train ids; DataError if one is not legal."""
        raw = np.asarray(raw)
        if raw.dtype.kind not in "ui":
            raise DataError(f"{source}: label array has dtype {raw.dtype}, expected integer "
                            f"{self.name} label ids")
        size = len(self.lut)
        if raw.dtype != np.uint8:
            bad = np.unique(raw[(raw < 0) | (raw >= size)])
            if bad.size:
                raise DataError(f"{source}: label values {bad.tolist()} are outside "
                                f"0..{size - 1} (expected raw {self.name} label ids)")
        present = np.flatnonzero(np.bincount(raw.ravel(), minlength=size))
        bad = present[~self.valid[present]]
        if bad.size:
            raise DataError(f"{source}: label values {bad.tolist()} are not valid {self.name} "
                            f"label ids (expected {_describe(self.valid)})")
        return self.lut[raw]


def _describe(valid: np.ndarray) -> str:
    """Compact text of a bool mask, e.g. '0..20, 255'."""
    values = np.flatnonzero(valid)
    runs, start = [], values[0]
    for prev, cur in zip(values, list(values[1:]) + [None]):
        if cur is None or cur != prev + 1:
            runs.append(f"{start}..{prev}" if prev > start else f"{start}")
            start = cur
    return ", ".join(runs)


def _table(pairs: dict[int, int], valid_values, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    lut = np.full(size, 255, np.uint8)
    for raw, train_id in pairs.items():
        lut[raw] = train_id
    valid = np.zeros(size, bool)
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


def _pascal_context() -> DatasetSpec:
    kept = {raw: i for i, raw in enumerate(PASCAL_CONTEXT_IDS)}
    ids = range(PASCAL_CONTEXT_NUM_IDS)
    lut, valid = _table({raw: kept.get(raw, 0) for raw in ids}, ids, PASCAL_CONTEXT_NUM_IDS)
    return DatasetSpec("pascal_context", PASCAL_CONTEXT_CLASSES, lut, valid, ("train", "val"))


def _coco_stuff() -> DatasetSpec:
    pairs = {raw: i for i, raw in enumerate(COCO_STUFF_IDS)}
    lut, valid = _table(pairs, [*COCO_STUFF_IDS, 255])
    return DatasetSpec("coco_stuff", COCO_STUFF_CLASSES, lut, valid, ("val",))


def _coco_object() -> DatasetSpec:
    # Raw labels are rasterised COCO category ids, 0 where no instance is.
    pairs = {0: 0, **{cat: i for i, cat in enumerate(COCO_THING_IDS, 1)}}
    lut, valid = _table(pairs, pairs.keys())
    return DatasetSpec("coco_object", COCO_OBJECT_CLASSES, lut, valid, ("val",))


SPECS: dict[str, DatasetSpec] = {
    "ade20k": _ade20k(),
    "pascal_voc": _pascal_voc(),
    "cityscapes": _cityscapes_like("cityscapes", ("train", "val")),
    # GTA V labels are Cityscapes labelIds; it is evaluated on Cityscapes val.
    "gta5": _cityscapes_like("gta5", ("train",)),
    "pascal_context": _pascal_context(),
    # COCO train would need the 18 GB train2017.zip; both are zero-shot evaluation sets.
    "coco_stuff": _coco_stuff(),
    "coco_object": _coco_object(),
}


# Classification datasets (whole-image labels) and their splits: prepared and scored zero-shot, never fine-tuned on.
# ImageNet-1k's test labels are not public, so only its validation split is read.
IMAGENET = "imagenet"
CLASSIFICATION_SPLITS: dict[str, tuple[str, ...]] = {IMAGENET: ("val",)}


def get_spec(name: str) -> DatasetSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; expected one of {sorted(SPECS)}") from None


@dataclass(frozen=True)
class LabelView:
    """A prepared dataset scored on fewer classes: `lut` maps its train ids to the view's."""
    name: str
    base: str
    classes: tuple[str, ...]
    lut: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def remap(self, label):
        """Train ids of `base` (uint8 numpy array or torch tensor) -> the view's, same type."""
        if isinstance(label, np.ndarray):
            return self.lut[label]
        return label.new_tensor(self.lut)[label.long()]


def _without_background(name: str, base: str) -> LabelView:
    """`base` with its class 0 (background) ignored: 0 -> 255, k -> k - 1."""
    classes = SPECS[base].classes
    lut, _ = _table({k: k - 1 for k in range(1, len(classes))}, ())
    return LabelView(name, base, classes[1:], lut)


VIEWS: dict[str, LabelView] = {
    "pascal_voc20": _without_background("pascal_voc20", "pascal_voc"),
    "pascal_context59": _without_background("pascal_context59", "pascal_context"),
}


def get_view(name: str) -> LabelView:
    try:
        return VIEWS[name]
    except KeyError:
        raise KeyError(f"unknown label view {name!r}; expected one of {sorted(VIEWS)}") from None


def benchmark_classes(name: str) -> tuple[str, ...]:
    """Class names a benchmark (a dataset or a label view) is scored on, in train-id order."""
    if name in VIEWS:
        return VIEWS[name].classes
    if name in SPECS:
        return SPECS[name].classes
    raise KeyError(f"unknown benchmark {name!r}; expected one of {sorted(SPECS | VIEWS)}")


def has_background(name: str) -> bool:
    """Whether a benchmark scores a background class (its first), which a zero-shot threshold predicts."""
    return benchmark_classes(name)[0] == "background"
