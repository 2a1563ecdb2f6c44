"""Pretraining of the miniature's toy ViTs, so that the miniature's ranking means something.

Three kinds, mirroring the families the paper compares:
- `random`: no pretraining (the seeded initialisation);
- `supervised`: multi-label classification of which classes appear in a crop (image-level labels only);
- `mim`: masked image modelling, SimMIM-style: masked patches are replaced by a learned mask token and
  their per-patch-normalised pixels regressed from the last-layer tokens.
The result is the timm model's state dict in its native shapes, which `finetune` loads through the same
local-checkpoint path as real checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from pipeline.config import PretrainCfg, Variant
from pipeline.datasets.augment import TrainAugment
from pipeline.datasets.shards import TrainStream
from pipeline.networks.encoder import Encoder
from pipeline.training.choices import TOY_PRETRAININGS
from pipeline.training.loop import check_finite, seed_everything


def build_toy(variant: Variant, normalization: str) -> Encoder:
    img_size, patch = variant.toy_input
    return Encoder(variant.timm_name, img_size, patch, timm_kwargs=variant.timm_kwargs, normalization=normalization)


def presence_targets(labels: torch.Tensor, num_classes: int, ignore_index: int, cell: int) -> torch.Tensor:
    """B x K x H/cell x W/cell multi-hot: which classes have at least one pixel in each cell x cell cell."""
    rows, cols = labels.shape[1] // cell, labels.shape[2] // cell
    labels = labels[:, : rows * cell, : cols * cell]
    b, h, w = labels.shape
    cells = (torch.arange(h)[:, None] // cell * cols + torch.arange(w)[None, :] // cell).expand(b, h, w)
    classes = torch.where(labels == ignore_index, num_classes, labels)
    index = (torch.arange(b)[:, None, None] * rows * cols + cells) * (num_classes + 1) + classes
    present = torch.zeros(b * rows * cols * (num_classes + 1))
    present[index.flatten()] = 1.0
    return present.view(b, rows, cols, num_classes + 1)[..., :num_classes].permute(0, 3, 1, 2)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """B x 3 x H x W -> B x N x (patch*patch*3), patches in row-major token order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class SupervisedObjective(nn.Module):
    """Multi-label class presence per `cell` x `cell` region of the crop from the patch tokens, plus
    whole-crop presence from the CLS token.

    Tags of regions rather than of the whole crop play the part of object-centric images with one
    label each: with whole-crop tags on every token, each token learns to carry global content, which
    helps a classifier but not a segmenter. The whole-crop tags go to the CLS token only, through the
    same head, so that CLS and patch tokens share one space as in iBOT / DINOv2 (SimZSS aligns
    captions to the CLS token and reads the patch tokens).
    """

    def __init__(self, encoder: Encoder, num_classes: int, ignore_index: int, cell: int):
        super().__init__()
        self.encoder, self.num_classes, self.ignore_index, self.cell = encoder, num_classes, ignore_index, cell
        self.tokens_per_cell = cell // encoder.model.patch_embed.patch_size[0]
        self.head = nn.Linear(encoder.embed_dim, num_classes)
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    def forward(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cls, tokens = self.encoder.tokens(images)
        b, n, d = tokens.shape
        grid = tokens.transpose(1, 2).reshape(b, d, *self.encoder.grid_size)
        cells = F.avg_pool2d(grid, self.tokens_per_cell)
        logits = self.head(cells.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        targets = presence_targets(labels, self.num_classes, self.ignore_index, self.cell)
        self.seen |= targets.amax(dim=(0, 2, 3)) > 0
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        image_loss = F.binary_cross_entropy_with_logits(self.head(cls), targets.amax(dim=(2, 3)), reduction="none")
        return loss[:, self.seen].mean() + image_loss[:, self.seen].mean()


class MaskedImageObjective(nn.Module):
    def __init__(self, encoder: Encoder, mask_ratio: float):
        super().__init__()
        self.encoder, self.mask_ratio = encoder, mask_ratio
        self.patch = encoder.model.patch_embed.patch_size[0]
        self.mask_token = nn.Parameter(torch.zeros(1, 1, encoder.embed_dim))
        self.head = nn.Linear(encoder.embed_dim, self.patch * self.patch * 3)

    def forward(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        vit = self.encoder.model
        tokens = vit.patch_embed(self.encoder.normalize(images))
        b, n, _ = tokens.shape
        mask = torch.rand(b, n, generator=generator).argsort(dim=1) < int(round(n * self.mask_ratio))
        tokens = torch.where(mask[..., None], self.mask_token.to(tokens.dtype), tokens)
        x = vit.norm(vit.blocks(vit.norm_pre(vit._pos_embed(tokens))))
        prediction = self.head(x[:, self.encoder.num_prefix_tokens:])
        target = patchify(images, self.patch)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        return ((prediction - target) ** 2).mean(-1)[mask].mean()


def pretrain_toy(
    method: str, variant: Variant, normalization: str, shards: list[str], cfg: PretrainCfg, num_classes: int,
    ignore_index: int,
) -> dict[str, torch.Tensor]:
    """Train a toy encoder with `method`; return the timm model's state dict (native shapes)."""
    seed_everything(cfg.seed)
    encoder = build_toy(variant, normalization)
    if method == "random":
        return encoder.model.state_dict()
    if method == "supervised":
        objective: nn.Module = SupervisedObjective(encoder, num_classes, ignore_index, cfg.presence_cell)
    elif method == "mim":
        objective = MaskedImageObjective(encoder, cfg.mask_ratio)
    else:
        raise ValueError(f"unknown toy pretraining {method!r}; allowed: {list(TOY_PRETRAININGS)}")
    generator = torch.Generator().manual_seed(cfg.seed)
    stream = TrainStream(shards, TrainAugment(variant.toy_input[0]), seed=cfg.seed)
    batches = iter(DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.workers))
    optimizer = torch.optim.AdamW(objective.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    objective.train()
    for step in range(1, cfg.steps + 1):
        images, labels = next(batches)
        loss = objective(images.float() / 255, labels.long(), generator)
        check_finite(loss.item(), f"optimizer step {step} of toy pretraining ({method})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return encoder.model.state_dict()
