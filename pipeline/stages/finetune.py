"""finetune@<model>-<setting>-<seed>: fine-tune one model under one setting, evaluate, write metrics, the
per-image counts of the evaluation, and its confusion matrix and preview images (for the figures stage).

Under torchrun (dvc.yaml's `$LAUNCH`) every process trains and the main one evaluates and writes.
"""
from __future__ import annotations

from pipeline import paths, stage_params
from pipeline.atomic import check_writable, write_json
from pipeline.datasets.shards import verify_shards
from pipeline.evaluation import image_counts, previews
from pipeline.networks.weights import save_state_dict, verify_weights
from pipeline.stages.common import main
from pipeline.stages.resumable import checkpointer, processes, training_parser
from pipeline.training.finetune import finetune, fingerprint


def run(args, params) -> None:
    cfg = stage_params.finetune(params, args.model, args.setting, args.seed)
    run_cfg = cfg.run
    train_shards = paths.shards(run_cfg.setup.dataset)
    weights = paths.encoder_weights(args.model, run_cfg.setup.size)
    name = run_cfg.name  # before any compute: every output can be written, every input is intact
    check_writable(files=[paths.finetune_counts(name), paths.finetune_previews(name), paths.finetune_metrics(name)],
                   folders=[paths.finetune_dir(name), paths.train_plots(name),
                            *([params.checkpoint.dir] if params.checkpoint.every else [])])
    verify_weights(weights, f"pretrain@{args.model}-{run_cfg.setup.size}")
    verify_shards(train_shards, "train")
    verify_shards(paths.shards(run_cfg.setup.eval_dataset), "val")
    with processes() as procs:
        saver = checkpointer(args, params, f"finetune@{run_cfg.name}", procs, cfg.finetune.workers,
                             fingerprint(run_cfg, cfg.finetune, cfg.mask2former, weights, train_shards))
        result = finetune(run_cfg, cfg.finetune, cfg.mask2former, train_shards=train_shards,
                          eval_shards=paths.shards(run_cfg.setup.eval_dataset), weights=weights,
                          live_dir=paths.train_plots(run_cfg.name), checkpointer=saver, procs=procs)
        if result is None:
            return
        save_state_dict(result.model, paths.finetune_dir(run_cfg.name) / "segmenter.safetensors")
        image_counts.save(paths.finetune_counts(run_cfg.name), {run_cfg.setup.eval_dataset: result.counts})
        previews.save(paths.finetune_previews(run_cfg.name), result.evaluation)
        write_json(paths.finetune_metrics(run_cfg.name), result.metrics)
        saver.finish()
    m = result.metrics
    print(f"{run_cfg.name}: mIoU {m['miou'] * 100:.1f}%  train {m['train_seconds']:.1f}s "
          f"({m['crops_per_second']:.1f} crops/s)  trainable {m['trainable_params'] / 1e6:.2f}M")


if __name__ == "__main__":
    p = training_parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--setting", required=True)
    p.add_argument("--seed", required=True, type=int)
    main(run, p.parse_args())
