"""Readers against small datasets written by the tests in the exact official layouts."""
import io
import multiprocessing
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.datasets.miniature.formats import encode_jpeg, encode_png, write_tar, write_zip
from pipeline.datasets.readers import list_samples, read_bytes, read_sample
from pipeline.datasets.specs import cityscapes_palette, voc_palette
from pipeline.errors import DataError


def _rgb(rng, h=6, w=8):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _labels(rng, values, h=6, w=8):
    return rng.choice(np.asarray(values, np.uint8), (h, w))


def _extract(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _store(root: Path, files: dict[str, bytes], layout: str, archive: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if layout == "folder":
        _extract(root, files)
    elif layout == "tar":
        write_tar(root / f"{archive}.tar", files)
    else:
        write_zip(root / f"{archive}.zip", files)


def _ade_files(rng, counts=(("training", "train", 3), ("validation", "val", 2))):
    files, labels = {}, {}
    for sub, prefix, n in counts:
        for i in range(1, n + 1):
            key = f"ADE_{prefix}_{i:08d}"
            labels[key] = _labels(rng, range(151))
            files[f"ADEChallengeData2016/images/{sub}/{key}.jpg"] = encode_jpeg(_rgb(rng))
            files[f"ADEChallengeData2016/annotations/{sub}/{key}.png"] = encode_png(labels[key])
    return files, labels


def _voc_files(rng, train=("2007_000032", "2008_000002"), val=("2007_000033",)):
    base, files, labels = "VOCdevkit/VOC2012", {}, {}
    for key in (*train, *val):
        labels[key] = _labels(rng, [*range(21), 255])
        files[f"{base}/JPEGImages/{key}.jpg"] = encode_jpeg(_rgb(rng))
        files[f"{base}/SegmentationClass/{key}.png"] = encode_png(labels[key], voc_palette())
    for split, keys in (("train", train), ("val", val)):
        files[f"{base}/ImageSets/Segmentation/{split}.txt"] = "".join(f"{k}\n" for k in keys).encode()
    return files, labels


def _inner(path: str, root: Path) -> str:
    """Name inside the archive, or path relative to the dataset root for a folder."""
    return path.split("::", 1)[1] if "::" in path else Path(path).relative_to(root).as_posix()


def _check(root, refs, files, labels, ext):
    assert [r.key for r in refs] == sorted(labels)
    for ref in refs:
        sample = read_sample(ref)
        assert sample.image == files[_inner(ref.image_path, root)] and sample.image_ext == ext
        assert sample.label.dtype == np.uint8
        assert (sample.label == labels[ref.key]).all()
        assert sample.image_source == ref.image_path and sample.label_source == ref.label_path


@pytest.mark.parametrize("layout", ["zip", "folder"])
def test_ade20k(tmp_path, layout):
    files, labels = _ade_files(np.random.default_rng(0))
    _store(tmp_path, files, layout, "ADEChallengeData2016")
    train = list_samples("ade20k", tmp_path, "train")
    val = list_samples("ade20k", tmp_path, "val")
    _check(tmp_path, train, files, {k: v for k, v in labels.items() if "train" in k}, "jpg")
    _check(tmp_path, val, files, {k: v for k, v in labels.items() if "val" in k}, "jpg")
    if layout == "zip":
        assert train[0].image_path == (f"{tmp_path}/ADEChallengeData2016.zip::ADEChallengeData2016/"
                                       "images/training/ADE_train_00000001.jpg")


@pytest.mark.parametrize("layout", ["tar", "zip", "folder"])
def test_pascal_voc_palette_labels_read_as_indices(tmp_path, layout):
    files, labels = _voc_files(np.random.default_rng(1))
    _store(tmp_path, files, layout, "VOCtrainval_11-May-2012")
    refs = list_samples("pascal_voc", tmp_path, "train")
    _check(tmp_path, refs, files, {k: labels[k] for k in ("2007_000032", "2008_000002")}, "jpg")
    assert [r.key for r in list_samples("pascal_voc", tmp_path, "val")] == ["2007_000033"]
    assert any((labels[k] == 255).any() for k in labels)


def _cityscapes_files(rng):
    images, gt, labels = {}, {}, {}
    for split, city, n in (("train", "aachen", 2), ("train", "zurich", 1), ("val", "lindau", 2)):
        for i in range(n):
            key = f"{city}_{i:06d}_000019"
            labels[key] = _labels(rng, range(34))
            images[f"leftImg8bit/{split}/{city}/{key}_leftImg8bit.png"] = encode_png(_rgb(rng))
            stem = f"gtFine/{split}/{city}/{key}_gtFine_"
            gt[stem + "labelIds.png"] = encode_png(labels[key])
            gt[stem + "color.png"] = encode_png(cityscapes_palette()[labels[key]])
            gt[stem + "instanceIds.png"] = encode_png(labels[key].astype(np.uint16) * 1000)
            gt[stem + "polygons.json"] = b'{"imgHeight": 6, "imgWidth": 8, "objects": []}'
    return images, gt, labels


@pytest.mark.parametrize("layout", ["zip", "folder"])
def test_cityscapes_reads_label_ids(tmp_path, layout):
    images, gt, labels = _cityscapes_files(np.random.default_rng(2))
    _store(tmp_path, images, layout, "leftImg8bit_trainvaltest")
    _store(tmp_path, gt, layout, "gtFine_trainvaltest")
    train = list_samples("cityscapes", tmp_path, "train")
    _check(tmp_path, train, images, {k: v for k, v in labels.items() if "lindau" not in k}, "png")
    assert train[0].label_path.endswith("gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png")
    assert [r.key for r in list_samples("cityscapes", tmp_path, "val")] == [
        "lindau_000000_000019", "lindau_000001_000019"]


def _gta_files(rng, n=4):
    images, labels, arrays = {}, {}, {}
    for i in range(1, n + 1):
        arrays[f"{i:05d}"] = _labels(rng, range(34))
        images[f"images/{i:05d}.png"] = encode_png(_rgb(rng))
        labels[f"labels/{i:05d}.png"] = encode_png(arrays[f"{i:05d}"], cityscapes_palette())
    return images, labels, arrays


def test_gta5_parts_any_subset(tmp_path):
    images, labels, arrays = _gta_files(np.random.default_rng(3))
    for part, keys in (("01", ["00001", "00002"]), ("02", ["00003", "00004"])):
        write_zip(tmp_path / f"{part}_images.zip", {f"images/{k}.png": images[f"images/{k}.png"] for k in keys})
        write_zip(tmp_path / f"{part}_labels.zip", {f"labels/{k}.png": labels[f"labels/{k}.png"] for k in keys})
    refs = list_samples("gta5", tmp_path, "train")
    _check(tmp_path, refs, images, arrays, "png")
    assert refs[2].image_path.startswith(f"{tmp_path}/02_images.zip::")
    for name in ("01_images.zip", "01_labels.zip"):
        (tmp_path / name).unlink()
    assert [r.key for r in list_samples("gta5", tmp_path, "train")] == ["00003", "00004"]


def test_gta5_folder(tmp_path):
    images, labels, arrays = _gta_files(np.random.default_rng(4), n=2)
    _extract(tmp_path, {**images, **labels})
    _check(tmp_path, list_samples("gta5", tmp_path, "train"), images, arrays, "png")


def test_gta5_has_no_val_split(tmp_path):
    with pytest.raises(DataError, match=r"'val'.*\['train'\]"):
        list_samples("gta5", tmp_path, "val")


def test_missing_dataset_names_what_was_looked_for(tmp_path):
    with pytest.raises(DataError, match="ADEChallengeData2016.zip"):
        list_samples("ade20k", tmp_path, "train")


def test_missing_split_list(tmp_path):
    files, _ = _voc_files(np.random.default_rng(5))
    del files["VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"]
    _store(tmp_path, files, "tar", "VOCtrainval_11-May-2012")
    with pytest.raises(DataError, match="ImageSets/Segmentation/val.txt"):
        list_samples("pascal_voc", tmp_path, "val")


def test_empty_split(tmp_path):
    files, _ = _voc_files(np.random.default_rng(6), val=())
    _store(tmp_path, files, "tar", "VOCtrainval_11-May-2012")
    with pytest.raises(DataError, match="'val'.*empty"):
        list_samples("pascal_voc", tmp_path, "val")


def test_listed_image_missing_names_it(tmp_path):
    files, _ = _voc_files(np.random.default_rng(7))
    del files["VOCdevkit/VOC2012/JPEGImages/2008_000002.jpg"]
    _store(tmp_path, files, "zip", "VOCtrainval_11-May-2012")
    with pytest.raises(DataError, match="JPEGImages/2008_000002.jpg"):
        list_samples("pascal_voc", tmp_path, "train")


def test_image_without_label_names_the_label(tmp_path):
    files, _ = _ade_files(np.random.default_rng(8))
    del files["ADEChallengeData2016/annotations/training/ADE_train_00000002.png"]
    _store(tmp_path, files, "zip", "ADEChallengeData2016")
    with pytest.raises(DataError, match="annotations/training/ADE_train_00000002.png"):
        list_samples("ade20k", tmp_path, "train")


@pytest.mark.parametrize("layout", ["zip", "folder"])
def test_truncated_jpeg_names_the_file(tmp_path, layout):
    files, _ = _ade_files(np.random.default_rng(9))
    name = "ADEChallengeData2016/images/training/ADE_train_00000002.jpg"
    whole = encode_jpeg(_rgb(np.random.default_rng(0), 64, 64))
    files[name] = whole[: len(whole) // 2]  # header intact, scan data cut
    _store(tmp_path, files, layout, "ADEChallengeData2016")
    refs = list_samples("ade20k", tmp_path, "train")
    read_sample(refs[0])
    with pytest.raises(DataError) as err:
        read_sample(refs[1])
    assert refs[1].image_path in str(err.value) and name in str(err.value)


def test_rgb_label_is_rejected(tmp_path):
    files, _ = _ade_files(np.random.default_rng(10))
    name = "ADEChallengeData2016/annotations/training/ADE_train_00000001.png"
    files[name] = encode_png(_rgb(np.random.default_rng(1)))
    _store(tmp_path, files, "zip", "ADEChallengeData2016")
    with pytest.raises(DataError, match=f"{name}.*mode RGB"):
        read_sample(list_samples("ade20k", tmp_path, "train")[0])


def test_each_archive_is_listed_once(tmp_path, monkeypatch):
    files, _ = _ade_files(np.random.default_rng(11), counts=(("training", "train", 12),))
    _store(tmp_path, files, "zip", "ADEChallengeData2016")
    calls = []
    namelist = zipfile.ZipFile.namelist
    monkeypatch.setattr(zipfile.ZipFile, "namelist", lambda self: calls.append(1) or namelist(self))
    for ref in list_samples("ade20k", tmp_path, "train"):
        read_sample(ref)
    assert len(calls) == 1


@pytest.mark.parametrize("suffix", ["tar.gz", "tgz"])
def test_tar_gz_is_read_in_one_pass_and_after_fork(tmp_path, monkeypatch, suffix):
    rng = np.random.default_rng(12)
    files = {f"trainval/{i:04d}.bin": rng.bytes(1000) for i in range(20)}
    path = tmp_path / f"trainval.{suffix}"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    opens = []
    real_open = tarfile.open
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: opens.append(a) or real_open(*a, **k))
    inner = sorted(files, reverse=True)  # backwards: no member may need a re-read
    assert [read_bytes(f"{path}::{name}") for name in inner] == [files[n] for n in inner]
    assert len(opens) == 1
    with multiprocessing.get_context("fork").Pool(2) as pool:
        read = pool.map(read_bytes, [f"{path}::{name}" for name in inner])
    assert read == [files[n] for n in inner]
    with pytest.raises(DataError, match=r"trainval\.t.*::trainval/x\.bin: no such file"):
        read_bytes(f"{path}::trainval/x.bin")
