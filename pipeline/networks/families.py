"""Per-family adaptations run after the generic resize (reference §1 "Special handling").

Each hook is called as hook(model, old_grid, grid) once the patch embedding and
absolute position embedding are at the new grid; hooks are keyed by the timm class.
BEiT-3 (sub-LN through timm kwargs), DINOv2 (with registers), DeiT III, SigLIP (2),
C-RADIOv3, TIPSv2 and AIMv2 are timm VisionTransformers and need nothing beyond the
generic resize: their prefix rows (CLS, registers, `no_embed_class`) are generic.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import torch
import torch.nn.functional as F
from timm.models.eva import Eva
from timm.models.vision_transformer_sam import VisionTransformerSAM
from torch import nn

from pipeline.errors import ResizeError

Grid = tuple[int, int]


def adapt_eva(model: Eva, old_grid: Grid, grid: Grid) -> None:
    """timm's Eva class (EVA-02, Perception Encoder, DINOv3): rebuild the rotary embedding for the new grid.

    The update equals building a second timm model at the new size and taking its
    `.rope`, as the benchmark's authors do for EVA-02. EVA-02 and PE keep
    `ref_feat_shape`, the pretraining grid their positions are scaled to; DINOv3
    normalises positions to [-1, 1] on any grid, as its own code does per input.
    PE also has an absolute position embedding, resampled before this hook.
    """
    if model.rope is not None:
        model.rope.update_feat_shape(list(grid))


def adapt_sam(model: VisionTransformerSAM, old_grid: Grid, grid: Grid) -> None:
    """SAM: drop the neck, scale the attention windows with the grid, resize the rel-pos tables.

    The window size becomes window x grid / old_grid and must be an integer
    (14 -> 7 at 512/p16, 14 at 1024/p16 and 512/p8). Relative-position tables are
    linearly resized to 2 x size - 1 rows, size being the window (windowed blocks)
    or the grid (global blocks). The authors' code resizes to 2 x size + 1, which
    timm then re-interpolates on every forward; this is the correct length.
    """
    if old_grid[0] != old_grid[1] or grid[0] != grid[1]:
        raise ResizeError(f"SAM needs square grids, got {old_grid} -> {grid}")
    model.neck = nn.Identity()
    model.num_features = model.embed_dim
    for index, block in enumerate(model.blocks):
        size = grid[0]
        if block.window_size > 0:
            scaled = Fraction(block.window_size * grid[0], old_grid[0])
            if scaled.denominator != 1:
                raise ResizeError(
                    f"SAM block {index}: window size {block.window_size} scaled by grid {grid[0]}/{old_grid[0]} "
                    f"is {float(scaled):g}, not an integer; choose a crop and patch size whose grid is a "
                    f"multiple of {old_grid[0] // math.gcd(block.window_size, old_grid[0])}"
                )
            block.window_size = size = int(scaled)
        attn = block.attn
        if attn.use_rel_pos:
            attn.rel_pos_h = _resized_rel_pos(attn.rel_pos_h, 2 * size - 1)
            attn.rel_pos_w = _resized_rel_pos(attn.rel_pos_w, 2 * size - 1)


@torch.no_grad()
def _resized_rel_pos(table: nn.Parameter, length: int) -> nn.Parameter:
    """L x C table linearly interpolated to `length` rows (as timm's get_rel_pos would on the fly)."""
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.T[None], size=length, mode="linear")[0].T.contiguous()
    return nn.Parameter(resized, requires_grad=table.requires_grad)


FamilyHook = Callable[[nn.Module, Grid, Grid], None]
FAMILY_HOOKS: dict[type[nn.Module], FamilyHook] = {Eva: adapt_eva, VisionTransformerSAM: adapt_sam}
