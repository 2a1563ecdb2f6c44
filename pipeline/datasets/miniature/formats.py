"""Byte-reproducible files in the formats the official datasets ship: zip and tar archives
(fixed timestamps, sorted entries), PNG, JPEG and MATLAB files."""
from __future__ import annotations

import contextlib
import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _with_parents(names) -> list[str]:
    """Sorted names plus their parent folders ('a/b/' entries), as official archives have."""
    dirs = {name[: i + 1] for name in names for i, ch in enumerate(name) if ch == "/"}
    return sorted(dirs | set(names))


def write_zip(path: Path, files: dict[str, bytes]) -> None:
    """A reproducible zip (fixed timestamps, sorted entries, stored: images are compressed)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name in _with_parents(files):
            info = zipfile.ZipInfo(name, _ZIP_EPOCH)
            info.external_attr = (0o40755 << 16 | 0x10) if name.endswith("/") else 0o100644 << 16
            zf.writestr(info, files.get(name, b""), zipfile.ZIP_STORED)


def write_tar(path: Path, files: dict[str, bytes], compress: bool = False) -> None:
    """A reproducible tar (mtime 0, root owner, sorted entries); gzip-compressed if `compress`."""
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(open(path, "wb"))
        if compress:
            raw = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="wb", mtime=0))
        tf = stack.enter_context(tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT))
        for name in _with_parents(files):
            info = tarfile.TarInfo(name.rstrip("/"))
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(files[name]), 0o644
                tf.addfile(info, io.BytesIO(files[name]))


def encode_png(array: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """PNG of a uint8 HxW (L, or P with a uint8[N,3] palette), uint16 HxW or uint8 HxWx3 array."""
    image = Image.fromarray(array)
    if palette is not None:
        image.putpalette(palette.astype(np.uint8).ravel().tolist())  # L -> P, indices kept
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def encode_mat(arrays: dict[str, np.ndarray]) -> bytes:
    """A compressed MATLAB 5 file, as PASCAL Context's annotations are.

    The 116-byte text header scipy writes holds the creation time; a fixed one keeps output
    deterministic.
    """
    buf = io.BytesIO()
    scipy.io.savemat(buf, arrays, do_compression=True)
    header = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: pipeline miniature".ljust(116)
    return header + buf.getvalue()[116:]


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()
