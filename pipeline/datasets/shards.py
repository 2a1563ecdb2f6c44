"""Prepared datasets as WebDataset shards, and the loaders that read them back.

A prepared dataset is a folder of `<split>-NNNNNN.tar` shards plus `manifest.json`. Each
sample holds the original encoded image (never re-encoded) and a `label.png` of uint8
train ids (255 = ignore), or for a classification dataset (ImageNet) a `cls`: its class index
as text, WebDataset's convention.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.io import ImageReadMode, decode_image
from webdataset.tariterators import group_by_keys, tar_file_expander

from pipeline.atomic import atomic_path, write_json
from pipeline.datasets.readers import (ClassRef, SampleRef, class_ids, list_class_samples, list_samples, read_image,
                                       read_sample)
from pipeline.datasets.specs import CLASSIFICATION_SPLITS, LabelView, get_spec
from pipeline.errors import DataError

MANIFEST = "manifest.json"
IMAGE_EXTS = ("jpg", "png")


def _prepare_sample(job: tuple[str, SampleRef]) -> tuple[str, dict[str, bytes]]:
    """Read, validate and map one sample -> (key, {image ext: image bytes, "label.png": label PNG bytes})."""
    dataset, ref = job
    sample = read_sample(ref)
    label = get_spec(dataset).map_labels(sample.label, sample.label_source)
    width, height = Image.open(io.BytesIO(sample.image)).size
    if label.shape != (height, width):
        if dataset != "gta5":
            raise DataError(
                f"{sample.label_source}: label is {label.shape[1]}x{label.shape[0]} (WxH) but "
                f"image {sample.image_source} is {width}x{height}; expected equal sizes")
        # A few real GTA V labels differ in size from their image; the reference resizes them.
        label = np.array(Image.fromarray(label).resize((width, height), Image.NEAREST))
    buf = io.BytesIO()
    Image.fromarray(label).save(buf, "PNG")
    return sample.key, {sample.image_ext: sample.image, "label.png": buf.getvalue()}


def _prepare_class_sample(ref: ClassRef) -> tuple[str, dict[str, bytes]]:
    """Read and check one image of a classification dataset -> (key, {image ext: image bytes, "cls": class})."""
    image, ext = read_image(ref.image_path)
    return ref.key, {ext: image, "cls": str(ref.label).encode()}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_shards(samples, out_dir: Path, split: str, shard_size: int) -> tuple[int, list[str]]:
    names, writer, count = [], None, 0
    try:
        for key, entries in samples:
            if count % shard_size == 0:
                if writer is not None:
                    writer.close()
                names.append(f"{split}-{len(names):06d}.tar")
                writer = wds.TarWriter(str(out_dir / names[-1]), mtime=0)
            writer.write({"__key__": key, **entries})
            count += 1
    finally:
        if writer is not None:
            writer.close()
    return count, names


def prepare_dataset(dataset: str, root: Path, out_dir: Path, shard_size: int, workers: int) -> dict:
    """Read every split of `dataset` from its official layout under `root` into shards.

    Each sample is checked (image decodes, label values legal, image and label sizes equal;
    GTA V labels of another size are resized nearest to the image) and its label mapped to
    train ids. Unlike the authors' code, which silently skips images whose label has a single
    value, such images are kept: dropping them would change the data without notice.
    A classification dataset's images are checked to decode and stored with their class; its manifest's
    `classes` are the class ids (ImageNet's wnids) and its `ignore_index` is null.
    `out_dir` is replaced atomically, so a failure leaves an earlier version intact.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if dataset in CLASSIFICATION_SPLITS:
        jobs = {split: list_class_samples(dataset, Path(root), split) for split in CLASSIFICATION_SPLITS[dataset]}
        classes, ignore_index, prepare = class_ids(dataset), None, _prepare_class_sample
    else:
        spec = get_spec(dataset)
        jobs = {split: [(dataset, ref) for ref in list_samples(dataset, Path(root), split)] for split in spec.splits}
        classes, ignore_index, prepare = spec.classes, spec.ignore_index, _prepare_sample
    manifest = {"dataset": dataset, "classes": list(classes), "ignore_index": ignore_index, "splits": {}}
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    try:
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            for split, split_jobs in jobs.items():
                if pool is None:
                    samples = map(prepare, split_jobs)
                else:
                    chunk = max(1, min(64, len(split_jobs) // (4 * workers)))
                    samples = pool.imap(prepare, split_jobs, chunksize=chunk)
                count, names = _write_shards(samples, tmp, split, shard_size)
                manifest["splits"][split] = {"count": count, "shards": names,
                                             "sha256": {n: file_sha256(tmp / n) for n in names}}
            write_json(tmp / MANIFEST, manifest)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return manifest


_MANIFEST_KEYS = {"dataset", "classes", "ignore_index", "splits"}


def read_manifest(out_dir: Path, required: set[str] = _MANIFEST_KEYS, what: str = "shards") -> dict:
    """`out_dir/manifest.json`, checked to hold the `required` keys."""
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: missing or unreadable {what} manifest ({err})") from err
    if not isinstance(manifest, dict) or not required <= manifest.keys():
        raise DataError(f"{path}: corrupt manifest, expected keys {sorted(required)}")
    return manifest


def _split_entry(out_dir: Path, split: str) -> dict:
    splits = read_manifest(out_dir)["splits"]
    if split not in splits:
        raise DataError(f"{Path(out_dir) / MANIFEST}: no split {split!r}; "
                        f"available: {sorted(splits)}")
    return splits[split]


def shard_paths(out_dir: Path, split: str) -> list[str]:
    """The split's shards, checked first (`verify_shards`)."""
    return [str(Path(out_dir) / name) for name in verify_shards(out_dir, split)]


def verify_shards(out_dir: Path, split: str) -> list[str]:
    """The names of the split's shards, each checked against the sha256 the manifest recorded (`verify_files`)."""
    entry = _split_entry(out_dir, split)
    stage = f"prepare@{read_manifest(out_dir)['dataset']}"
    verify_files(Path(out_dir), {name: entry["sha256"].get(name) for name in entry["shards"]}, stage)
    return entry["shards"]


_verified: set[tuple] = set()


def verify_files(folder: Path, sha256: dict[str, str | None], stage: str) -> None:
    """Check the files of a stage's output `folder` against the sha256 its manifest recorded when `stage` wrote
    them. A missing, truncated or edited file stops the reader in one line naming it and the command that
    rewrites it, instead of a tar error deep in a loader (or, worse, a silently different dataset). A file is
    hashed once per process while its size and modification time stay the same.
    """
    for name, expected in sha256.items():
        path = folder / name
        stat = _stat(path, stage)
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expected)
        if key in _verified:
            continue
        if file_sha256(path) != expected:
            raise _sha256_error(path, stage)
        _verified.add(key)


def verify_sizes(folder: Path, sizes: dict[str, int | None], stage: str) -> None:
    """Check that each file of a stage's output `folder` exists with the size its manifest recorded: one stat per
    file, where `verify_files` reads every byte. It catches missing and truncated files, not edited ones."""
    for name, expected in sizes.items():
        path = folder / name
        size = _stat(path, stage).st_size
        if size != expected:
            raise DataError(f"{path}: {size} bytes, where {folder / MANIFEST} recorded {expected} (truncated or "
                            f"modified since {stage} wrote it); re-run: dvc repro -f -s {stage}")


def _stat(path: Path, stage: str):
    try:
        return path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: listed in {path.parent / MANIFEST} but missing; re-run: dvc repro -f -s {stage}") \
            from None


def _sha256_error(path: Path, stage: str, detail: str = "") -> DataError:
    return DataError(f"{path}: sha256 differs from the one {path.parent / MANIFEST} recorded (truncated or modified "
                     f"since {stage} wrote it{detail}); re-run: dvc repro -f -s {stage}")


@dataclass(frozen=True)
class Digests:
    """The sha256 a manifest recorded for each shard (by path) and the stage that wrote them, for a stream that
    checks each shard as it reads it (`read_samples`) instead of hashing all of them before it starts."""
    sha256: dict[str, str]
    stage: str

    def check(self, path: str, found: str) -> None:
        expected = self.sha256.get(path)
        if found != expected:
            raise _sha256_error(Path(path), self.stage,
                                f": expected {expected}, found {found} when read to its end, after training on its "
                                f"samples: once it is rewritten, restart that training with --fresh")


class _HashingReader:
    """A binary file that hashes the bytes read from it; `digest` reads the rest first (a tar reader stops at the
    archive's end marker, before the padding after it)."""

    def __init__(self, file: BinaryIO):
        self.file, self.sha256 = file, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.sha256.update(data)
        return data

    def digest(self) -> str:
        while self.read(1 << 20):
            pass
        return self.sha256.hexdigest()

    def __repr__(self) -> str:
        return self.file.name


def _opened(shards: Iterable[str], digests: Digests | None) -> Iterator[dict]:
    for shard in shards:
        with open(shard, "rb") as file:
            stream = file if digests is None else _HashingReader(file)
            yield {"url": shard, "stream": stream, "local_path": shard}
            if digests is not None:  # resumed once the tar reader has finished this shard
                digests.check(shard, stream.digest())


def read_samples(shards: Iterable[str], digests: Digests | None = None) -> Iterator[dict]:
    """Raw samples of the local `shards` in order (any iterable, an endless one too), as WebDataset's tar reader
    gives them, without its node/worker splitting. With `digests` each shard's sha256 is checked as it is read: a
    mismatch raises a DataError once the shard's last sample has been read."""
    return group_by_keys(tar_file_expander(_opened(shards, digests)))


def decode_sample(sample: dict) -> tuple[str, torch.Tensor, torch.Tensor]:
    """WebDataset sample -> (key, image uint8 3xHxW RGB, label uint8 HxW), or for a classification sample
    (key, image, class index as an int64 scalar tensor)."""
    key = sample["__key__"]
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    if ext is None or not ("label.png" in sample or "cls" in sample):
        raise DataError(f"{sample.get('__url__', '?')}: sample {key!r} lacks an image, or a label.png or cls")
    image = decode_image(torch.frombuffer(bytearray(sample[ext]), dtype=torch.uint8),
                         mode=ImageReadMode.RGB)
    if "cls" in sample:
        return key, image, torch.tensor(int(sample["cls"]))
    label = decode_image(torch.frombuffer(bytearray(sample["label.png"]), dtype=torch.uint8),
                         mode=ImageReadMode.GRAY)[0]
    return key, image, label


class SplitStream(torch.utils.data.IterableDataset):
    """A split's samples decoded one at a time, in manifest order: (key, image uint8 3xHxW, label uint8 HxW), the
    labels remapped to a `view`'s train ids.

    `rank` and `world_size` keep every world_size-th sample from the rank-th (a process's share of an evaluation).
    Under a DataLoader each of `workers` workers decodes every workers-th of those, and the loader hands them back
    in the same order: what comes out does not depend on the number of workers.
    """

    def __init__(self, out_dir: Path, split: str, view: LabelView | None = None, rank: int = 0, world_size: int = 1):
        super().__init__()
        if view is not None and (dataset := read_manifest(out_dir)["dataset"]) != view.base:
            raise DataError(f"{Path(out_dir) / MANIFEST}: shards of {dataset!r}, but view "
                            f"{view.name!r} is of {view.base!r}")
        self.out_dir, self.split, self.view = Path(out_dir), split, view
        self.count = _split_entry(out_dir, split)["count"]
        self.shards = shard_paths(out_dir, split)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(range(self.rank, self.count, self.world_size))

    def keys(self) -> list[str]:
        """The keys of the samples, in order, without decoding them."""
        return [sample["__key__"] for sample in read_samples(self.shards)][self.rank::self.world_size]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        seen = 0
        for index, sample in enumerate(read_samples(self.shards)):
            seen += 1
            if index % self.world_size == self.rank and index // self.world_size % workers == worker:
                key, image, label = decode_sample(sample)
                yield key, image, label if self.view is None else self.view.remap(label)
        if seen != self.count:
            raise DataError(f"{self.out_dir}: split {self.split!r} has {seen} samples in its "
                            f"shards, the manifest says {self.count}")


def split_loader(out_dir: Path, split: str, workers: int, device: torch.device, view: LabelView | None = None,
                 rank: int = 0, world_size: int = 1) -> DataLoader:
    """`SplitStream`'s samples, decoded by `workers` DataLoader workers (0: by this process), pinned for a GPU."""
    return DataLoader(SplitStream(out_dir, split, view, rank, world_size), batch_size=None, num_workers=workers,
                      pin_memory=device.type == "cuda")


def load_split(out_dir: Path, split: str,
               view: LabelView | None = None) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """All samples of a split, decoded, in manifest order (`SplitStream`, at once)."""
    return list(SplitStream(out_dir, split, view))


def _image_and_label(sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return decode_sample(sample)[1:]


def _generator(*ints: int) -> torch.Generator:
    seed = int(np.random.SeedSequence(list(ints)).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(seed)


def _buffer_shuffle(items, size: int, g: torch.Generator):
    buf, size = [], max(size, 1)
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = int(torch.randint(len(buf), (), generator=g))
        buf[j], item = item, buf[j]
        yield item
    while buf:
        j = int(torch.randint(len(buf), (), generator=g))
        buf[j], buf[-1] = buf[-1], buf[j]
        yield buf.pop()


class TrainStream(torch.utils.data.IterableDataset):
    """Infinite, deterministic training stream over shards.

    Epoch e visits the shards in an order drawn from (seed, e). The consumers (ranks x
    DataLoader workers) split the shards between them when there are enough; otherwise every
    consumer reads all shards and keeps the samples whose index is its own modulo the number
    of consumers. Samples are shuffled with a buffer, decoded by `decode` into a tuple
    (default: (image, label) of a prepared segmentation sample) and passed to transform(*decoded, generator).
    The shuffle and each sample's generator are seeded from the seed, the consumer and the number
    of consumers only, so 1 process x 2 workers and 2 processes x 1 worker see the same batches.

    `resample` (for web-scale shards, which have no epochs to keep exact) changes the fallback when the shards are
    fewer than the consumers: each consumer draws whole shards with replacement (`wds.ResampledShards`, seeded by
    the seed and the consumer), one endless epoch, instead of every consumer reading every shard.

    `skip_batches` resumes a stream: the DataLoader batches of `batch_size` samples that this rank
    already consumed (a DataLoader takes batch i from worker i mod workers) are read but neither
    decoded nor transformed, so what follows is what an uninterrupted stream would have given.

    `digests` checks each shard's sha256 as it is read (`read_samples`), for shards too many to hash before training.

    The split is explicit rather than `wds.split_by_node` / `wds.split_by_worker` because the consumer index does
    more than pick shards: it seeds the shuffle buffer, each sample's generator and the resampled draws, and sets
    which batches a resumed rank skips. Those splitters read the rank from RANK / WORLD_SIZE or the default process
    group at iteration time and do not return it, so the index the seeds use and the one the split used would come
    from two places, and a stream made for a given rank (by `Processes`, or by a test) would be split again by
    whatever the environment says. Here rank and world size come from the caller only. With one process and no
    loader workers (the miniature) both ways pass every shard through, in the epoch's order.
    """

    def __init__(self, shards: list[str], transform, seed: int, shuffle_buffer: int = 256,
                 rank: int = 0, world_size: int = 1, decode=None, skip_batches: int = 0, batch_size: int = 1,
                 resample: bool = False, digests: Digests | None = None):
        super().__init__()
        if not shards:
            raise DataError("TrainStream needs at least one shard")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.shards, self.transform, self.seed = list(shards), transform, seed
        self.shuffle_buffer, self.rank, self.world_size = shuffle_buffer, rank, world_size
        self.decode = decode or _image_and_label
        self.skip_batches, self.batch_size, self.resample = skip_batches, batch_size, resample
        self.digests = digests

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        consumer, consumers = self.rank * workers + worker, self.world_size * workers
        skip = len(range(worker, self.skip_batches, workers)) * self.batch_size
        position = 0
        for epoch in itertools.count():
            order = torch.randperm(len(self.shards), generator=_generator(self.seed, epoch))
            shards = [self.shards[i] for i in order.tolist()]
            if len(shards) >= consumers:
                samples = read_samples(shards[consumer::consumers], self.digests)
            elif self.resample:
                drawn = wds.ResampledShards(self.shards, seed=self.seed, worker_seed=lambda: consumer,
                                            deterministic=True)
                samples = read_samples((shard["url"] for shard in drawn), self.digests)
            else:
                samples = itertools.islice(read_samples(shards, self.digests), consumer, None, consumers)
            empty = True
            shuffle = _generator(self.seed, consumers, consumer, epoch)
            for sample in _buffer_shuffle(samples, self.shuffle_buffer, shuffle):
                empty, position = False, position + 1
                if position > skip:
                    yield self.transform(*self.decode(sample), _generator(self.seed, consumers, consumer, position))
            if empty:
                raise DataError(f"TrainStream: no samples for rank {self.rank} worker {worker} "
                                f"in {len(shards)} shard(s), e.g. {shards[0]}")
