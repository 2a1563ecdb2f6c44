"""zeroshot@<tower>-<method>: zero-shot segmentation (and CLS classification) of an aligned tower on every benchmark."""
from __future__ import annotations

import time

from pipeline import paths
from pipeline.atomic import write_json
from pipeline.evaluation.zeroshot_suite import evaluate_suite
from pipeline.networks.text_tower import AlignedText, TextTower, TextTowerCfg
from pipeline.networks.tower import build_tower
from pipeline.networks.weights import load_state_dict_file, load_strict
from pipeline.stages.common import main, parser
from pipeline.training.precision import default_device, resolve_precision


def run(args, params) -> None:
    cfg, device = params.zeroshot, default_device()
    weights = paths.encoder_weights(args.tower, params.align.size)
    tower = build_tower(params.tower_variant(args.tower), weights, cfg.window, params.align.normalization).to(device)
    t = params.text_tower
    aligned = AlignedText(TextTower(TextTowerCfg(t.width, t.layers, t.heads, t.context_length), tower.embed_dim))
    text_file = paths.aligned_text(args.tower, args.method)
    load_strict(aligned, load_state_dict_file(text_file), source=str(text_file))
    start = time.perf_counter()
    metrics = evaluate_suite(tower, aligned.text.to(device).eval(), cfg, paths.SHARDS,
                             resolve_precision(cfg.precision, device), params.align.global_token)
    metrics["eval_seconds"] = time.perf_counter() - start
    write_json(paths.zeroshot_metrics(args.tower, args.method), metrics)
    summary = "  ".join(f"{b} {metrics[f'miou_{b}'] * 100:.1f}" for b in cfg.benchmarks)
    print(f"{paths.align_name(args.tower, args.method)} zero-shot mIoU %: {summary}")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--tower", required=True)
    p.add_argument("--method", required=True)
    main(run, p.parse_args())
