"""A frozen vision tower for SimZSS: a model of the zoo at its native patch size."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.config import Variant
from pipeline.networks.choices import GlobalToken
from pipeline.networks.encoder import Encoder
from pipeline.training.precision import autocast


def build_tower(variant: Variant, weights: Path, img_size: int, normalization: str) -> Encoder:
    """The pretrain@ weights of `variant` at `img_size` inputs, frozen and in eval mode."""
    tower = Encoder(variant.timm_name, img_size, variant.native_patch_size, checkpoint=str(weights),
                    timm_kwargs=variant.timm_kwargs, normalization=normalization)
    return tower.eval().requires_grad_(False)


def normalized_tokens(tower: Encoder, images: torch.Tensor, precision: str,
                      global_token: GlobalToken = "cls") -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised float32 (global B x D, patches B x N x D) of float images in [0, 1]; no gradients.

    The global token is the CLS token (the paper's; never a register of DINOv2-reg or DINOv3) or the mean of the
    patch tokens (for towers whose CLS token was never trained, like the miniature's toys).
    """
    with torch.no_grad(), autocast(precision, images.device):
        glob, patches = tower.tokens(images)
    if global_token == "patch_mean":
        glob = patches.mean(1)
    return nn.functional.normalize(glob.float(), dim=-1), nn.functional.normalize(patches.float(), dim=-1)
