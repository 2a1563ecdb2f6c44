"""Captions with their concepts as WebDataset shards, and the decoder that reads them back.

Both caption sources write through `CaptionEncoder`: COCO Captions here (`write_caption_shards`), img2dataset shards
shard for shard in `web_caption_shards`.

One sample per caption (as the authors' img2dataset rows): `jpg` (the image center-cropped and
resized square, once per image), `txt` (raw caption), `json` ({"image", "concepts"}),
`tokens.npy` (int32 [77] open_clip token ids), `concepts.npy` (int64 [max_concepts] bank ids,
-1 padded) and `spans.npy` (int64 [max_concepts, max_concept_tokens] absolute token positions,
0 padded). The folder holds the shards (COCO: `<split>-NNNNNN.tar`) and `manifest.json`.
"""
from __future__ import annotations

import io
import json
import math
import multiprocessing
from collections import Counter
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np
import torch
import webdataset as wds
from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image as decode_tensor

from pipeline.atomic import atomic_path, write_json
from pipeline.datasets import shards
from pipeline.datasets.bpe_spans import TokenizedCaption, tokenize_caption
from pipeline.datasets.concepts import Concept, Extractor
from pipeline.datasets.readers import decode_image, list_captions, read_bytes
from pipeline.errors import DataError

MANIFEST = shards.MANIFEST
SOURCE_IMG2DATASET = "img2dataset"  # the manifest's `source` when its shards were made from img2dataset shards
JPEG_QUALITY = 95
_IMAGES_PER_BATCH = 256
_MEMBERS = ("jpg", "json", "tokens.npy", "concepts.npy", "spans.npy")


def square_jpeg(data: bytes, source: str, size: int) -> bytes:
    """The encoded image `data` center-cropped to a square and resized to `size` (bicubic), as JPEG."""
    image = decode_image(data, source).convert("RGB")
    buf = io.BytesIO()
    ImageOps.fit(image, (size, size), Image.BICUBIC).save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _coco_jpeg(job: tuple[str, int]) -> bytes:
    path, size = job
    return square_jpeg(read_bytes(path), path, size)


@dataclass(frozen=True)
class EncodedCaption:
    """A caption's arrays as stored, the names of its kept concepts and why others were dropped."""
    tokens: np.ndarray
    concepts: np.ndarray
    spans: np.ndarray
    names: tuple[str, ...]
    dropped: Counter


def encode_caption(caption: TokenizedCaption, concepts: list[Concept], bank_ids: dict[str, int],
                   max_concepts: int, max_concept_tokens: int) -> EncodedCaption:
    """Token positions of each concept, in order; a concept is dropped if some of its tokens
    were truncated away, if it has `max_concept_tokens` tokens or more, or past `max_concepts`."""
    ids = np.full(max_concepts, -1, np.int64)
    spans = np.zeros((max_concepts, max_concept_tokens), np.int64)
    names, dropped = [], Counter()
    for concept in concepts:
        positions = caption.positions(concept.char_spans)
        if caption.truncated(positions):
            dropped["truncated"] += 1
        elif len(positions) >= max_concept_tokens:
            dropped["too_long"] += 1
        elif len(names) == max_concepts:
            dropped["over_max"] += 1
        else:
            ids[len(names)] = bank_ids[concept.name]
            spans[len(names), :len(positions)] = positions
            names.append(concept.name)
    return EncodedCaption(caption.tokens, ids, spans, tuple(names), dropped)


def _batched(items: Iterable, size: int) -> Iterator[list]:
    items = iter(items)
    while batch := list(islice(items, size)):
        yield batch


class Stats:
    """Counts over the written captions; `record` and `add_record` carry them through a shard's JSON record."""

    def __init__(self):
        self.captions = self.with_concept = self.concepts = 0
        self.dropped, self.per_concept = Counter(), Counter()

    def add(self, encoded: EncodedCaption) -> None:
        self.captions += 1
        self.with_concept += bool(encoded.names)
        self.concepts += len(encoded.names)
        self.dropped.update(encoded.dropped)
        self.per_concept.update(encoded.names)

    def record(self) -> dict:
        return {"captions": self.captions, "with_concept": self.with_concept, "concepts": self.concepts,
                "dropped": dict(self.dropped), "per_concept": dict(self.per_concept)}

    def add_record(self, record: dict) -> None:
        self.captions += record["captions"]
        self.with_concept += record["with_concept"]
        self.concepts += record["concepts"]
        self.dropped.update(record["dropped"])
        self.per_concept.update(record["per_concept"])

    def summary(self, images: int) -> dict:
        return {"captions": self.captions, "images": images,
                "captions_with_concept": self.with_concept,
                "fraction_with_concept": self.with_concept / max(self.captions, 1),
                "concepts": self.concepts,
                "concepts_per_caption": self.concepts / max(self.captions, 1),
                "distinct_concepts": len(self.per_concept),
                **{f"concepts_dropped_{why}": self.dropped[why]
                   for why in ("truncated", "too_long", "over_max")}}


