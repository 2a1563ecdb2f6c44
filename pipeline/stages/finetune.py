"""finetune@<model>-<setting>-<seed>: fine-tune one model under one setting, evaluate, write metrics."""
from __future__ import annotations

from pipeline import paths
from pipeline.atomic import write_json
from pipeline.networks.weights import save_state_dict
from pipeline.stages.common import main, parser
from pipeline.training.finetune import finetune


def run(args, params) -> None:
    run_cfg = params.run(args.model, args.setting, args.seed)
    result = finetune(
        run_cfg,
        params.finetune,
        params.mask2former,
        train_shards=paths.shards(run_cfg.setup.dataset),
        eval_shards=paths.shards(run_cfg.setup.eval_dataset),
        weights=paths.encoder_weights(args.model, run_cfg.setup.size),
        live_dir=paths.train_plots(run_cfg.name),
    )
    save_state_dict(result.model, paths.finetune_dir(run_cfg.name) / "segmenter.safetensors")
    write_json(paths.finetune_metrics(run_cfg.name), result.metrics)
    m = result.metrics
    print(f"{run_cfg.name}: mIoU {m['miou'] * 100:.1f}%  train {m['train_seconds']:.1f}s "
          f"({m['crops_per_second']:.1f} crops/s)  trainable {m['trainable_params'] / 1e6:.2f}M")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--setting", required=True)
    p.add_argument("--seed", required=True, type=int)
    main(run, p.parse_args())
