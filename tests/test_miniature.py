import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from pipeline.datasets.miniature import generate
from pipeline.datasets.readers import list_samples, read_sample
from pipeline.datasets.specs import get_spec

COUNTS = {"ade20k": {"train": 4, "val": 2}, "pascal_voc": {"train": 4, "val": 3},
          "cityscapes": {"train": 3, "val": 2}, "gta5": {"train": 5}, "pascal_context": {"train": 2, "val": 3},
          "coco_stuff": {"val": 4}, "coco_object": {"val": 4}}


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    summary = generate(root, 11, COUNTS)
    return root, summary


def test_same_seed_same_bytes_other_seed_differs(mini, tmp_path):
    root, summary = mini
    assert summary == COUNTS
    assert generate(tmp_path / "again", 11, COUNTS) == COUNTS
    first, again = _files(root), _files(tmp_path / "again")
    assert sorted(first) == sorted(again) and first == again
    generate(tmp_path / "other", 12, COUNTS)
    other = _files(tmp_path / "other")
    assert sorted(other) == sorted(first) and all(other[n] != first[n] for n in first)


def test_official_file_names(mini):
    root, _ = mini
    assert sorted(_files(root)) == sorted([
        "ade20k/ADEChallengeData2016.zip", "pascal_voc/VOCtrainval_11-May-2012.tar",
        "cityscapes/leftImg8bit_trainvaltest.zip", "cityscapes/gtFine_trainvaltest.zip",
        "gta5/01_images.zip", "gta5/01_labels.zip", "gta5/02_images.zip", "gta5/02_labels.zip",
        "pascal_context/VOCtrainval_03-May-2010.tar", "pascal_context/trainval.tar.gz",
        "coco_stuff/val2017.zip", "coco_stuff/stuffthingmaps_trainval2017.zip",
        "coco_object/val2017.zip", "coco_object/annotations_trainval2017.zip"])
    with zipfile.ZipFile(root / "cityscapes/gtFine_trainvaltest.zip") as zf:
        names = set(zf.namelist())
        stem = "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_"
        assert {stem + s for s in ("labelIds.png", "color.png", "instanceIds.png", "polygons.json")} <= names
        polygons = json.loads(zf.read(stem + "polygons.json"))
        assert (polygons["imgHeight"], polygons["imgWidth"]) == (128, 256) and polygons["objects"]
        label = np.array(Image.open(io.BytesIO(zf.read(stem + "labelIds.png"))))
        instances = np.array(Image.open(io.BytesIO(zf.read(stem + "instanceIds.png"))))
        assert ((instances == label) | (instances // 1000 == label)).all()


@pytest.mark.parametrize("dataset", sorted(COUNTS))
def test_readable_by_readers_with_valid_labels(mini, dataset):
    root, _ = mini
    spec = get_spec(dataset)
    mismatched, values = 0, set()
    for split, count in COUNTS[dataset].items():
        refs = list_samples(dataset, root / dataset, split)
        assert len(refs) == count
        for ref in refs:
            sample = read_sample(ref)
            assert spec.valid[sample.label].all()
            values |= set(np.unique(sample.label).tolist())
            w, h = Image.open(io.BytesIO(sample.image)).size
            mismatched += sample.label.shape != (h, w)
            if dataset == "cityscapes":
                assert (h, w) == (128, 256)
            if dataset == "gta5":
                assert (h, w) == (120, 218)
            if dataset in ("ade20k", "pascal_voc", "pascal_context", "coco_stuff", "coco_object"):
                assert sample.image_ext == "jpg" and 96 <= h <= 160 and 120 <= w <= 200
    mapped = spec.lut[sorted(values)]
    assert (mapped != 255).sum() >= 3  # several real classes
    assert mismatched == (2 if dataset == "gta5" else 0)
    if dataset == "ade20k":
        assert 0 in values
    if dataset == "pascal_voc":
        assert {0, 255} <= values
    if dataset in ("cityscapes", "gta5"):
        assert (mapped == 255).any()  # void labelIds such as ego vehicle


def test_coco_object_instances_agree_with_the_coco_stuff_thing_maps(mini):
    """The two COCO sets share val2017; rasterised instances must give the stuff maps' things."""
    root, _ = mini
    stuff = {r.key: read_sample(r) for r in list_samples("coco_stuff", root / "coco_stuff", "val")}
    objects = {r.key: read_sample(r) for r in list_samples("coco_object", root / "coco_object", "val")}
    assert sorted(stuff) == sorted(objects)
    things = 0
    for key, obj in objects.items():
        assert obj.image == stuff[key].image
        stuff_ids = stuff[key].label.astype(np.int64)
        expected = np.where((stuff_ids < 91), stuff_ids + 1, 0)  # 0-indexed thing ids 0..90 -> category ids
        assert (obj.label == expected).all()
        things += int((expected > 0).sum())
    assert things > 0
