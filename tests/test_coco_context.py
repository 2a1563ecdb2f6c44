"""PASCAL Context, COCO-Stuff, COCO-Object and COCO captions, from tiny archives in the
official layouts, prepared into shards and read back."""
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from pycocotools import mask as coco_mask

from pipeline.datasets.miniature.formats import encode_jpeg, encode_png, write_tar, write_zip
from pipeline.datasets.readers import CaptionRef, list_captions, list_samples
from pipeline.datasets.shards import load_split, prepare_dataset
from pipeline.datasets.specs import get_view
from pipeline.errors import DataError

# pycocotools 2.0.11's mask.decode trips a numpy 2 DeprecationWarning inside the library.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def _rgb(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _extract(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _expected(raw: np.ndarray, table: dict[int, int]) -> np.ndarray:
    return np.vectorize(table.__getitem__, otypes=[np.uint8])(raw)


def _every_value(rng, values, h, w, dtype) -> np.ndarray:
    """An HxW label holding every one of `values`, shuffled."""
    label = np.resize(np.array(values, dtype), h * w)
    rng.shuffle(label)
    return label.reshape(h, w)


def _labels(out: Path, split: str, view=None) -> dict[str, np.ndarray]:
    return {key: label.numpy() for key, _, label in load_split(out, split, view)}


# ---------------------------------------------------------------- PASCAL Context

# Full (459-class) label id -> train id, by hand from labels.txt and the 59 kept classes:
# 1 'accordion' and 100 'crane' are not kept -> background; 458 'wood' is the last class.
CONTEXT = {0: 0, 1: 0, 2: 1, 9: 2, 100: 0, 259: 35, 284: 37, 360: 47, 427: 55, 458: 59, 459: 0}
CONTEXT_SPLITS = {"train": ("2008_000002", "2008_000003"), "val": ("2008_000007",)}


def _mat(label_map: np.ndarray) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"LabelMap": label_map}, do_compression=True)
    return buf.getvalue()


def _write_tar_gz(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        folder = tarfile.TarInfo("trainval")
        folder.type = tarfile.DIRTYPE
        tf.addfile(folder)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _context(root: Path, layout: str, override: dict | None = None) -> dict[str, np.ndarray]:
    """VOCtrainval_03-May-2010.tar + trainval.tar.gz (or their folders) under `root`; the
    raw LabelMap of each key, `override` replacing some."""
    rng = np.random.default_rng(0)
    base, voc, raw = "VOCdevkit/VOC2010", {}, {}
    for split, keys in CONTEXT_SPLITS.items():
        voc[f"{base}/ImageSets/Main/{split}.txt"] = "".join(f"{k}\n" for k in keys).encode()
        for key in keys:
            raw[key] = _every_value(rng, list(CONTEXT), 5, 7, np.uint16)
            voc[f"{base}/JPEGImages/{key}.jpg"] = encode_jpeg(_rgb(rng, 5, 7))
    voc[f"{base}/JPEGImages/2008_000099.jpg"] = encode_jpeg(_rgb(rng, 5, 7))  # in no list
    raw.update(override or {})
    context = {f"trainval/{key}.mat": _mat(label) for key, label in raw.items()}
    root.mkdir(parents=True, exist_ok=True)
    if layout == "archive":
        write_tar(root / "VOCtrainval_03-May-2010.tar", voc)
        _write_tar_gz(root / "trainval.tar.gz", context)
    else:
        _extract(root, {**voc, **context})
    return raw


@pytest.mark.parametrize("layout, workers", [("archive", 2), ("folder", 1)])
def test_pascal_context_prepares_60_classes(tmp_path, layout, workers):
    raw = _context(tmp_path / "src", layout)
    out = tmp_path / "out"
    manifest = prepare_dataset("pascal_context", tmp_path / "src", out, 2, workers)
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {"train": 2, "val": 1}
    for split, keys in CONTEXT_SPLITS.items():
        labels = _labels(out, split)
        assert list(labels) == list(keys)
        for key in keys:
            assert (labels[key] == _expected(raw[key], CONTEXT)).all()
    context59 = {raw_id: 255 if t == 0 else t - 1 for raw_id, t in CONTEXT.items()}
    [(key, label)] = _labels(out, "val", get_view("pascal_context59")).items()
    assert (label == _expected(raw[key], context59)).all()


def test_pascal_context_illegal_id_names_the_mat(tmp_path):
    bad = np.zeros((5, 7), np.uint16)
    bad[2, 3] = 460
    _context(tmp_path / "src", "archive", {"2008_000003": bad})
    with pytest.raises(DataError, match=r"trainval\.tar\.gz::trainval/2008_000003\.mat.*\[460\]"):
        prepare_dataset("pascal_context", tmp_path / "src", tmp_path / "out", 8, 1)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layout", ["archive", "folder"])
def test_pascal_context_missing_mat_names_it_and_the_image(tmp_path, layout):
    _context(tmp_path, layout)
    name = "trainval/2008_000003.mat"
    if layout == "archive":
        with tarfile.open(tmp_path / "trainval.tar.gz") as tf:
            files = {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}
        del files[name]
        _write_tar_gz(tmp_path / "trainval.tar.gz", files)
    else:
        (tmp_path / name).unlink()
    with pytest.raises(DataError, match=rf"{name} missing.*JPEGImages/2008_000003\.jpg"):
        list_samples("pascal_context", tmp_path, "train")


def test_pascal_context_mat_without_label_map(tmp_path):
    _context(tmp_path, "folder")
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"GTcls": np.zeros((5, 7), np.uint16)})
    (tmp_path / "trainval/2008_000007.mat").write_bytes(buf.getvalue())
    with pytest.raises(DataError, match=r"2008_000007\.mat.*LabelMap"):
        prepare_dataset("pascal_context", tmp_path, tmp_path / "out", 8, 1)


