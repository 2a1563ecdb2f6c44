"""pretrain@<model>-<size>: make the encoder's starting weights.

Toys (random | supervised | mim | clip | dino) are trained here on the miniature; `hub` fetches timm's pretrained
weights; `file` validates a local checkpoint. Either way the output is one native-shape timm state dict
that finetune loads strictly, so fine-tuning never needs the network.
"""
from __future__ import annotations

from pipeline import paths, stage_params
from pipeline.atomic import check_writable
from pipeline.datasets.shards import shard_paths
from pipeline.datasets.specs import get_spec
from pipeline.networks.encoder import create_native_model
from pipeline.networks.weights import load_state_dict_file, load_strict, save_state_dict
from pipeline.stages.common import main, parser
from pipeline.training.pretrain import pretrain_toy


def run(args, params) -> None:
    cfg = stage_params.pretrain(params, args.model, args.size)
    variant = cfg.variant
    out = paths.encoder_weights(args.model, args.size)
    check_writable(files=[out])
    if cfg.toy:
        spec = get_spec(cfg.toy.dataset)
        shards = shard_paths(paths.shards(cfg.toy.dataset), "train")
        state = pretrain_toy(cfg.pretraining, variant, cfg.normalization, shards, cfg.toy, spec)
    else:
        model = create_native_model(variant.timm_name, cfg.pretraining == "hub", variant.timm_kwargs)
        if cfg.pretraining == "file":
            load_strict(model, load_state_dict_file(variant.checkpoint), source=variant.checkpoint)
        state = model.state_dict()
    save_state_dict(state, out)
    print(f"{args.model} ({args.size}, {cfg.pretraining}): {sum(v.numel() for v in state.values()) / 1e6:.2f}M "
          f"parameters -> {out}")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--size", required=True)
    main(run, p.parse_args())
