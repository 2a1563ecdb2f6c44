"""List the model zoo: each encoder's parameters and token grid at the configured crop and patch size.

    python -m pipeline.tools.zoo --params params-paper.yaml                 # the paper's 20 encoders + SimZSS's 2
    python -m pipeline.tools.zoo --params params-paper.yaml --patch-size 8  # the patch-8 setting
    python -m pipeline.tools.zoo --params params-vfm2025.yaml --crop 1024   # today's VFMs at the Cityscapes crop

Defaults: every model in model_cfg, every size in `sizes`, the crop of the base setup's dataset,
the base setup's patch size and normalisation. Nothing is downloaded (the encoders are built on
PyTorch's meta device).
"""
from __future__ import annotations

import argparse

from pipeline.errors import ConfigError
from pipeline.networks.zoo import describe, markdown_table
from pipeline.stages.common import main, parser


def run(args: argparse.Namespace, params) -> None:
    models = args.models or list(params.model_cfg)
    sizes = args.sizes or list(params.sizes)
    crop = args.crop or params.data_cfg[params.setup.dataset].crop
    patch_size = args.patch_size or params.setup.patch_size
    for model in models:
        if model not in params.model_cfg:
            raise ConfigError(f"--models: unknown model {model!r}; model_cfg has {sorted(params.model_cfg)}")
    entries = describe(params, models, sizes, crop, patch_size, params.setup.normalization)
    print(markdown_table(entries, crop, patch_size))


if __name__ == "__main__":
    p = parser(__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--models", nargs="*", help="model ids from model_cfg (default: all)")
    p.add_argument("--sizes", nargs="*", choices=["base", "large"], help="default: params' sizes")
    p.add_argument("--crop", type=int, help="default: data_cfg crop of the base dataset")
    p.add_argument("--patch-size", type=int, help="default: the base setup's patch_size")
    main(run, p.parse_args())
