"""Convert an official BEiT-3 checkpoint to the benchmark's timm ViT + sub-LN safetensors.

The official pretrained checkpoints are listed in the microsoft/unilm repository's
``beit3`` README (https://github.com/microsoft/unilm/tree/master/beit3):
``beit3_base_patch16_224.pth`` and ``beit3_large_patch16_224.pth``. The benchmark
authors' already-converted ``*.pth.timm`` files are accepted too.

    python -m pipeline.tools.convert_beit3 beit3_base_patch16_224.pth beit3_base.safetensors --size base

Point ``model_cfg.beit3.<size>.checkpoint`` in params.yaml at DST.
"""
from __future__ import annotations

import argparse
import sys

from pipeline.errors import PipelineError
from pipeline.networks.beit3 import TIMM_NAMES, convert_beit3_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="official beit3_*_patch16_224.pth or the authors' *.pth.timm")
    p.add_argument("dst", help="output .safetensors (what model_cfg.beit3.<size>.checkpoint points at)")
    p.add_argument("--size", choices=sorted(TIMM_NAMES), help="base -> vit_base_patch16_224, large -> vit_large_patch16_224")
    p.add_argument("--timm-name", help="timm model name; overrides --size")
    args = p.parse_args(argv)
    if args.timm_name is None and args.size is None:
        p.error("give --size base|large (or --timm-name)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    timm_name = args.timm_name or TIMM_NAMES[args.size]
    try:
        summary = convert_beit3_checkpoint(args.src, args.dst, timm_name)
    except (PipelineError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(
        f"wrote {summary['dst']}: {summary['num_tensors']} tensors, {summary['num_params']:,} parameters "
        f"for {summary['timm_name']} (from {summary['source_format']} layout)"
    )


if __name__ == "__main__":
    main()
