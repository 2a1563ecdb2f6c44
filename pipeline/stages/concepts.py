"""concepts: find concept-bank entries in the captions (COCO Captions, or img2dataset shards), track their CLIP
token positions, write one WebDataset sample per caption + manifest, and the statistics.

With concepts.source img2dataset the shards are written shard for shard and only those missing or out of date are
redone. `--shards START:END` or `--task I/N` (a SLURM array task) writes a range of them without the manifest;
`--merge` then writes the manifest and statistics once all exist. Without these options the stage does both.
"""
from __future__ import annotations

import time

from pipeline import paths
from pipeline.atomic import check_writable, write_json
from pipeline.config import ConceptsCfg
from pipeline.datasets.caption_shards import write_caption_shards
from pipeline.datasets.concept_bank import load_bank
from pipeline.datasets.concepts import concept_extractor
from pipeline.datasets.img2dataset import expand_shards
from pipeline.datasets.web_caption_shards import (ConceptSpec, merge_web_shards, shard_range, task_range,
                                                  update_web_shards)
from pipeline.errors import PipelineError
from pipeline.stages.common import main, parser


def run(args, params) -> None:
    cfg = params.concepts
    check_writable(files=[paths.CONCEPT_STATS], folders=[paths.CONCEPTS])
    start = time.perf_counter()
    bank = load_bank(cfg.bank, params.zeroshot.benchmarks)
    if cfg.source == "img2dataset":
        stats = _web_shards(args, cfg, bank, params.prepare.workers)
        if stats is None:
            return
    elif args.shards or args.task or args.merge:
        raise PipelineError("--shards, --task and --merge apply to concepts.source: img2dataset only")
    else:
        stats = write_caption_shards(
            paths.raw_dataset(params.data_root, cfg.source), cfg.split, paths.CONCEPTS, bank,
            concept_extractor(cfg.backend, bank, cfg.spacy_model), image_size=cfg.image_size,
            shard_size=cfg.shard_size, max_concepts=cfg.max_concepts, max_concept_tokens=cfg.max_concept_tokens,
            workers=params.prepare.workers)
    write_json(paths.CONCEPT_STATS, stats)
    seconds = time.perf_counter() - start
    print(f"concepts ({cfg.backend}, {cfg.bank} bank of {len(bank)}): {stats['captions']} captions of "
          f"{stats['images']} images, {stats['fraction_with_concept']:.1%} with a concept, "
          f"{stats['concepts_per_caption']:.2f} per caption -> {paths.CONCEPTS} "
          f"({stats['captions'] / seconds:.0f} captions/s)")


def _web_shards(args, cfg: ConceptsCfg, bank: tuple[str, ...], processes: int) -> dict | None:
    """Write the selected shards that are missing or out of date; merge unless a range was selected. Returns the
    statistics of the merge, or None after a range."""
    sources = expand_shards(cfg.shards)
    spec = ConceptSpec(bank, cfg.backend, cfg.spacy_model, cfg.image_size, cfg.max_concepts, cfg.max_concept_tokens)
    if not args.merge:
        chosen = (shard_range(args.shards, len(sources)) if args.shards else
                  task_range(args.task, len(sources)) if args.task else slice(None))
        selected = sources[chosen]
        start = time.perf_counter()
        written = update_web_shards(selected, paths.CONCEPTS, spec, processes)
        print(f"concepts: {len(written)} of {len(selected)} shard(s) written, the others current "
              f"({time.perf_counter() - start:.0f}s, {processes} process(es)) -> {paths.CONCEPTS}")
        if args.shards or args.task:
            return None
    return merge_web_shards(sources, paths.CONCEPTS, spec)


if __name__ == "__main__":
    p = parser(__doc__)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--shards", metavar="START:END", help="write only these input shards (indices from 0)")
    where.add_argument("--task", metavar="I/N", help="write only array task I's share of N (e.g. "
                       "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    where.add_argument("--merge", action="store_true", help="only write the manifest; every shard must be current")
    main(run, p.parse_args())
