"""COCO captions with their concepts as WebDataset shards, and the decoder that reads them back.

One sample per caption (as the authors' img2dataset rows): `jpg` (the image center-cropped and
resized square, once per image), `txt` (raw caption), `json` ({"image", "concepts"}),
`tokens.npy` (int32 [77] open_clip token ids), `concepts.npy` (int64 [max_concepts] bank ids,
-1 padded) and `spans.npy` (int64 [max_concepts, max_concept_tokens] absolute token positions,
0 padded). The folder holds `<split>-NNNNNN.tar` shards and `manifest.json`.
"""
from __future__ import annotations

import io
import json
import multiprocessing
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

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
from pipeline.datasets.readers import CaptionRef, decode_image, list_captions, read_bytes
from pipeline.errors import DataError

MANIFEST = shards.MANIFEST
JPEG_QUALITY = 95
_IMAGES_PER_BATCH = 256
_MEMBERS = ("jpg", "json", "tokens.npy", "concepts.npy", "spans.npy")


def square_jpeg(job: tuple[str, int]) -> bytes:
    """The image at `path` center-cropped to a square and resized to `size` (bicubic), as JPEG."""
    path, size = job
    image = decode_image(read_bytes(path), path).convert("RGB")
    buf = io.BytesIO()
    ImageOps.fit(image, (size, size), Image.BICUBIC).save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


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


def _batches(refs: list[CaptionRef], images, size: int):
    """(refs, their images) in groups of `size`, images consumed from the iterator `images`."""
    for start in range(0, len(refs), size):
        batch = refs[start:start + size]
        yield batch, list(islice(images, len(batch)))


class _Stats:
    def __init__(self):
        self.captions = self.with_concept = self.concepts = 0
        self.dropped, self.per_concept = Counter(), Counter()

    def add(self, encoded: EncodedCaption) -> None:
        self.captions += 1
        self.with_concept += bool(encoded.names)
        self.concepts += len(encoded.names)
        self.dropped.update(encoded.dropped)
        self.per_concept.update(encoded.names)

    def summary(self, images: int) -> dict:
        return {"captions": self.captions, "images": images,
                "captions_with_concept": self.with_concept,
                "fraction_with_concept": self.with_concept / max(self.captions, 1),
                "concepts": self.concepts,
                "concepts_per_caption": self.concepts / max(self.captions, 1),
                "distinct_concepts": len(self.per_concept),
                **{f"concepts_dropped_{why}": self.dropped[why]
                   for why in ("truncated", "too_long", "over_max")}}


def _samples(refs, images, extract: Extractor, bank_ids, max_concepts, max_concept_tokens,
             stats: _Stats):
    for batch, jpegs in _batches(refs, images, _IMAGES_PER_BATCH):
        rows = [(ref, jpeg, index, text) for ref, jpeg in zip(batch, jpegs)
                for index, text in enumerate(ref.captions)]
        captions = [tokenize_caption(text) for *_, text in rows]
        found = extract([caption.text for caption in captions])
        for (ref, jpeg, index, text), caption, concepts in zip(rows, captions, found):
            enc = encode_caption(caption, concepts, bank_ids, max_concepts, max_concept_tokens)
            stats.add(enc)
            yield {"__key__": f"{ref.key}_{index}", "jpg": jpeg, "txt": text,
                   "json": {"image": ref.key, "concepts": list(enc.names)},
                   "tokens.npy": enc.tokens, "concepts.npy": enc.concepts, "spans.npy": enc.spans}


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
    bank_ids = {name: i for i, name in enumerate(bank)}
    stats = _Stats()
    jobs = [(ref.image_path, image_size) for ref in refs]
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    try:
        images = map(square_jpeg, jobs) if pool is None else pool.imap(
            square_jpeg, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers))))
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            with wds.ShardWriter(str(tmp / f"{split}-%06d.tar"), maxcount=shard_size,
                                 verbose=0, mtime=0) as sink:
                for sample in _samples(refs, images, extract, bank_ids, max_concepts,
                                       max_concept_tokens, stats):
                    sink.write(sample)
            names = sorted(p.name for p in tmp.glob("*.tar"))
            write_json(tmp / MANIFEST, {
                "split": {"name": split, "shards": names, "samples": stats.captions, "images": len(refs)},
                "sha256": {name: shards.file_sha256(tmp / name) for name in names},
                "bank": list(bank), "context_length": DEFAULT_CONTEXT_LENGTH,
                "max_concepts": max_concepts, "max_concept_tokens": max_concept_tokens,
                "concept_counts": dict(stats.per_concept.most_common())})
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return stats.summary(len(refs))


_MANIFEST_KEYS = {"split", "sha256", "bank", "context_length", "max_concepts", "max_concept_tokens"}


def read_manifest(out_dir: Path) -> dict:
    return shards.read_manifest(out_dir, _MANIFEST_KEYS, "caption shards")


def caption_shard_paths(out_dir: Path) -> list[str]:
    """The shards, each checked against the sha256 the manifest recorded (`shards.verify_files`)."""
    manifest = read_manifest(out_dir)
    names = manifest["split"]["shards"]
    shards.verify_files(Path(out_dir), {name: manifest["sha256"].get(name) for name in names}, "concepts")
    return [str(Path(out_dir) / name) for name in names]


@dataclass(frozen=True)
class CaptionSample:
    key: str
    image_key: str
    image: torch.Tensor  # uint8 3xHxW RGB
    tokens: torch.Tensor  # int64 [77]
    concepts: torch.Tensor  # int64 [max_concepts], -1 padded
    spans: torch.Tensor  # int64 [max_concepts, max_concept_tokens], 0 padded


def _array(sample: dict, member: str) -> torch.Tensor:
    return torch.from_numpy(np.load(io.BytesIO(sample[member]))).long()


def decode_caption_sample(sample: dict) -> CaptionSample:
    """A raw WebDataset sample of the caption shards -> CaptionSample."""
    key = sample.get("__key__", "?")
    missing = [m for m in _MEMBERS if m not in sample]
    if missing:
        raise DataError(f"{sample.get('__url__', '?')}: caption sample {key!r} lacks {missing}")
    image = decode_tensor(torch.frombuffer(bytearray(sample["jpg"]), dtype=torch.uint8),
                          mode=ImageReadMode.RGB)
    return CaptionSample(key, json.loads(sample["json"])["image"], image,
                         _array(sample, "tokens.npy"), _array(sample, "concepts.npy"),
                         _array(sample, "spans.npy"))
