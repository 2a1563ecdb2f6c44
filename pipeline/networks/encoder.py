"""A timm ViT turned into a patch-token encoder at the crop and patch size (reference §2).

The model is built at its native resolution (so pretrained or local weights load
unchanged) and then resized: the patch-embedding kernel is FlexiViT-resampled to
the new patch size, the absolute position embedding is resampled to the new
grid, and a family hook (families.py: the RoPE of EVA-02, PE and DINOv3, SAM's windows) adapts the rest.
The output is the last layer's patch tokens, B x N x D.
"""
from __future__ import annotations

from pathlib import Path
from typing import get_args

import timm
import torch
from timm.data import (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD,
                       resolve_data_config)
from timm.layers import resample_abs_pos_embed, resample_abs_pos_embed_nhwc
from timm.models import get_pretrained_cfg
from timm.models._input import update_model_input_size
from torch import nn

from pipeline.errors import CheckpointError, ResizeError
from pipeline.networks.beit3 import set_sub_ln_eps, uses_sub_ln
from pipeline.networks.choices import Normalization
from pipeline.networks.families import FAMILY_HOOKS
from pipeline.networks.weights import load_state_dict_file, load_strict

NORMALIZATIONS = get_args(Normalization)
IMAGENET_MEAN = IMAGENET_DEFAULT_MEAN
IMAGENET_STD = IMAGENET_DEFAULT_STD
FIXED_STATISTICS = {"imagenet": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
                    "clip": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)}