def test_corrupt_tar_gz_names_it(tmp_path):
    _context(tmp_path, "archive")
    data = (tmp_path / "trainval.tar.gz").read_bytes()
    (tmp_path / "trainval.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"trainval\.tar\.gz: cannot open archive"):
        list_samples("pascal_context", tmp_path, "val")


# ---------------------------------------------------------------- COCO-Stuff

# 0-indexed COCO-Stuff id -> train id, by hand: ids 11, 25, 28, 29, 44, 65, 67, 68, 70, 82
# and 90 are unused, so e.g. 12 (stop sign) -> 11 and 91 (banner, the first stuff) -> 80.
STUFF = {0: 0, 10: 10, 12: 11, 26: 24, 89: 79, 91: 80, 92: 81, 181: 170, 255: 255}
STUFF_KEYS = ("000000000139", "000000000285")


def _coco_stuff(root: Path, layout: str, override: dict | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    images, maps, raw = {}, {}, {}
    for key in STUFF_KEYS:
        raw[key] = _every_value(rng, list(STUFF), 6, 8, np.uint8)
        images[f"val2017/{key}.jpg"] = encode_jpeg(_rgb(rng, 6, 8))
    raw.update(override or {})
    maps = {f"val2017/{key}.png": encode_png(label) for key, label in raw.items()}
    maps["train2017/000000000009.png"] = encode_png(np.full((6, 8), 11, np.uint8))  # unread
    root.mkdir(parents=True, exist_ok=True)
    if layout == "zip":
        write_zip(root / "val2017.zip", images)
        write_zip(root / "stuffthingmaps_trainval2017.zip", maps)
    else:  # both extracted in place: they share val2017/
        _extract(root, {**images, **maps})
    return raw


@pytest.mark.parametrize("layout", ["zip", "folder"])
def test_coco_stuff_prepares_171_classes(tmp_path, layout):
    raw = _coco_stuff(tmp_path / "src", layout)
    manifest = prepare_dataset("coco_stuff", tmp_path / "src", tmp_path / "out", 8, 1)
    assert list(manifest["splits"]) == ["val"] and len(manifest["classes"]) == 171
    labels = _labels(tmp_path / "out", "val")
    assert list(labels) == list(STUFF_KEYS)
    for key in STUFF_KEYS:
        assert (labels[key] == _expected(raw[key], STUFF)).all()


def test_coco_stuff_unused_id_names_the_png(tmp_path):
    bad = np.zeros((6, 8), np.uint8)
    bad[5, 7] = 11
    _coco_stuff(tmp_path, "zip", {"000000000285": bad})
    with pytest.raises(DataError, match=r"val2017/000000000285\.png.*\[11\]"):
        prepare_dataset("coco_stuff", tmp_path, tmp_path / "out", 8, 1)


# ---------------------------------------------------------------- COCO-Object and captions

H, W = 10, 12
A, B, UNLISTED = 139, 285, 632  # image ids; B has no instance annotations


def _key(image_id: int) -> str:
    return f"{image_id:012d}"


def _rect(x0, y0, x1, y1) -> list[float]:
    """Polygon of an axis-aligned rectangle; pycocotools fills pixels [y0:y1, x0:x1]."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _bottle_mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[[4, 5, 6, 9], [8, 8, 9, 0]] = 1
    return mask


def _ann(ann_id: int, category: int, area: float, segmentation, crowd: int = 0) -> dict:
    return {"id": ann_id, "image_id": A, "category_id": category, "iscrowd": crowd,
            "area": area, "segmentation": segmentation}


def _instances() -> list[dict]:
    """Image A's instance annotations (in id order) with the areas painting sorts by."""
    bottle = coco_mask.encode(np.asfortranarray(_bottle_mask()))["counts"].decode()
    return [
        _ann(1, 1, 56.0, [_rect(1, 1, 9, 8)]),  # person
        _ann(2, 18, 10.0, [_rect(3, 2, 6, 5), _rect(6, 6, 7, 7)]),  # dog, two parts
        # crowd toothbrush, uncompressed RLE: rows 7..9 of columns 0..4, column-major by hand
        _ann(3, 90, 15.0, {"size": [H, W], "counts": [7, 3, 7, 3, 7, 3, 7, 3, 7, 3, 70]}, 1),
        _ann(4, 44, 4.0, {"size": [H, W], "counts": bottle}),  # bottle, compressed RLE
        _ann(5, 13, 4.0, [_rect(10, 1, 12, 3)]),  # stop sign, area ties with 4
        _ann(6, 3, 4.0, [_rect(9, 0, 11, 2)]),  # car, area ties with 4 and 5
    ]


def _expected_a() -> np.ndarray:
    """Image A's COCO-Object train ids, painted by hand: larger areas first, equal areas in
    id order. Train ids: person 1, car 3, stop sign 12, dog 17, bottle 40, toothbrush 80."""
    label = np.zeros((H, W), np.uint8)
    label[1:8, 1:9] = 1  # person, 56
    label[7:10, 0:5] = 80  # toothbrush crowd, 15
    label[2:5, 3:6] = label[6:7, 6:7] = 17  # dog, 10
    label[_bottle_mask() > 0] = 40  # bottle, 4 (id 4)
    label[1:3, 10:12] = 12  # stop sign, 4 (id 5)
    label[0:2, 9:11] = 3  # car, 4 (id 6)
    return label


def _image_entries(height_a: int = H) -> list[dict]:
    return [{"id": A, "file_name": f"{_key(A)}.jpg", "height": height_a, "width": W},
            {"id": B, "file_name": f"{_key(B)}.jpg", "height": 6, "width": 8}]


CAPTIONS = [
    {"id": 50, "image_id": A, "caption": " A man walks his dog.\n"},
    {"id": 7, "image_id": A, "caption": "A person with a dog and a car."},
    {"id": 20, "image_id": B, "caption": "An empty room. "},
]


def _coco(root: Path, layout: str, split: str = "val", annotations=None, images=None,
          captions=None, drop: str | None = None) -> None:
    """{split}2017.zip and annotations_trainval2017.zip (or both extracted) under `root`."""
    rng = np.random.default_rng(2)
    images = _image_entries() if images is None else images
    files = {f"{split}2017/{_key(A)}.jpg": encode_jpeg(_rgb(rng, H, W)),
             f"{split}2017/{_key(B)}.jpg": encode_jpeg(_rgb(rng, 6, 8)),
             f"{split}2017/{_key(UNLISTED)}.jpg": encode_jpeg(_rgb(rng, 4, 4))}
    files.pop(drop, None)
    instances = {"images": images, "annotations": _instances() if annotations is None
                 else annotations, "categories": []}
    captions = {"images": images + [{"id": UNLISTED, "file_name": f"{_key(UNLISTED)}.jpg",
                                     "height": 4, "width": 4}],
                "annotations": CAPTIONS if captions is None else captions}
    notes = {f"annotations/instances_{split}2017.json": json.dumps(instances).encode(),
             f"annotations/captions_{split}2017.json": json.dumps(captions).encode()}
    root.mkdir(parents=True, exist_ok=True)
    if layout == "zip":
        write_zip(root / f"{split}2017.zip", files)
        write_zip(root / "annotations_trainval2017.zip", notes)
    else:
        _extract(root, {**files, **notes})


@pytest.mark.parametrize("order", ["ids", "reversed", "shuffled"])
def test_coco_object_rasterises_instances_smaller_on_top(tmp_path, order):
    annotations = _instances()
    if order == "reversed":
        annotations.reverse()
    elif order == "shuffled":
        annotations = [annotations[i] for i in (3, 0, 5, 2, 4, 1)]
    _coco(tmp_path / "src", "zip", annotations=annotations)
    workers = 2 if order == "ids" else 1
    manifest = prepare_dataset("coco_object", tmp_path / "src", tmp_path / "out", 1, workers)
    assert list(manifest["splits"]) == ["val"] and manifest["classes"][17] == "dog"
    labels = _labels(tmp_path / "out", "val")
    assert list(labels) == [_key(A), _key(B)]  # only the JSON's images
    assert (labels[_key(A)] == _expected_a()).all()
    assert (labels[_key(B)] == 0).all() and labels[_key(B)].shape == (6, 8)


def test_coco_object_extracted_folders(tmp_path):
    _coco(tmp_path / "src", "folder")
    prepare_dataset("coco_object", tmp_path / "src", tmp_path / "out", 8, 1)
    assert (_labels(tmp_path / "out", "val")[_key(A)] == _expected_a()).all()


def test_coco_object_unknown_category_names_the_json(tmp_path):
    annotations = _instances()
    annotations[2]["category_id"] = 12  # unused in COCO
    _coco(tmp_path, "zip", annotations=annotations)
    with pytest.raises(DataError, match=r"instances_val2017\.json.*annotation 3.*category id 12"):
        list_samples("coco_object", tmp_path, "val")


def test_coco_object_missing_jpg_names_it(tmp_path):
    _coco(tmp_path, "zip", drop=f"val2017/{_key(B)}.jpg")
    with pytest.raises(DataError, match=rf"val2017/{_key(B)}\.jpg missing.*image id {B}"):
        list_samples("coco_object", tmp_path, "val")


def test_coco_object_image_size_differing_from_json_names_both_files(tmp_path):
    images = _image_entries()
    images[1]["height"] = 7  # the jpg is 8x6
    _coco(tmp_path, "zip", images=images)
    with pytest.raises(DataError, match=rf"instances_val2017\.json.*8x7.*{_key(B)}\.jpg.*8x6"):
        prepare_dataset("coco_object", tmp_path, tmp_path / "out", 8, 1)


def test_coco_object_rle_of_another_size_names_the_annotation(tmp_path):
    _coco(tmp_path, "zip", images=_image_entries(height_a=H + 1))
    with pytest.raises(DataError, match=rf"instances_val2017\.json: annotation 3 of image "
                                        rf"{_key(A)} is 12x10 \(WxH\), its image 12x11"):
        prepare_dataset("coco_object", tmp_path, tmp_path / "out", 8, 1)


@pytest.mark.parametrize("layout, split", [("zip", "val"), ("folder", "train")])
def test_captions_grouped_in_annotation_order(tmp_path, layout, split):
    _coco(tmp_path, layout, split)
    refs = list_captions(tmp_path, split)
    prefix = f"{tmp_path}/{split}2017.zip::" if layout == "zip" else f"{tmp_path}/"
    assert refs == [
        CaptionRef(_key(A), A, f"{prefix}{split}2017/{_key(A)}.jpg",
                   ("A person with a dog and a car.", "A man walks his dog.")),
        CaptionRef(_key(B), B, f"{prefix}{split}2017/{_key(B)}.jpg", ("An empty room.",)),
    ]  # UNLISTED has no caption


def test_caption_of_unknown_image_names_it(tmp_path):
    _coco(tmp_path, "zip", captions=[*CAPTIONS, {"id": 99, "image_id": 4242, "caption": "x"}])
    with pytest.raises(DataError, match=r"captions_val2017\.json: annotation 99.*4242"):
        list_captions(tmp_path, "val")


def test_captioned_image_missing_from_archive_names_it(tmp_path):
    _coco(tmp_path, "zip", drop=f"val2017/{_key(B)}.jpg")
    with pytest.raises(DataError, match=rf"val2017/{_key(B)}\.jpg missing"):
        list_captions(tmp_path, "val")


def test_captions_unknown_split_and_malformed_json(tmp_path):
    with pytest.raises(DataError, match="'test'"):
        list_captions(tmp_path, "test")
    _coco(tmp_path, "folder", captions=[{"id": 1, "image_id": A}])
    with pytest.raises(DataError, match=r"captions_val2017\.json: malformed.*caption"):
        list_captions(tmp_path, "val")
