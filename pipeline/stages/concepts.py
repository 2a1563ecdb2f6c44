"""concepts: find concept-bank entries in the COCO captions, track their CLIP token positions,
write one WebDataset sample per caption + manifest, and the statistics."""
from __future__ import annotations

import time

from pipeline import paths
from pipeline.atomic import check_writable, write_json
from pipeline.datasets.caption_shards import write_caption_shards
from pipeline.datasets.concept_bank import load_bank
from pipeline.datasets.concepts import concept_extractor
from pipeline.stages.common import main, parser


def run(args, params) -> None:
    cfg = params.concepts
    check_writable(files=[paths.CONCEPT_STATS], folders=[paths.CONCEPTS])
    start = time.perf_counter()
    bank = load_bank(cfg.bank, params.zeroshot.benchmarks)
    stats = write_caption_shards(
        paths.raw_dataset(params.data_root, "coco_captions"),
        cfg.split,
        paths.CONCEPTS,
        bank,
        concept_extractor(cfg.backend, bank, cfg.spacy_model),
        image_size=cfg.image_size,
        shard_size=cfg.shard_size,
        max_concepts=cfg.max_concepts,
        max_concept_tokens=cfg.max_concept_tokens,
        workers=params.prepare.workers,
    )
    write_json(paths.CONCEPT_STATS, stats)
    seconds = time.perf_counter() - start
    print(f"concepts ({cfg.backend}, {cfg.bank} bank of {len(bank)}): {stats['captions']} captions of "
          f"{stats['images']} images, {stats['fraction_with_concept']:.1%} with a concept, "
          f"{stats['concepts_per_caption']:.2f} per caption -> {paths.CONCEPTS} "
          f"({stats['captions'] / seconds:.0f} captions/s)")


if __name__ == "__main__":
    main(run, parser(__doc__).parse_args())
