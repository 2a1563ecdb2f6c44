"""Readers for the official on-disk layouts, straight from the downloaded archives.

Each dataset is read either from its official archive(s) (zip, or tar for VOC) or from the
folder those archives extract to. Every archive is indexed once per process (a name set,
O(N)); handles are opened lazily and re-opened after a fork, since a forked process must not
share a file offset with its parent.
"""
from __future__ import annotations

import io
import os
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.datasets.specs import DataError, get_spec

SEP = "::"  # "archive.zip::inner/path"
_IMAGE_EXT = {"JPEG": "jpg", "PNG": "png"}


@dataclass(frozen=True)
class SampleRef:
    key: str
    image_path: str
    label_path: str


@dataclass
class RawSample:
    key: str
    image: bytes
    image_ext: str
    label: np.ndarray
    image_source: str
    label_source: str


class _Archive:
    """An open zip or tar archive: its file names, and reads by name."""

    def __init__(self, path: str, members: dict | None = None):
        self.path, self.pid, self.stamp = path, os.getpid(), _stamp(path)
        if path.endswith(".tar"):
            self._tar = tarfile.open(path)
            # TarInfo objects only hold offsets, so an index inherited over a fork is reused.
            self._members = members if members is not None else {
                _strip_dot(m.name): m for m in self._tar if m.isfile()}
            self.names = set(self._members)
        else:
            self._tar = None
            self._zip = zipfile.ZipFile(path)
            self._members = None
            self.names = {n for n in self._zip.namelist() if not n.endswith("/")}

    def read(self, name: str) -> bytes:
        if name not in self.names:
            raise DataError(f"{self.path}{SEP}{name}: no such file in the archive")
        try:
            if self._tar is not None:
                return self._tar.extractfile(self._members[name]).read()
            return self._zip.read(name)
        except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, zlib.error) as err:
            raise DataError(f"{self.path}{SEP}{name}: unreadable archive member ({err})") from err

    def reopened(self) -> "_Archive":
        return _Archive(self.path, self._members)


_ARCHIVES: dict[str, _Archive] = {}


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
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as err:
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
    if list_name not in index:
        raise DataError(f"{where}: split list {list_name} not found")
    ids = read_bytes(index[list_name]).decode().split()
    refs = []
    for key in ids:
        image, label = f"{base}/JPEGImages/{key}.jpg", f"{base}/SegmentationClass/{key}.png"
        for inner in (image, label):
            if inner not in index:
                raise DataError(f"{where}: {inner} listed in {list_name} but missing")
        refs.append(SampleRef(key, index[image], index[label]))
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


_LISTERS = {"ade20k": _ade20k, "pascal_voc": _pascal_voc, "cityscapes": _cityscapes,
            "gta5": _gta5}


def list_samples(dataset: str, root: Path, split: str) -> list[SampleRef]:
    """All (image, label) pairs of a split, sorted by key."""
    spec = get_spec(dataset)
    if split not in spec.splits:
        raise DataError(f"{dataset} has no split {split!r}; available: {list(spec.splits)}")
    refs, where = _LISTERS[dataset](Path(root), split)
    if not refs:
        raise DataError(f"{where}: split {split!r} of {dataset} is empty")
    return sorted(refs, key=lambda r: r.key)


def decode_image(data: bytes, source: str) -> Image.Image:
    """Fully decode an encoded image (catches truncated files); DataError naming `source`."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{source}: cannot decode image ({err})") from err
    return image


def read_sample(ref: SampleRef) -> RawSample:
    image = read_bytes(ref.image_path)
    fmt = decode_image(image, ref.image_path).format
    if fmt not in _IMAGE_EXT:
        raise DataError(f"{ref.image_path}: image is {fmt}, expected JPEG or PNG")
    label = decode_image(read_bytes(ref.label_path), ref.label_path)
    if label.mode not in ("L", "P"):
        raise DataError(f"{ref.label_path}: label PNG has mode {label.mode}, expected an 8-bit "
                        "single-channel (L) or palette (P) image")
    return RawSample(ref.key, image, _IMAGE_EXT[fmt], np.array(label), ref.image_path,
                     ref.label_path)
