"""Readers for the official on-disk layouts, straight from the downloaded archives.

Segmentation datasets give (image, label map) pairs (`list_samples`); ImageNet-1k gives (image, class)
pairs (`list_class_samples`).

Each dataset is read either from its official archive(s) (zip, tar or tar.gz) or from the
folder those archives extract to. Every archive is indexed once per process (a name index,
O(N)); handles are opened lazily and re-opened after a fork, since a forked process must not
share a file offset with its parent. COCO annotation JSONs are parsed once, when samples are
listed, and each image's annotations travel in its SampleRef.
"""
from __future__ import annotations

import functools
import io
import json
import os
import re
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

from pipeline.datasets.specs import CLASSIFICATION_SPLITS, COCO_THING_IDS, IMAGENET, get_spec
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


# ---------------------------------------------------------------- ImageNet-1k validation

IMAGENET_VAL_TAR = "ILSVRC2012_img_val.tar"            # 50,000 flat ILSVRC2012_val_NNNNNNNN.JPEG
IMAGENET_DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
IMAGENET_DEVKIT_DATA = "ILSVRC2012_devkit_t12/data"    # meta.mat and the validation ground truth, in the devkit
IMAGENET_GROUND_TRUTH = f"{IMAGENET_DEVKIT_DATA}/ILSVRC2012_validation_ground_truth.txt"
IMAGENET_META = f"{IMAGENET_DEVKIT_DATA}/meta.mat"
_IMAGENET_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


@dataclass(frozen=True)
class ClassRef:
    """Where an image is, and its class index."""
    key: str
    image_path: str
    label: int


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in label order: sorted, the order of open_clip's IMAGENET_CLASSNAMES."""
    from timm.data import ImageNetInfo  # imports torch: only where ImageNet is read
    return tuple(ImageNetInfo().label_names())


@functools.cache
def _wnid_labels() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


def _imagenet_label(wnid: str, source: str) -> int:
    if wnid not in _wnid_labels():
        raise DataError(f"{source}: {wnid!r} is not one of the 1000 ImageNet-1k wnids")
    return _wnid_labels()[wnid]


def _devkit_classes(meta: str) -> dict[int, str]:
    """ILSVRC2012_ID -> WNID of the devkit's 1000 classes: the synsets of meta.mat without children.

    The ids number the synsets in the devkit's own order, not in the (sorted) label order.
    """
    try:
        synsets = scipy.io.loadmat(io.BytesIO(read_bytes(meta)), squeeze_me=True)["synsets"]
        ids, wnids, children = (np.atleast_1d(synsets[field]) for field in ("ILSVRC2012_ID", "WNID", "num_children"))
    except (ValueError, TypeError, KeyError, IndexError, NotImplementedError, scipy.io.matlab.MatReadError) as err:
        raise DataError(f"{meta}: expected the devkit's meta.mat, a struct array `synsets` with fields "
                        f"ILSVRC2012_ID, WNID and num_children ({type(err).__name__}: {err})") from err
    return {int(i): str(wnid) for i, wnid, n in zip(ids, wnids, children) if n == 0}


def _ground_truth(path: str) -> list[int]:
    """The ILSVRC2012_ID of each validation image, in image-number order."""
    lines = read_bytes(path).decode(errors="replace").split()
    for number, line in enumerate(lines, 1):
        if not line.isdigit():
            raise DataError(f"{path}: line {number} is {line!r}; expected one ILSVRC2012_ID (an integer) per line")
    return [int(line) for line in lines]


def _imagenet_official(root: Path) -> list[ClassRef]:
    """ILSVRC2012_img_val.tar, labelled by the devkit (archive or extracted): image N has the class whose
    ILSVRC2012_ID is on line N of the ground truth."""
    tar = root / IMAGENET_VAL_TAR
    devkit, devkit_where = _index(root, [IMAGENET_DEVKIT], "ILSVRC2012_devkit_t12")
    meta = _member(devkit, IMAGENET_META, devkit_where, "the devkit's synsets")
    classes = _devkit_classes(meta)
    truth_path = _member(devkit, IMAGENET_GROUND_TRUTH, devkit_where, "the validation labels")
    truth = _ground_truth(truth_path)
    refs = []
    for inner in _archive(str(tar)).names:
        if not (match := _IMAGENET_VAL_NAME.fullmatch(inner)):
            continue
        path = f"{tar}{SEP}{inner}"
        number = int(match[1])
        if not 1 <= number <= len(truth):
            raise DataError(f"{path}: image {number}, but {truth_path} lists {len(truth)} labels")
        if truth[number - 1] not in classes:
            raise DataError(f"{truth_path}: line {number} (the label of {path}) is {truth[number - 1]}, not the "
                            f"ILSVRC2012_ID of a class (a synset without children) in {meta}")
        refs.append(ClassRef(Path(inner).stem, path, _imagenet_label(classes[truth[number - 1]], meta)))
    if len(refs) != len(truth):
        raise DataError(f"{tar}: {len(refs)} ILSVRC2012_val_*.JPEG images, but {truth_path} lists "
                        f"{len(truth)} labels; expected one per image")
    return refs


def _imagenet_folders(root: Path) -> list[ClassRef]:
    """The extracted val/<wnid>/*.JPEG layout: the folder names the class."""
    refs = []
    for folder in sorted(p for p in (root / "val").iterdir() if p.is_dir()):
        label = _imagenet_label(folder.name, str(folder))
        refs += [ClassRef(path.stem, str(path), label) for path in sorted(folder.iterdir())
                 if path.suffix.lower() in _IMAGE_SUFFIXES]
    return refs


def _imagenet(root: Path, split: str) -> tuple[list[ClassRef], str]:
    if (root / IMAGENET_VAL_TAR).is_file():
        return _imagenet_official(root), str(root / IMAGENET_VAL_TAR)
    if (root / "val").is_dir():
        return _imagenet_folders(root), f"{root / 'val'}/<wnid>/"
    raise DataError(f"{root}: found neither {IMAGENET_VAL_TAR} (with {IMAGENET_DEVKIT}) nor an extracted "
                    "val/<wnid>/*.JPEG folder")


_CLASS_LISTERS = {IMAGENET: _imagenet}
_CLASS_IDS = {IMAGENET: imagenet_wnids}


def class_ids(dataset: str) -> tuple[str, ...]:
    """The ids of a classification dataset's classes, in label order (ImageNet: the wnids)."""
    return _CLASS_IDS[dataset]()


def list_class_samples(dataset: str, root: Path, split: str) -> list[ClassRef]:
    """All (image, class) pairs of a classification dataset's split, sorted by key."""
    if split not in CLASSIFICATION_SPLITS[dataset]:
        raise DataError(f"{dataset} has no split {split!r}; available: {list(CLASSIFICATION_SPLITS[dataset])}")
    refs, where = _CLASS_LISTERS[dataset](Path(root), split)
    if not refs:
        raise DataError(f"{where}: split {split!r} of {dataset} is empty; expected at least one image")
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


def read_image(path: str) -> tuple[bytes, str]:
    """An image's encoded bytes, checked to decode fully, and its extension (jpg or png)."""
    image = read_bytes(path)
    fmt = decode_image(image, path).format
    if fmt not in _IMAGE_EXT:
        raise DataError(f"{path}: image is {fmt}, expected JPEG or PNG")
    return image, _IMAGE_EXT[fmt]


def read_sample(ref: SampleRef) -> RawSample:
    image, ext = read_image(ref.image_path)
    label = _LABEL_READERS[ref.label_format](ref)
    return RawSample(ref.key, image, ext, label, ref.image_path, ref.label_path)


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
