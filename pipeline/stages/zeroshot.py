"""zeroshot@<tower>-<method>: zero-shot segmentation of an aligned tower on every benchmark, with the per-image counts
behind each benchmark's mIoU, and (zeroshot.imagenet) its ImageNet-1k zero-shot classification."""
from __future__ import annotations

import time

from pipeline import paths, stage_params
from pipeline.atomic import check_writable, write_json
from pipeline.datasets.shards import verify_shards
from pipeline.datasets.specs import IMAGENET, VIEWS, get_view
from pipeline.evaluation import image_counts
from pipeline.evaluation.zeroshot_suite import evaluate_imagenet, evaluate_suite
from pipeline.networks.text_tower import AlignedText, TextTower
from pipeline.networks.tower import build_tower
from pipeline.networks.weights import load_state_dict_file, load_strict, verify_weights
from pipeline.stages.common import main, parser
from pipeline.training.precision import default_device, resolve_precision


def run(args, params) -> None:
    resolved, device = stage_params.zeroshot(params, args.tower, args.method), default_device()
    cfg = resolved.zeroshot
    weights = paths.encoder_weights(args.tower, resolved.align_size)
    text_file = paths.aligned_text(args.tower, args.method)
    check_writable(files=[paths.zeroshot_counts(args.tower, args.method),
                          paths.zeroshot_metrics(args.tower, args.method)])
    verify_weights(weights, f"pretrain@{args.tower}-{resolved.align_size}")
    verify_weights(text_file, f"align@{paths.align_name(args.tower, args.method)}")
    datasets = [get_view(b).base if b in VIEWS else b for b in cfg.benchmarks] + ([IMAGENET] if cfg.imagenet else [])
    for dataset in datasets:
        verify_shards(paths.shards(dataset), "val")
    tower = build_tower(resolved.variant, weights, cfg.window, resolved.align_normalization).to(device)
    aligned = AlignedText(TextTower(resolved.text_tower, tower.embed_dim))
    load_strict(aligned, load_state_dict_file(text_file), source=str(text_file))
    text, precision = aligned.text.to(device).eval(), resolve_precision(cfg.precision, device)
    start = time.perf_counter()
    metrics, counts = evaluate_suite(tower, text, cfg, paths.SHARDS, precision, resolved.global_token)
    if cfg.imagenet:  # at the tower's training input size, not the sliding window's
        classifier = build_tower(resolved.variant, weights, resolved.image_size, resolved.align_normalization)
        metrics |= evaluate_imagenet(classifier.to(device), text, paths.shards(IMAGENET), resolved.image_size,
                                     cfg.batch_size, cfg.workers, precision, resolved.global_token)
    metrics["eval_seconds"] = time.perf_counter() - start
    image_counts.save(paths.zeroshot_counts(args.tower, args.method), counts)
    write_json(paths.zeroshot_metrics(args.tower, args.method), metrics)
    summary = "  ".join(f"{b} {metrics[f'miou_{b}'] * 100:.1f}" for b in cfg.benchmarks)
    imagenet = f"  ImageNet top-1 {metrics['top1_imagenet'] * 100:.1f}" if cfg.imagenet else ""
    print(f"{paths.align_name(args.tower, args.method)} zero-shot mIoU %: {summary}{imagenet}")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--tower", required=True)
    p.add_argument("--method", required=True)
    main(run, p.parse_args())
