"""Readers for the official on-disk layouts, straight from the downloaded archives.

Each dataset is read either from its official archive(s) (zip, tar or tar.gz) or from the
folder those archives extract to. Every archive is indexed once per process (a name index,
O(N)); handles are opened lazily and re-opened after a fork, since a forked process must not
share a file offset with its parent. COCO annotation JSONs are parsed once, when samples are
listed, and each image's annotations travel in its SampleRef.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from pycocotools import mask as coco_mask

from pipeline.datasets.specs import COCO_THING_IDS, get_spec
from pipeline.errors import DataError

SEP = "::"  # "archive.zip::inner/path"
_IMAGE_EXT = {"JPEG": "jpg", "PNG": "png"}
_GZIP_TARS = (".tar.gz", ".tgz")
_ARCHIVE_ERRORS = (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, zlib.error)


@dataclass(frozen=True)
class CocoInstances:
    """One image's COCO instance annotations, parsed from the JSON before any fork.

    `annotations` holds (annotation id, category id, segmentation) in painting order.
    """
    height: int
    width: int
    annotations: tuple[tuple[int, int, object], ...] = ()


@dataclass(frozen=True)
class SampleRef:
    """Where a sample's image and label are. `label_format` says how the label is read:
    "png" (8-bit ids), "mat" (PASCAL Context LabelMap) or "coco" (rasterised from
    `instances`; `label_path` is then the instances JSON)."""
    key: str
    image_path: str
    label_path: str
    label_format: str = "png"
    instances: CocoInstances | None = None


@dataclass
class RawSample:
    key: str
    image: bytes
    image_ext: str
    label: np.ndarray
    image_source: str
    label_source: str


class _Archive:
    """An open zip, tar or tar.gz archive: its file names, and reads by name.

    `_members` maps each file name to what reads it: nothing (zip), a TarInfo (tar) or the
    file's bytes (tar.gz). An index inherited over a fork is reused by `reopened`.
    """

    def __init__(self, path: str, members: dict | None = None):
        self.path, self.pid, self.stamp = path, os.getpid(), _stamp(path)
        self._zip = self._tar = None
        if path.endswith(_GZIP_TARS):
            # A gzip stream has no random access: every member read would decompress the
            # archive from its start. The tar.gz read here is small (PASCAL Context's
            # annotations, ~30 MB), so all its files are read in one sequential pass and kept
            # in memory; there is no handle, and a fork inherits the bytes.
            self._members = members if members is not None else _read_all(path)
        elif path.endswith(".tar"):
            self._tar = tarfile.open(path)
            self._members = members if members is not None else {
                _strip_dot(m.name): m for m in self._tar if m.isfile()}
        else:
            self._zip = zipfile.ZipFile(path)
            self._members = members if members is not None else dict.fromkeys(
                n for n in self._zip.namelist() if not n.endswith("/"))

    @property
    def names(self):
        return self._members.keys()

    def read(self, name: str) -> bytes:
        if name not in self._members:
            raise DataError(f"{self.path}{SEP}{name}: no such file in the archive")
        try:
            if self._zip is not None:
                return self._zip.read(name)
            if self._tar is not None:
                return self._tar.extractfile(self._members[name]).read()
            return self._members[name]
        except _ARCHIVE_ERRORS as err:
            raise DataError(f"{self.path}{SEP}{name}: unreadable archive member ({err})") from err

    def reopened(self) -> "_Archive":
        return _Archive(self.path, self._members)


_ARCHIVES: dict[str, _Archive] = {}


def _read_all(path: str) -> dict[str, bytes]:
    """Every file of a compressed tar, read in one streaming pass."""
    with tarfile.open(path, "r|*") as tar:
        return {_strip_dot(m.name): tar.extractfile(m).read() for m in tar if m.isfile()}


def _stamp(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


def _archive(path: str) -> _Archive:
    """The cached archive at `path`; re-opened after a fork, rebuilt if the file changed."""
    arc = _ARCHIVES.get(path)
    try:
        if arc is None or arc.stamp != _stamp(path):
            arc = _Archive(path)
        elif arc.pid != os.getpid():
            arc = arc.reopened()
    except _ARCHIVE_ERRORS as err:
        raise DataError(f"{path}: cannot open archive ({err})") from err
    _ARCHIVES[path] = arc
    return arc


def _strip_dot(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def read_bytes(path: str) -> bytes:
    """Bytes of a plain file or of an "archive::inner" member."""
    if SEP in path:
        archive, inner = path.split(SEP, 1)
        return _archive(archive).read(inner)
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read file ({err})") from err


def _index(root: Path, patterns: list[str], folder: str) -> tuple[dict[str, str], str]:
    """Map inner path (relative to the archive / `root`) -> readable path, and a description.

    All archives matching `patterns` are merged (GTA V comes in parts); the extracted
    `folder` is used only when there is no archive.
    """
    archives = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})
    if archives:
        index = {}
        for path in archives:
            index.update((name, f"{path}{SEP}{name}") for name in _archive(str(path)).names)
        return index, ", ".join(str(p) for p in archives)
    base = root / folder
    if not base.is_dir():
        raise DataError(f"{root}: found neither archive {' / '.join(patterns)} "
                        f"nor extracted folder {folder}/")
    index = {}
    for dirpath, _, files in os.walk(base):
        rel = Path(dirpath).relative_to(root).as_posix()
        index.update((f"{rel}/{f}", os.path.join(dirpath, f)) for f in files)
    return index, str(base)


def _member(index: dict[str, str], inner: str, where: str, why: str) -> str:
    """Readable path of `inner`; DataError naming it and why it was looked for."""
    if inner not in index:
        raise DataError(f"{where}: {inner} missing ({why})")
    return index[inner]


def _listed_ids(index: dict[str, str], list_name: str, where: str) -> list[str]:
    if list_name not in index:
        raise DataError(f"{where}: split list {list_name} not found")
    return read_bytes(index[list_name]).decode().split()


def _pairs(images: dict[str, str], labels: dict[str, str], prefix: str, suffix: str,
           label_name, where: str) -> list[SampleRef]:
    """Pair every image `prefix...suffix` with the label inner path label_name(key, inner)."""
    refs = []
    for inner, path in images.items():
        if inner.startswith(prefix) and inner.endswith(suffix):
            key = inner.rsplit("/", 1)[-1][: -len(suffix)]
            label_inner = label_name(key, inner)
            if label_inner not in labels:
                raise DataError(f"{where}: label {label_inner} missing for image {path}")
            refs.append(SampleRef(key, path, labels[label_inner]))
    return refs


def _ade20k(root: Path, split: str) -> tuple[list[SampleRef], str]:
    sub = {"train": "training", "val": "validation"}[split]
    index, where = _index(root, ["ADEChallengeData2016.zip"], "ADEChallengeData2016")
    base = "ADEChallengeData2016"
    refs = _pairs(index, index, f"{base}/images/{sub}/", ".jpg",
                  lambda key, _: f"{base}/annotations/{sub}/{key}.png", where)
    return refs, f"{where} ({base}/images/{sub}/*.jpg)"


def _pascal_voc(root: Path, split: str) -> tuple[list[SampleRef], str]:
    index, where = _index(root, ["VOCtrainval_11-May-2012.tar", "VOCtrainval_11-May-2012.zip"],
                          "VOCdevkit")
    base = "VOCdevkit/VOC2012"
    list_name = f"{base}/ImageSets/Segmentation/{split}.txt"
    why = f"listed in {list_name}"
    refs = [SampleRef(key, _member(index, f"{base}/JPEGImages/{key}.jpg", where, why),
                      _member(index, f"{base}/SegmentationClass/{key}.png", where, why))
            for key in _listed_ids(index, list_name, where)]
    return refs, f"{where} ({list_name})"


def _pascal_context(root: Path, split: str) -> tuple[list[SampleRef], str]:
    images, where = _index(root, ["VOCtrainval_03-May-2010.tar"], "VOCdevkit")
    labels, label_where = _index(root, ["trainval.tar.gz"], "trainval")
    base = "VOCdevkit/VOC2010"
    list_name = f"{base}/ImageSets/Main/{split}.txt"
    refs = []
    for key in _listed_ids(images, list_name, where):
        image = _member(images, f"{base}/JPEGImages/{key}.jpg", where, f"listed in {list_name}")
        label = _member(labels, f"trainval/{key}.mat", label_where,
                        f"the label of image {image}, listed in {list_name}")
        refs.append(SampleRef(key, image, label, label_format="mat"))
    return refs, f"{where} ({list_name})"


def _cityscapes(root: Path, split: str) -> tuple[list[SampleRef], str]:
    images, where = _index(root, ["leftImg8bit_trainvaltest.zip"], "leftImg8bit")
    labels, label_where = _index(root, ["gtFine_trainvaltest.zip"], "gtFine")

    def label_name(key: str, inner: str) -> str:
        city = inner.split("/")[2]
        return f"gtFine/{split}/{city}/{key}_gtFine_labelIds.png"

    refs = _pairs(images, labels, f"leftImg8bit/{split}/", "_leftImg8bit.png", label_name,
                  f"{where} + {label_where}")
    return refs, f"{where} (leftImg8bit/{split}/*/*_leftImg8bit.png)"


def _gta5(root: Path, split: str) -> tuple[list[SampleRef], str]:
    images, where = _index(root, ["[0-9][0-9]_images.zip"], "images")
    labels, label_where = _index(root, ["[0-9][0-9]_labels.zip"], "labels")
    refs = _pairs(images, labels, "images/", ".png", lambda key, _: f"labels/{key}.png",
                  f"{where} + {label_where}")
    return refs, f"{where} (images/*.png)"


def _coco_images(root: Path, split: str) -> tuple[dict[str, str], str]:
    return _index(root, [f"{split}2017.zip"], f"{split}2017")


def _coco_json(root: Path, name: str) -> tuple[dict, str]:
    """A COCO annotations file `annotations/<name>`, parsed, and where it was read from."""
    index, where = _index(root, ["annotations_trainval2017.zip"], "annotations")
    path = _member(index, f"annotations/{name}", where, "COCO annotations")
    try:
        return json.loads(read_bytes(path)), path
    except ValueError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err


@contextmanager
def _coco_fields(source: str):
    """A missing or mistyped field of a COCO JSON -> DataError naming the file."""
    try:
        yield
    except (KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{source}: malformed COCO annotations "
                        f"({type(err).__name__}: {err})") from err


def _coco_by_image(data: dict, source: str) -> tuple[dict[int, dict], dict[int, list[dict]]]:
    """COCO `images` by id, and `annotations` grouped by image id in annotation-id order."""
    images = {image["id"]: image for image in data["images"]}
    grouped = {image_id: [] for image_id in images}
    for ann in sorted(data["annotations"], key=lambda a: a["id"]):
        if ann["image_id"] not in grouped:
            raise DataError(f"{source}: annotation {ann['id']} refers to image id "
                            f"{ann['image_id']}, which is not among its images")
        grouped[ann["image_id"]].append(ann)
    return images, grouped


def _coco_image(images: dict[str, str], where: str, split: str, image: dict,
                source: str) -> tuple[str, str]:
    """(key, readable path) of an entry of a COCO JSON's `images`."""
    name = image["file_name"]
    path = _member(images, f"{split}2017/{name}", where, f"image id {image['id']} in {source}")
    return Path(name).stem, path


