"""Concept shards from img2dataset shards, shard for shard: output `<name>.tar` is made from input `<name>.tar`.

Work therefore splits by input shard: over processes here (`update_web_shards`), over machines by shard ranges (a
SLURM array, README). Each output shard is renamed into place whole, then a JSON record beside it
(`records/<name>.json`) notes the input's size and mtime, the digest of what made it (`ConceptSpec.fingerprint`)
and its counts. A shard is redone only when its record is missing or no longer matches, so a killed or repeated
run redoes only what is missing or changed. `merge_web_shards` writes the manifest once every shard is current;
any shard update removes the manifest first, so a folder with a manifest is always complete. The manifest records
each shard's sha256 and size: align checks the sizes at start and the digests as it reads (`caption_shard_paths`).
"""
from __future__ import annotations

import functools
import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip
import spacy
import webdataset as wds

from pipeline.atomic import atomic_path, write_json
from pipeline.datasets import bpe_spans, caption_shards, concepts, img2dataset
from pipeline.datasets.caption_shards import (MANIFEST, SOURCE_IMG2DATASET, CaptionedImage, CaptionEncoder, Stats,
                                              square_jpeg)
from pipeline.datasets.concepts import concept_extractor
from pipeline.datasets.img2dataset import read_shard
from pipeline.datasets.shards import file_sha256
from pipeline.errors import DataError

RECORDS = "records"
_extractor = functools.cache(concept_extractor)  # one per worker process, reused across its shards


@dataclass(frozen=True)
class ConceptSpec:
    """What makes a concept shard; picklable, so each worker process builds its own extractor from it."""
    bank: tuple[str, ...]
    backend: str
    spacy_model: str
    image_size: int
    max_concepts: int
    max_concept_tokens: int

    def encoder(self) -> CaptionEncoder:
        return CaptionEncoder(_extractor(self.backend, self.bank, self.spacy_model), self.bank,
                              self.max_concepts, self.max_concept_tokens)

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of the spec, the library versions and the code that turns captions into shards: a change to any
        of them makes every shard out of date."""
        code = [Path(m.__file__).read_bytes() for m in (bpe_spans, caption_shards, concepts, img2dataset)]
        digest = hashlib.sha256(json.dumps([asdict(self), spacy.__version__, open_clip.__version__]).encode())
        for text in code:
            digest.update(hashlib.sha256(text).digest())
        return digest.hexdigest()


def _input_stat(source: Path) -> dict:
    stat = source.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _record_path(out_dir: Path, name: str) -> Path:
    return out_dir / RECORDS / f"{name}.json"


def current_record(source: Path, out_dir: Path, spec: ConceptSpec) -> dict | None:
    """The record of `source`'s concept shard if that shard is whole and was made from this input by this spec."""
    try:
        record = json.loads(_record_path(out_dir, source.name).read_text())
        size = (out_dir / source.name).stat().st_size
    except (OSError, ValueError):
        return None
    if (record.get("input") == _input_stat(source) and record.get("fingerprint") == spec.fingerprint
            and record.get("bytes") == size):
        return record
    return None


def write_web_shard(source: Path, out_dir: Path, spec: ConceptSpec) -> dict:
    """The concept shard of one img2dataset shard, then its record; returns the record."""
    stats, encoder = Stats(), spec.encoder()
    images = (CaptionedImage(web.key, web.image_key, square_jpeg(web.image, f"{source}: {web.key}", spec.image_size),
                             (web.caption,)) for web in read_shard(source))
    with atomic_path(out_dir / source.name) as tmp:
        with wds.TarWriter(str(tmp), mtime=0) as sink:
            for sample in encoder.samples(images, stats):
                sink.write(sample)
        record = {"input": _input_stat(source), "fingerprint": spec.fingerprint, "bytes": tmp.stat().st_size,
                  "sha256": file_sha256(tmp), "stats": stats.record()}
    write_json(_record_path(out_dir, source.name), record)
    return record


def _write_job(job: tuple[Path, Path, ConceptSpec]) -> str:
    write_web_shard(*job)
    return job[0].name


def update_web_shards(sources: list[Path], out_dir: Path, spec: ConceptSpec, processes: int = 1) -> list[str]:
    """Write the concept shards of `sources` that are missing or out of date, `processes` shards at a time; returns
    the names written."""
    todo = [source for source in sources if current_record(source, out_dir, spec) is None]
    if not todo:
        return []
    (out_dir / MANIFEST).unlink(missing_ok=True)
    jobs = [(source, out_dir, spec) for source in todo]
    if processes > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(processes, len(jobs))) as pool:
            return list(pool.map(_write_job, jobs))
    return [_write_job(job) for job in jobs]


def _remove_others(out_dir: Path, names: set[str]) -> None:
    """Remove what an earlier run left that is not one of `names`' shards or records (another source's shards)."""
    keep = {out_dir / MANIFEST} | {out_dir / n for n in names} | {_record_path(out_dir, n) for n in names}
    for path in [*out_dir.iterdir(), *(out_dir / RECORDS).iterdir()]:
        if path.is_file() and path not in keep:
            path.unlink()


def merge_web_shards(sources: list[Path], out_dir: Path, spec: ConceptSpec) -> dict:
    """The manifest of the concept shards of `sources`, once each is current; returns the statistics."""
    records = {source.name: current_record(source, out_dir, spec) for source in sources}
    stale = [name for name, record in records.items() if record is None]
    if stale:
        raise DataError(f"{out_dir}: {len(stale)} of {len(sources)} concept shards missing or out of date (first: "
                        f"{', '.join(stale[:3])}); write them with python -m pipeline.stages.concepts "
                        f"[--shards START:END], then merge")
    _remove_others(out_dir, set(records))
    stats = Stats()
    for record in records.values():
        stats.add_record(record["stats"])
    names = list(records)
    sha256, sizes = ({name: record[key] for name, record in records.items()} for key in ("sha256", "bytes"))
    write_json(out_dir / MANIFEST, caption_shards.manifest("train", names, sha256, stats.captions, spec.encoder(),
                                                           stats, source=SOURCE_IMG2DATASET, bytes=sizes))
    return stats.summary(stats.captions)


def shard_range(text: str, count: int) -> slice:
    """`START:END` (python slice bounds, either may be empty) of `count` shards, checked."""
    start, sep, end = text.partition(":")
    try:
        bounds = slice(int(start) if start else None, int(end) if end else None)
    except ValueError:
        bounds = None
    if not sep or bounds is None or any(b is not None and b < 0 for b in (bounds.start, bounds.stop)):
        raise DataError(f"--shards {text!r}: expected START:END, shard indices from 0 (e.g. 0:100)")
    if len(range(count)[bounds]) == 0:
        raise DataError(f"--shards {text!r} selects none of the {count} input shards")
    return bounds


def task_range(text: str, count: int) -> slice:
    """The shards of array task `I/N` (e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT) of `count` shards:
    contiguous, the N ranges' sizes differing by at most one."""
    task, sep, tasks = text.partition("/")
    if not (sep and task.isdigit() and tasks.isdigit() and int(task) < int(tasks)):
        raise DataError(f"--task {text!r}: expected I/N with 0 <= I < N (a SLURM array --array=0-<N-1>)")
    task, tasks = int(task), int(tasks)
    return slice(task * count // tasks, (task + 1) * count // tasks)
