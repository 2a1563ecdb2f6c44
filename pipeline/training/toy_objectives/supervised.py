"""`supervised`: multi-label classification of which classes appear in each region of a crop (image-level tags)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.networks.encoder import Encoder
from pipeline.training.toy_objectives import ToyObjective


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


class SupervisedObjective(ToyObjective):
    """Multi-label class presence per `cell` x `cell` region of the crop from the patch tokens, plus
    whole-crop presence from the CLS token.

    Tags of regions rather than of the whole crop play the part of object-centric images with one
    label each: with whole-crop tags on every token, each token learns to carry global content, which
    helps a classifier but not a segmenter. The whole-crop tags go to the CLS token only, through the
    same head, so that CLS and patch tokens share one space as in iBOT / DINOv2 (SimZSS aligns
    captions to the CLS token and reads the patch tokens).
    """

    def __init__(self, encoder: Encoder, num_classes: int, ignore_index: int, cell: int):
        super().__init__(encoder)
        self.num_classes, self.ignore_index, self.cell = num_classes, ignore_index, cell
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