def _coco_stuff(root: Path, split: str) -> tuple[list[SampleRef], str]:
    # Both archives hold `<split>2017/`; extracted in place they may share that folder.
    images, where = _coco_images(root, split)
    labels, label_where = _index(root, ["stuffthingmaps_trainval2017.zip"], f"{split}2017")
    refs = _pairs(images, labels, f"{split}2017/", ".jpg",
                  lambda key, _: f"{split}2017/{key}.png", f"{where} + {label_where}")
    return refs, f"{where} ({split}2017/*.jpg)"


def _coco_object(root: Path, split: str) -> tuple[list[SampleRef], str]:
    """Every image of the instances JSON, its annotations in painting order: decreasing
    area, ties by annotation id, so that smaller objects end on top."""
    images, where = _coco_images(root, split)
    data, source = _coco_json(root, f"instances_{split}2017.json")
    known, refs = set(COCO_THING_IDS), []
    with _coco_fields(source):
        by_id, grouped = _coco_by_image(data, source)
        for image_id, anns in grouped.items():
            for ann in anns:
                if ann["category_id"] not in known:
                    raise DataError(f"{source}: annotation {ann['id']} has category id "
                                    f"{ann['category_id']}, not one of the 80 COCO categories")
            painted = sorted(anns, key=lambda a: -a["area"])  # stable: ties keep id order
            image = by_id[image_id]
            instances = CocoInstances(image["height"], image["width"], tuple(
                (a["id"], a["category_id"], a["segmentation"]) for a in painted))
            key, path = _coco_image(images, where, split, image, source)
            refs.append(SampleRef(key, path, source, "coco", instances))
    return refs, f"{source} (images of {where})"