class Encoder(nn.Module):
    """Last-layer patch tokens of a timm ViT at `img_size` with `patch_size` patches.

    Input: B x 3 x img_size x img_size floats in [0, 1]. Normalisation is
    "timm" (the model's pretrained_cfg mean/std, the authors' code since June 2024),
    "imagenet" (ImageNet mean/std for every model, their code before that) or "clip"
    (OpenAI CLIP mean/std, what the SimZSS code feeds its DINOv2 tower).
    A `checkpoint` (timm-native shapes) replaces the download, so `pretrained`
    is ignored when one is given.
    """

    def __init__(
        self,
        timm_name: str,
        img_size: int,
        patch_size: int,
        *,
        pretrained: bool = False,
        checkpoint: str | Path | None = None,
        timm_kwargs: dict | None = None,
        normalization: str = "timm",
    ):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        self.model = create_native_model(timm_name, pretrained and checkpoint is None, timm_kwargs or {})
        if getattr(self.model, "dynamic_img_size", False):
            raise ResizeError(f"{timm_name}: dynamic_img_size must stay off, the input size is fixed to img_size; timm "
                              f"builds this model dynamic by default, so set timm_kwargs: {{dynamic_img_size: false}}")
        if checkpoint is not None:
            load_strict(self.model, load_state_dict_file(checkpoint), source=str(checkpoint))
        self.native_grid: tuple[int, int] = tuple(self.model.patch_embed.grid_size)
        self.native_patch_size: tuple[int, int] = tuple(self.model.patch_embed.patch_size)
        resize_model(self.model, img_size, patch_size)

        self.grid_size: tuple[int, int] = tuple(self.model.patch_embed.grid_size)
        self.embed_dim: int = self.model.num_features
        self.num_prefix_tokens: int = getattr(self.model, "num_prefix_tokens", 0)
        if normalization == "timm":
            cfg = resolve_data_config({}, model=self.model)
            mean, std = cfg["mean"], cfg["std"]
        else:
            mean, std = FIXED_STATISTICS[normalization]
        # Not persistent: the config decides the normalisation, not a stored checkpoint.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._patches(self.model.forward_features(self.normalize(x)))

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(global B x D, patches B x N x D) after the final norm: the CLS token (row 0: timm puts it before any
        registers, which are in neither), or the patch mean for models without one."""
        features = self.model.forward_features(self.normalize(x))
        patches = self._patches(features)
        if features.ndim == 3 and getattr(self.model, "cls_token", None) is not None:
            return features[:, 0], patches
        return patches.mean(1), patches

    def _patches(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim == 3:
            return features[:, self.num_prefix_tokens:]
        if getattr(self.model, "output_fmt", "NCHW") != "NHWC":
            features = features.permute(0, 2, 3, 1)
        return features.flatten(1, 2)

    def set_frozen(self, frozen: bool) -> None:
        self.requires_grad_(not frozen)


def create_native_model(timm_name: str, pretrained: bool, timm_kwargs: dict) -> nn.Module:
    """timm model without classifier at its native size (BEiT-3's sub-LNs at their eps); a failed download
    says how to work offline."""
    try:
        model = timm.create_model(timm_name, pretrained=pretrained, num_classes=0, **timm_kwargs)
    except OSError as err:
        if not pretrained:
            raise
        source = _weights_source(timm_name)
        raise CheckpointError(
            f"cannot download pretrained weights for timm model {timm_name!r} from {source}: {err}\n"
            f"To work offline, save the weights on a machine with access, e.g. "
            f"pipeline.networks.weights.save_state_dict(timm.create_model({timm_name!r}, pretrained=True, "
            f"num_classes=0), 'encoder.safetensors'), copy that file here and set the model's "
            f"`pretraining: file` and `<size>.checkpoint: <path>` in model_cfg (timm-native shapes, loaded "
            f"strictly). A filled Hugging Face cache (HF_HOME) with HF_HUB_OFFLINE=1 works too."
        ) from err
    return set_sub_ln_eps(model) if uses_sub_ln(timm_kwargs) else model


def _weights_source(timm_name: str) -> str:
    cfg = get_pretrained_cfg(timm_name)
    if cfg is not None and cfg.hf_hub_id:
        return f"Hugging Face Hub repo {cfg.hf_hub_id!r}"
    if cfg is not None and cfg.url:
        return cfg.url
    return "timm's pretrained registry"


def resize_model(model: nn.Module, img_size: int, patch_size: int) -> None:
    """Resize a native timm ViT in place to `img_size` inputs cut into `patch_size` patches."""
    old_grid = tuple(model.patch_embed.grid_size)
    # timm's PatchEmbed.set_input_size sets the conv kernel/stride to patch_size, replaces the
    # weight by resample_patch_embed (FlexiViT pseudo-inverse, bicubic, antialias) and
    # updates img_size, grid_size and num_patches.
    model.patch_embed.set_input_size(img_size=img_size, patch_size=patch_size)
    if getattr(model, "pos_embed", None) is not None:
        model.pos_embed = nn.Parameter(
            resample_pos_embed(model, old_grid, tuple(model.patch_embed.grid_size)),
            requires_grad=model.pos_embed.requires_grad,
        )
    update_model_input_size(model, model.patch_embed.img_size, patch_size=patch_size)
    hook = FAMILY_HOOKS.get(type(model))
    if hook is not None:
        hook(model, old_grid, tuple(model.patch_embed.grid_size))


@torch.no_grad()
def resample_pos_embed(model: nn.Module, old_grid: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """Bicubic antialiased resample to a max(grid)-sided square, then crop its top-left to `grid`.

    Prefix rows (CLS, registers) are kept as they are; models with `no_embed_class`
    (DeiT III) have none in the table. A 4-D NHWC table (SAM) has no prefix rows.
    """
    pos_embed = model.pos_embed
    side = max(grid)
    if pos_embed.ndim == 4:
        return resample_abs_pos_embed_nhwc(pos_embed, [side, side])[:, : grid[0], : grid[1]].contiguous()
    num_prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 0)
    resampled = resample_abs_pos_embed(pos_embed, [side, side], old_size=list(old_grid), num_prefix_tokens=num_prefix)
    prefix, patches = resampled[:, :num_prefix], resampled[:, num_prefix:]
    patches = patches.reshape(1, side, side, -1)[:, : grid[0], : grid[1]].flatten(1, 2)
    return torch.cat([prefix, patches], dim=1)