@dataclass(frozen=True)
class CaptionedImage:
    """An image, already square-cropped and encoded, with its captions; sample keys are `<key>_<caption index>`."""
    key: str
    image_key: str
    jpeg: bytes
    captions: tuple[str, ...]


@dataclass(frozen=True)
class CaptionEncoder:
    """Captioned images -> the samples the shards store, one per caption (both caption sources write through it)."""
    extract: Extractor
    bank: tuple[str, ...]
    max_concepts: int = 32
    max_concept_tokens: int = 16

    def samples(self, images: Iterable[CaptionedImage], stats: Stats) -> Iterator[dict]:
        bank_ids = {name: i for i, name in enumerate(self.bank)}
        for batch in _batched(images, _IMAGES_PER_BATCH):
            rows = [(image, index, text) for image in batch for index, text in enumerate(image.captions)]
            captions = [tokenize_caption(text) for *_, text in rows]
            found = self.extract([caption.text for caption in captions])
            for (image, index, text), caption, concepts in zip(rows, captions, found):
                enc = encode_caption(caption, concepts, bank_ids, self.max_concepts, self.max_concept_tokens)
                stats.add(enc)
                yield {"__key__": f"{image.key}_{index}", "jpg": image.jpeg, "txt": text,
                       "json": {"image": image.image_key, "concepts": list(enc.names)},
                       "tokens.npy": enc.tokens, "concepts.npy": enc.concepts, "spans.npy": enc.spans}


def manifest(split: str, names: list[str], sha256: dict[str, str], images: int, encoder: CaptionEncoder,
             stats: Stats, **extra) -> dict:
    """The shards' manifest: what `read_manifest` checks and align reads, and the counts of each concept."""
    return {"split": {"name": split, "shards": names,
                      "samples": stats.captions, "images": images},
            "sha256": sha256, "bank": list(encoder.bank), "context_length": DEFAULT_CONTEXT_LENGTH,
            "max_concepts": encoder.max_concepts, "max_concept_tokens": encoder.max_concept_tokens,
            "concept_counts": dict(stats.per_concept.most_common()), **extra}