_LISTERS = {"ade20k": _ade20k, "pascal_voc": _pascal_voc, "cityscapes": _cityscapes,
            "gta5": _gta5, "pascal_context": _pascal_context, "coco_stuff": _coco_stuff,
            "coco_object": _coco_object}


def list_samples(dataset: str, root: Path, split: str) -> list[SampleRef]:
    """All (image, label) pairs of a split, sorted by key."""
    spec = get_spec(dataset)
    if split not in spec.splits:
        raise DataError(f"{dataset} has no split {split!r}; available: {list(spec.splits)}")
    refs, where = _LISTERS[dataset](Path(root), split)
    if not refs:
        raise DataError(f"{where}: split {split!r} of {dataset} is empty; expected at least one sample")
    return sorted(refs, key=lambda r: r.key)


def decode_image(data: bytes, source: str) -> Image.Image:
    """Fully decode an encoded image (catches truncated files); DataError naming `source`."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{source}: cannot decode image, expected a complete JPEG or PNG ({err})") from err
    return image


def _png_label(ref: SampleRef) -> np.ndarray:
    label = decode_image(read_bytes(ref.label_path), ref.label_path)
    if label.mode not in ("L", "P"):
        raise DataError(f"{ref.label_path}: label PNG has mode {label.mode}, expected an 8-bit "
                        "single-channel (L) or palette (P) image")
    return np.array(label)


def _mat_label(ref: SampleRef) -> np.ndarray:
    """PASCAL Context: the MATLAB file's `LabelMap`, full label ids (0 = unlabeled)."""
    data = read_bytes(ref.label_path)
    try:
        label = scipy.io.loadmat(io.BytesIO(data), variable_names=["LabelMap"]).get("LabelMap")
    except (ValueError, TypeError, NotImplementedError, scipy.io.matlab.MatReadError) as err:
        raise DataError(f"{ref.label_path}: cannot read MATLAB file ({err})") from err
    if label is None or label.ndim != 2 or label.dtype.kind not in "ui":
        raise DataError(f"{ref.label_path}: expected a 2-D integer variable LabelMap")
    return label


