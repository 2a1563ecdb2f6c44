import numpy as np
import pytest
import torch
import torchvision

from pipeline.datasets.specs import (COCO_OBJECT_CLASSES, COCO_STUFF_CLASSES, COCO_STUFF_IDS,
                                     COCO_THING_IDS, PASCAL_CONTEXT_CLASSES, PASCAL_CONTEXT_IDS,
                                     SPECS, VIEWS, benchmark_classes,
                                     cityscapes_palette, get_spec, get_view, voc_palette)
from pipeline.errors import DataError


def _torchvision_table() -> dict[int, int]:
    """labelId -> trainId from torchvision (trainIds 255 and -1 mean ignore)."""
    return {c.id: (255 if c.train_id in (255, -1) else c.train_id)
            for c in torchvision.datasets.Cityscapes.classes if c.id >= 0}


def test_ade20k_zero_is_ignored_and_ids_shift_down():
    spec = get_spec("ade20k")
    raw = np.arange(151, dtype=np.uint8).reshape(1, -1)
    mapped = spec.map_labels(raw, "x.png")
    assert mapped[0, 0] == 255
    assert (mapped[0, 1:] == np.arange(150)).all()
    assert spec.num_classes == 150 and len(set(spec.classes)) == 150
    assert spec.classes[:5] == ("wall", "building", "sky", "floor", "tree")
    assert spec.classes[-2:] == ("clock", "flag")


def test_pascal_voc_keeps_255_as_ignore_and_identity_otherwise():
    spec = get_spec("pascal_voc")
    raw = np.array([[0, 1, 20, 255]], np.uint8)
    assert spec.map_labels(raw, "x.png").tolist() == [[0, 1, 20, 255]]
    assert spec.num_classes == 21 and spec.classes[0] == "background" and spec.classes[15] == "person"
    assert np.flatnonzero(spec.valid).tolist() == [*range(21), 255]


@pytest.mark.parametrize("name", ["cityscapes", "gta5"])
def test_cityscapes_label_ids_match_torchvision(name):
    spec = get_spec(name)
    table = _torchvision_table()
    raw = np.array(sorted(table), np.uint8)
    assert spec.map_labels(raw, "x.png").tolist() == [table[i] for i in sorted(table)]
    train = sorted((c.train_id, c.name) for c in torchvision.datasets.Cityscapes.classes
                   if c.train_id not in (255, -1))
    assert spec.classes == tuple(n for _, n in train)
    assert np.flatnonzero(spec.valid).tolist() == sorted(table)


def test_gta5_uses_the_cityscapes_table_and_only_trains():
    gta, city = get_spec("gta5"), get_spec("cityscapes")
    assert (gta.lut == city.lut).all() and gta.classes == city.classes
    assert gta.splits == ("train",) and city.splits == ("train", "val")
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 34, (20, 30)).astype(np.uint8)
    table = _torchvision_table()
    expected = np.vectorize(table.get)(raw)
    assert (gta.map_labels(raw, "labels/00001.png") == expected).all()


def test_cityscapes_palette_matches_torchvision_colours():
    palette = cityscapes_palette()
    for c in torchvision.datasets.Cityscapes.classes:
        if c.id >= 0:
            assert tuple(palette[c.id]) == c.color, c.name


def test_voc_palette_known_entries():
    palette = voc_palette()
    assert tuple(palette[0]) == (0, 0, 0)
    assert tuple(palette[1]) == (128, 0, 0)  # aeroplane
    assert tuple(palette[15]) == (192, 128, 128)  # person
    assert tuple(palette[255]) == (224, 224, 192)  # border
    assert len({tuple(c) for c in palette}) == 256


@pytest.mark.parametrize("name", sorted(SPECS))
def test_invalid_values_raise_naming_file_and_values(name):
    spec = get_spec(name)
    invalid = np.flatnonzero(~spec.valid)
    bad = int(invalid[0]) if invalid.size else len(spec.lut)
    raw = np.zeros((4, 4), np.uint16)
    raw[1, 2] = bad
    with pytest.raises(DataError) as err:
        spec.map_labels(raw, "some/dir/label_0007.png")
    assert "some/dir/label_0007.png" in str(err.value) and str(bad) in str(err.value)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_lut_maps_valid_values_into_classes_or_ignore(name):
    spec = get_spec(name)
    mapped = spec.lut[np.flatnonzero(spec.valid)]
    assert ((mapped < spec.num_classes) | (mapped == spec.ignore_index)).all()
    assert set(range(spec.num_classes)) <= set(mapped.tolist())
    assert len(set(spec.classes)) == spec.num_classes


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64])
def test_wide_integer_labels_are_mapped_and_range_checked(dtype):
    spec = get_spec("pascal_voc")
    assert spec.map_labels(np.array([[0, 20, 255]], dtype), "x.png").tolist() == [[0, 20, 255]]
    with pytest.raises(DataError, match=r"x\.png.*\[256\].*outside 0\.\.255"):
        spec.map_labels(np.array([[0, 256]], dtype), "x.png")
    if np.issubdtype(dtype, np.signedinteger):
        with pytest.raises(DataError, match=r"x\.png.*\[-1\]"):
            spec.map_labels(np.array([[-1, 3]], dtype), "x.png")


def test_non_integer_labels_are_rejected():
    with pytest.raises(DataError, match=r"x\.png.*float32"):
        get_spec("ade20k").map_labels(np.zeros((2, 2), np.float32), "x.png")