def write_caption_shards(root: Path, split: str, out_dir: Path, bank: tuple[str, ...],
                         extract: Extractor, image_size: int, shard_size: int,
                         max_concepts: int = 32, max_concept_tokens: int = 16,
                         workers: int = 1) -> dict:
    """COCO captions of `split` under `root` (official layout) -> shards in `out_dir`,
    replaced atomically. Returns flat statistics; the manifest also counts each concept."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    refs = list_captions(Path(root), split)
    if not refs:
        raise DataError(f"{root}: no captioned COCO images in split {split!r}")
    encoder = CaptionEncoder(extract, bank, max_concepts, max_concept_tokens)
    stats = Stats()
    jobs = [(ref.image_path, image_size) for ref in refs]
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    try:
        jpegs = map(_coco_jpeg, jobs) if pool is None else pool.imap(
            _coco_jpeg, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers))))
        images = (CaptionedImage(ref.key, ref.key, jpeg, ref.captions) for ref, jpeg in zip(refs, jpegs))
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            with wds.ShardWriter(str(tmp / f"{split}-%06d.tar"), maxcount=shard_size,
                                 verbose=0, mtime=0) as sink:
                for sample in encoder.samples(images, stats):
                    sink.write(sample)
            names = sorted(p.name for p in tmp.glob("*.tar"))
            write_json(tmp / MANIFEST, manifest(split, names, {name: shards.file_sha256(tmp / name) for name in names},
                                                len(refs), encoder, stats))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return stats.summary(len(refs))


_MANIFEST_KEYS = {"split", "sha256", "bank", "context_length", "max_concepts", "max_concept_tokens"}


def read_manifest(out_dir: Path) -> dict:
    return shards.read_manifest(out_dir, _MANIFEST_KEYS, "caption shards")


class CaptionShards(NamedTuple):
    """The shards to train on, whether they came from img2dataset shards (web-scale: resampled when fewer than the
    loader's consumers) rather than COCO Captions, and for those the digests the stream checks as it reads them."""
    paths: list[str]
    web: bool = False
    digests: shards.Digests | None = None


def caption_shard_paths(out_dir: Path) -> CaptionShards:
    """The shards, checked in proportion to their size before any training starts.

    COCO Captions' shards are a bounded set (tens of GB at the paper's image size, minutes to hash): each is checked
    against the sha256 the manifest recorded here (`shards.verify_files`), so an edited shard stops the stage before
    it trains on anything. img2dataset's have no such bound: LAION-400M's are thousands of shards, terabytes, hours
    to hash on one machine before the first step. They are checked here for existence and the size the manifest
    recorded (`shards.verify_sizes`, one stat each: a missing or truncated shard still stops the stage at once), and
    the training stream hashes each shard as it reads it (`shards.Digests`), which costs little next to decoding its
    JPEGs and spreads over the loader workers: an edited shard of the same size stops the run at that shard's end,
    with the shard's name, after training on its samples. A shard the run stops reading halfway is not checked.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    names = manifest["split"]["shards"]
    paths = [str(out_dir / name) for name in names]
    if manifest.get("source") != SOURCE_IMG2DATASET:
        shards.verify_files(out_dir, {name: manifest["sha256"].get(name) for name in names}, "concepts")
        return CaptionShards(paths)
    shards.verify_sizes(out_dir, {name: manifest.get("bytes", {}).get(name) for name in names}, "concepts")
    return CaptionShards(paths, web=True, digests=shards.Digests(
        {path: manifest["sha256"].get(name) for path, name in zip(paths, names)}, "concepts"))


@dataclass(frozen=True)
class CaptionSample:
    key: str
    image_key: str
    jpeg: bytes  # the encoded image; `image` decodes it
    tokens: torch.Tensor  # int64 [77]
    concepts: torch.Tensor  # int64 [max_concepts], -1 padded
    spans: torch.Tensor  # int64 [max_concepts, max_concept_tokens], 0 padded

    @cached_property
    def image(self) -> torch.Tensor:
        """uint8 3xHxW RGB, decoded on first use: the feature cache's view skips images whose features it holds."""
        return decode_tensor(torch.frombuffer(bytearray(self.jpeg), dtype=torch.uint8), mode=ImageReadMode.RGB)


@lru_cache(maxsize=64)
def _npy_layout(header: bytes) -> tuple[np.dtype, tuple[int, ...], str]:
    """(dtype, shape, order) of a .npy header. The samples' arrays share a handful of headers, and numpy parses
    each one with `ast.literal_eval`, which took most of the time spent reading the arrays."""
    f = io.BytesIO(header)
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read(f)
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed")
    return dtype, shape, "F" if fortran_order else "C"


def _npy_header_size(data: bytes) -> int:
    """Bytes before a .npy file's data: magic, version, header length (2 bytes in format 1.0, 4 after) and header."""
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy file")
    if data[6] == 1:
        return 10 + int.from_bytes(data[8:10], "little")
    return 12 + int.from_bytes(data[8:12], "little")


def _array(sample: dict, member: str) -> torch.Tensor:
    """A member's .npy array as int64, what `np.load` gives, with the parsed header reused across samples."""
    data = sample[member]
    try:
        start = _npy_header_size(data)
        dtype, shape, order = _npy_layout(data[:start])
        array = np.frombuffer(data, dtype, count=math.prod(shape), offset=start).reshape(shape, order=order)
    except ValueError as err:
        raise DataError(f"{sample.get('__url__', '?')}: {member} of {sample.get('__key__', '?')!r}: {err}") from err
    return torch.from_numpy(array.astype(np.int64))


def decode_caption_sample(sample: dict) -> CaptionSample:
    """A raw WebDataset sample of the caption shards -> CaptionSample (its image decoded when first used)."""
    key = sample.get("__key__", "?")
    missing = [m for m in _MEMBERS if m not in sample]
    if missing:
        raise DataError(f"{sample.get('__url__', '?')}: caption sample {key!r} lacks {missing}")
    return CaptionSample(key, json.loads(sample["json"])["image"], sample["jpg"],
                         _array(sample, "tokens.npy"), _array(sample, "concepts.npy"),
                         _array(sample, "spans.npy"))
