"""align@<tower>-<method>: align a random-init text tower to one frozen tower (SimZSS, or LiT without concepts).

Under torchrun (dvc.yaml's `$LAUNCH`) every process trains on its slice of the batch and the main one writes.
"""
from __future__ import annotations

from pathlib import Path

from pipeline import paths, stage_params
from pipeline.atomic import check_writable, write_json
from pipeline.datasets.caption_shards import caption_shard_paths
from pipeline.networks.tower import build_tower
from pipeline.networks.weights import save_state_dict, verify_weights
from pipeline.stages.common import main
from pipeline.stages.resumable import checkpointer, processes, training_parser
from pipeline.training.align import align_text, fingerprint
from pipeline.training.feature_cache import cache_fingerprint


def run(args, params) -> None:
    resolved = stage_params.align(params, args.tower, args.method)
    cfg, variant, concept_weight = resolved.align, resolved.variant, resolved.method.concept_weight
    weights = paths.encoder_weights(args.tower, cfg.size)
    check_writable(files=[paths.aligned_text(args.tower, args.method), paths.align_metrics(args.tower, args.method)],
                   folders=[paths.align_plots(args.tower, args.method),
                            *([params.checkpoint.dir] if params.checkpoint.every else []),
                            *([cfg.cache_dir] if cfg.feature_cache == "disk" else [])])
    verify_weights(weights, f"pretrain@{args.tower}-{cfg.size}")
    shards = caption_shard_paths(paths.CONCEPTS)  # checked against their manifest
    tower = build_tower(variant, weights, cfg.image_size, cfg.normalization)
    cache_dir = Path(cfg.cache_dir) / cache_fingerprint(weights, variant, cfg.image_size, cfg.normalization)
    name = paths.align_name(args.tower, args.method)
    with processes() as procs:
        saver = checkpointer(args, params, f"align@{name}", procs, cfg.workers,
                             fingerprint(cfg, resolved.text_tower, concept_weight, variant, weights, paths.CONCEPTS))
        result = align_text(tower, cfg, resolved.text_tower, concept_weight, shards,
                            live_dir=paths.align_plots(args.tower, args.method), checkpointer=saver, procs=procs,
                            cache_dir=cache_dir, name=name)
        if result is None:
            return
        save_state_dict(result.model, paths.aligned_text(args.tower, args.method))
        write_json(paths.align_metrics(args.tower, args.method), result.metrics)
        saver.finish()
    m = result.metrics
    print(f"{name}: loss {m['final_loss']:.3f} (clip {m['final_clip_loss']:.3f}, concept {m['final_concept_loss']:.3f})"
          f"  {m['optimizer_steps']} steps in {m['train_seconds']:.1f}s ({m['samples_per_second']:.0f} samples/s)")


if __name__ == "__main__":
    p = training_parser(__doc__)
    p.add_argument("--tower", required=True)
    p.add_argument("--method", required=True)
    main(run, p.parse_args())