def test_pascal_context_maps_459_full_ids_to_60():
    spec = get_spec("pascal_context")
    # Full label ids (labels.txt of PASCAL Context) -> train ids, written out by hand.
    table = {0: 0, 1: 0, 2: 1, 3: 0, 9: 2, 100: 0, 258: 34, 259: 35, 284: 37, 300: 0, 360: 47,
             427: 55, 457: 0, 458: 59, 459: 0}
    raw = np.array([list(table)], np.uint16)
    assert spec.map_labels(raw, "trainval/x.mat").tolist() == [list(table.values())]
    names = {2: "aeroplane", 258: "motorbike", 259: "mountain", 284: "person", 360: "sky",
             427: "tvmonitor", 458: "wood"}
    assert {raw: spec.classes[table[raw]] for raw in names} == names
    assert spec.num_classes == 60 and len(spec.lut) == 460 and spec.splits == ("train", "val")
    assert PASCAL_CONTEXT_CLASSES[0] == "background" and len(PASCAL_CONTEXT_IDS) == 60
    with pytest.raises(DataError, match=r"trainval/x\.mat.*\[460, 1000\].*0\.\.459"):
        spec.map_labels(np.array([[460, 1000, 5]], np.uint16), "trainval/x.mat")


def test_coco_stuff_maps_182_ids_to_171_contiguous():
    spec = get_spec("coco_stuff")
    table = {0: 0, 10: 10, 12: 11, 24: 23, 26: 24, 27: 25, 30: 26, 43: 39, 45: 40, 64: 59,
             66: 60, 69: 61, 71: 62, 81: 72, 83: 73, 89: 79, 91: 80, 92: 81, 181: 170, 255: 255}
    raw = np.array([list(table)], np.uint8)
    assert spec.map_labels(raw, "val2017/x.png").tolist() == [list(table.values())]
    assert spec.num_classes == 171 == len(COCO_STUFF_CLASSES) == len(COCO_STUFF_IDS)
    assert spec.classes[:3] == ("person", "bicycle", "car") and spec.classes[79] == "toothbrush"
    assert spec.classes[80] == "banner" and spec.classes[-1] == "wood"
    assert spec.splits == ("val",)
    for unused in (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90, 182, 254):
        with pytest.raises(DataError, match=rf"val2017/x\.png.*\[{unused}\]"):
            spec.map_labels(np.array([[0, unused]], np.uint8), "val2017/x.png")


def test_coco_object_maps_category_ids_to_background_plus_80():
    spec = get_spec("coco_object")
    table = {0: 0, 1: 1, 11: 11, 13: 12, 18: 17, 25: 24, 27: 25, 31: 27, 44: 40, 46: 41,
             67: 61, 70: 62, 72: 63, 82: 73, 84: 74, 90: 80}
    raw = np.array([list(table)], np.uint8)
    assert spec.map_labels(raw, "j.json").tolist() == [list(table.values())]
    names = {1: "person", 11: "fire hydrant", 13: "stop sign", 18: "dog", 44: "bottle",
             67: "dining table", 70: "toilet", 84: "book", 90: "toothbrush"}
    assert {cat: spec.classes[table[cat]] for cat in names} == names
    assert COCO_OBJECT_CLASSES[0] == "background" and spec.num_classes == 81
    assert len(COCO_THING_IDS) == 80 and COCO_THING_IDS[:12] == (*range(1, 12), 13)
    for unused in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91, 255):
        with pytest.raises(DataError, match=rf"\[{unused}\]"):
            spec.map_labels(np.array([[unused]], np.uint8), "j.json")


def test_views_drop_background():
    voc20, context59 = get_view("pascal_voc20"), get_view("pascal_context59")
    assert (voc20.base, context59.base) == ("pascal_voc", "pascal_context")
    assert voc20.classes == get_spec("pascal_voc").classes[1:] and voc20.classes[0] == "aeroplane"
    assert context59.classes[0] == "aeroplane" and context59.classes[-1] == "wood"
    train_ids = np.array([[0, 1, 2, 20, 255]], np.uint8)
    assert voc20.remap(train_ids).tolist() == [[255, 0, 1, 19, 255]]
    train_ids = torch.tensor([[0, 1, 37, 59, 255]], dtype=torch.uint8)
    remapped = context59.remap(train_ids)
    assert remapped.dtype == torch.uint8 and remapped.tolist() == [[255, 0, 36, 58, 255]]


@pytest.mark.parametrize("name, count", [
    ("pascal_voc", 21), ("pascal_voc20", 20), ("pascal_context", 60), ("pascal_context59", 59),
    ("coco_stuff", 171), ("coco_object", 81), ("cityscapes", 19), ("ade20k", 150)])
def test_benchmark_classes(name, count):
    classes = benchmark_classes(name)
    assert len(classes) == len(set(classes)) == count


def test_unknown_view_or_benchmark_names_the_allowed_ones():
    with pytest.raises(KeyError, match="pascal_voc20"):
        get_view("pascal_voc")
    with pytest.raises(KeyError, match="coco_object.*pascal_context59"):
        benchmark_classes("voc")
    assert not set(VIEWS) & set(SPECS)


def test_unknown_dataset_names_the_allowed_ones():
    with pytest.raises((KeyError, ValueError)) as err:
        get_spec("coco")
    assert "coco" in str(err.value) and "ade20k" in str(err.value)
