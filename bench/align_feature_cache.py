"""align@<tower>-<method> throughput with and without the frozen-tower feature cache.

Runs the text alignment on the concept shards of the current study (`dvc repro concepts` and the
tower's pretrain@ first) with `align.feature_cache` none and memory, and prints samples/s, seconds
and the cache hit rate. The tower's forward is what the cache skips (about 69 % of a step in the
SimZSS paper); on the miniature's toy towers the text tower dominates, so the gain there is small.

    python bench/align_feature_cache.py --tower supervised --steps 60
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile

from pipeline import paths
from pipeline.config import load_params
from pipeline.datasets.caption_shards import caption_shard_paths
from pipeline.networks.tower import build_tower
from pipeline.training.align import align_text
from pipeline.training.checkpoint import Checkpointer
from pipeline.training.distributed import Processes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--tower", default="supervised")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--concept-weight", type=float, default=0.05)
    args = p.parse_args()
    params = load_params(args.params)
    cfg = params.align
    weights = paths.encoder_weights(args.tower, cfg.size)
    shards = caption_shard_paths(paths.CONCEPTS)
    print(f"tower {args.tower}, batch {cfg.batch_size}, {args.steps} steps, image {cfg.image_size} px")
    print("cache    samples/s  seconds  hit rate")
    for cache in ("none", "memory"):
        run_cfg = dataclasses.replace(cfg, feature_cache=cache, epochs=1,
                                      samples_per_epoch=args.steps * cfg.batch_size, log_every=args.steps)
        tower = build_tower(params.tower_variant(args.tower), weights, cfg.image_size, cfg.normalization)
        with tempfile.TemporaryDirectory() as tmp:
            no_checkpoints = Checkpointer(tmp, {}, every=0, procs=Processes(), workers=cfg.workers)
            m = align_text(tower, run_cfg, params.text_tower, args.concept_weight, shards, live_dir=None,
                           checkpointer=no_checkpoints, cache_dir=tmp).metrics
        print(f"{cache:<7}  {m['samples_per_second']:>9.0f}  {m['train_seconds']:>7.1f}  "
              f"{m.get('cache_hit_rate', 0.0):>8.2f}")


if __name__ == "__main__":
    main()