def _segmentation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """HxW mask of a COCO segmentation, read as pycocotools' COCO.annToRLE does: polygons
    (a list of lists), uncompressed RLE (counts a list) or compressed RLE (counts a str,
    which frPyObjects does not accept)."""
    if isinstance(segmentation, list):
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return coco_mask.decode(rle)


def _coco_label(ref: SampleRef) -> np.ndarray:
    """COCO category ids painted in the given order (later on top), 0 where no instance is."""
    height, width = ref.instances.height, ref.instances.width
    label = np.zeros((height, width), np.uint8)
    for ann_id, category, segmentation in ref.instances.annotations:
        try:
            mask = _segmentation_mask(segmentation, height, width)
        except (ValueError, TypeError, KeyError, IndexError) as err:
            raise DataError(f"{ref.label_path}: annotation {ann_id} of image {ref.key}: "
                            f"unreadable segmentation ({err})") from err
        if mask.shape != (height, width):
            raise DataError(f"{ref.label_path}: annotation {ann_id} of image {ref.key} is "
                            f"{mask.shape[1]}x{mask.shape[0]} (WxH), its image {width}x{height}")
        label[mask > 0] = category
    return label


_LABEL_READERS = {"png": _png_label, "mat": _mat_label, "coco": _coco_label}


def read_sample(ref: SampleRef) -> RawSample:
    image = read_bytes(ref.image_path)
    fmt = decode_image(image, ref.image_path).format
    if fmt not in _IMAGE_EXT:
        raise DataError(f"{ref.image_path}: image is {fmt}, expected JPEG or PNG")
    label = _LABEL_READERS[ref.label_format](ref)
    return RawSample(ref.key, image, _IMAGE_EXT[fmt], label, ref.image_path, ref.label_path)


@dataclass(frozen=True)
class CaptionRef:
    key: str
    image_id: int
    image_path: str
    captions: tuple[str, ...]


def list_captions(root: Path, split: str) -> list[CaptionRef]:
    """COCO images of `split` with their captions (annotation-id order, stripped), sorted by
    key; images without a caption are left out."""
    if split not in ("train", "val"):
        raise DataError(f"COCO captions have no split {split!r}; available: ['train', 'val']")
    root = Path(root)
    images, where = _coco_images(root, split)
    data, source = _coco_json(root, f"captions_{split}2017.json")
    refs = []
    with _coco_fields(source):
        by_id, grouped = _coco_by_image(data, source)
        for image_id, anns in grouped.items():
            if anns:
                key, path = _coco_image(images, where, split, by_id[image_id], source)
                refs.append(CaptionRef(key, image_id, path,
                                       tuple(a["caption"].strip() for a in anns)))
    return sorted(refs, key=lambda r: r.key)
