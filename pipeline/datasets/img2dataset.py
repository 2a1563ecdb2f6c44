"""img2dataset's WebDataset output as a caption source (the authors' data: COCO Captions and LAION-400M).

A source is a folder of `{00000..N}.tar` shards, or a brace pattern naming them
(`data/raw/img2dataset/{00000..00099}.tar`; the params require the folder `<data_root>/img2dataset`, the concepts
stage's DVC dependency).
Each sample holds `jpg` (the image as img2dataset resized it), `txt` (the caption) and `json` (img2dataset's row:
url, key, status, sizes); the `*_stats.json` and `*.parquet` files img2dataset writes beside the shards are not read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import braceexpand
import webdataset as wds

from pipeline.errors import DataError

_EXPECTED = "img2dataset's {00000..N}.tar shards"
_REQUIRED = ("jpg", "txt")


def expand_shards(pattern: str) -> list[Path]:
    """The input shards of `pattern` (params concepts.shards): every `*.tar` of a folder, sorted, or the files of a
    brace pattern, each of which must exist. Output shards are named after them, so names must be unique."""
    if not pattern.strip():
        raise DataError(f"concepts.shards is empty; expected a folder of {_EXPECTED} or a brace pattern such as "
                        "data/raw/img2dataset/{00000..00099}.tar")
    if Path(pattern).is_dir():
        found = sorted(Path(pattern).glob("*.tar"))
        if not found:
            raise DataError(f"{pattern}: no .tar file in this folder; expected {_EXPECTED}")
        return found
    found = [Path(p) for p in braceexpand.braceexpand(pattern)]
    missing = [p for p in found if not p.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: named by concepts.shards {pattern!r} but not a file ({len(missing)} of "
                        f"{len(found)} missing); expected {_EXPECTED}")
    names = [p.name for p in found]
    if len(set(names)) != len(names):
        raise DataError(f"concepts.shards {pattern!r} names two shards with the same file name; the concept "
                        "shards are named after their input, so each name must be unique")
    return found


@dataclass(frozen=True)
class WebCaption:
    """One img2dataset sample: its key, the key of its image (the URL when img2dataset recorded one: COCO's five
    captions of one image share it, and so share cached image features), the encoded image and the caption."""
    key: str
    image_key: str
    image: bytes
    caption: str


def read_shard(path: Path) -> Iterator[WebCaption]:
    """The samples of one img2dataset shard, in order; a sample without `jpg` or `txt` stops with its file and key."""
    for sample in wds.WebDataset(str(path), shardshuffle=False, nodesplitter=None, workersplitter=None,
                                 empty_check=False):
        key = sample["__key__"]
        missing = [member for member in _REQUIRED if member not in sample]
        if missing:
            raise DataError(f"{path}: sample {key!r} lacks {missing}; expected img2dataset samples with jpg, txt "
                            f"and json (it has {sorted(m for m in sample if not m.startswith('__'))})")
        meta = json.loads(sample["json"]) if "json" in sample else {}
        yield WebCaption(key, meta.get("url") or key, sample["jpg"], sample["txt"].decode("utf-8").strip())
