"""The configured model zoo at a crop and patch size: parameters, token grid, prefix tokens, normalisation.

Every encoder is built exactly as fine-tuning builds it (native timm model, resize,
family hooks) but on PyTorch's meta device, so listing a study's ViT-B/L
encoders takes seconds and downloads nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.data import resolve_data_config

from pipeline.config import Params
from pipeline.networks.encoder import IMAGENET_MEAN, IMAGENET_STD, Encoder


@dataclass(frozen=True)
class ZooEntry:
    model: str
    size: str
    timm_name: str
    pretraining: str
    params_m: float
    embed_dim: int
    native_patch: int
    native_grid: tuple[int, int]
    grid: tuple[int, int]
    pretrain_tokens: int | None
    prefix_tokens: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]


def describe(params: Params, models: list[str], sizes: list[str], crop: int, patch_size: int,
             normalization: str) -> list[ZooEntry]:
    """One entry per (model, size) from params.model_cfg, built at `crop` with `patch_size` patches; a size a model
    does not come in (AIMv2 has no ViT-B) has no entry."""
    entries = []
    for model in models:
        cfg = params.model_cfg[model]
        for size in sizes:
            variant = cfg.variants.get(size)
            if variant is None:
                continue
            with torch.device("meta"):
                encoder = Encoder(variant.timm_name, crop, patch_size, timm_kwargs=variant.timm_kwargs,
                                  normalization=normalization)
            if normalization == "timm":
                data = resolve_data_config({}, model=encoder.model)
                mean, std = tuple(data["mean"]), tuple(data["std"])
            else:
                mean, std = tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
            entries.append(ZooEntry(
                model=model,
                size=size,
                timm_name=variant.timm_name,
                pretraining=cfg.pretraining,
                params_m=sum(p.numel() for p in encoder.parameters()) / 1e6,
                embed_dim=encoder.embed_dim,
                native_patch=encoder.native_patch_size[0],
                native_grid=encoder.native_grid,
                grid=encoder.grid_size,
                pretrain_tokens=variant.pretrain_tokens,
                prefix_tokens=encoder.num_prefix_tokens,
                mean=mean,
                std=std,
            ))
    return entries


def markdown_table(entries: list[ZooEntry], crop: int, patch_size: int) -> str:
    header = (f"| model | size | timm name | weights | params (M) | D | native patch, grid | "
              f"grid at {crop}/p{patch_size} | tokens | pretraining tokens | prefix | mean / std |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for e in entries:
        lines.append(
            f"| {e.model} | {e.size} | `{e.timm_name}` | {e.pretraining} | {e.params_m:.1f} | {e.embed_dim} | "
            f"{e.native_patch}, {e.native_grid[0]}x{e.native_grid[1]} | {e.grid[0]}x{e.grid[1]} | {e.tokens} | "
            f"{e.pretrain_tokens if e.pretrain_tokens is not None else '-'} | {e.prefix_tokens} | "
            f"{_numbers(e.mean)} / {_numbers(e.std)} |"
        )
    return "\n".join(lines)


def _numbers(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)
