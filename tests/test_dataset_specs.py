import numpy as np
import pytest
import torchvision

from pipeline.datasets.specs import SPECS, DataError, cityscapes_palette, get_spec, voc_palette

ALL_RAW = np.arange(256, dtype=np.uint8)


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
    bad = int(np.flatnonzero(~spec.valid)[0])
    raw = np.zeros((4, 4), np.uint8)
    raw[1, 2] = bad
    with pytest.raises(DataError) as err:
        spec.map_labels(raw, "some/dir/label_0007.png")
    assert "some/dir/label_0007.png" in str(err.value) and str(bad) in str(err.value)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_lut_maps_valid_values_into_classes_or_ignore(name):
    spec = get_spec(name)
    mapped = spec.lut[ALL_RAW[spec.valid]]
    assert ((mapped < spec.num_classes) | (mapped == spec.ignore_index)).all()
    assert set(range(spec.num_classes)) <= set(mapped.tolist())


def test_unknown_dataset_names_the_allowed_ones():
    with pytest.raises((KeyError, ValueError)) as err:
        get_spec("coco")
    assert "coco" in str(err.value) and "ade20k" in str(err.value)
