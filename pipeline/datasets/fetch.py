"""download@<dataset>: make a dataset's official files present and verified in its raw folder.

Files are downloaded into a download cache (`download.cache_dir`, outside DVC) where an
interrupted download is resumed, then hard-linked into the raw folder, which is replaced
atomically. DVC deletes a stage's outputs before re-running it; keeping partial files in the
cache is what lets a killed download resume. Files behind a login are placed in the cache by
hand; the stage then only verifies them and links them in.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.atomic import atomic_path
from pipeline.datasets.download import download_file, verify_file
from pipeline.datasets.sources import RemoteFile, Source
from pipeline.errors import DataError


def fetch(source: Source, out_dir: Path, cache_dir: Path, *, mirrors: dict[str, str] | None = None,
          retries: int = 5, backoff_s: float = 2.0, timeout_s: float = 60.0,
          progress: bool = True) -> list[Path]:
    """Download (or check) every file of `source` and link them into `out_dir`; returns the files."""
    cache_dir = Path(cache_dir)
    if source.manual:
        cached = [_placed(source, f, cache_dir) for f in source.files]
    else:
        mirrors = mirrors or {}
        cached = [download_file(mirrors.get(f.name, f.url), cache_dir / f.name, size=f.size,
                                checksum=f.checksum, retries=retries, backoff_s=backoff_s,
                                timeout_s=timeout_s, progress=progress)
                  for f in source.files]
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for path in cached:
            _link(path, tmp / path.name)
    return [Path(out_dir) / path.name for path in cached]


def _placed(source: Source, file: RemoteFile, cache_dir: Path) -> Path:
    """A file the user downloaded by hand, verified; DataError with the instructions if absent."""
    path = cache_dir / file.name
    if not path.is_file():
        missing = [f.name for f in source.files if not (cache_dir / f.name).is_file()]
        raise DataError(
            f"{source.name}: {', '.join(missing)} not found in {cache_dir}/ and cannot be downloaded "
            f"automatically. {source.manual} Put the file(s) in {cache_dir}/ and re-run "
            f"`dvc repro download@{source.name}`.")
    verify_file(path, size=file.size, checksum=file.checksum)
    return path


def _link(src: Path, dst: Path) -> None:
    """Hard link (no copy of a multi-GB archive); copy when the cache is on another filesystem."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
