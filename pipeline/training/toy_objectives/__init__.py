"""The toy pretrainings' objectives, one module per family; pipeline.training.pretrain trains them."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.networks.encoder import Encoder


class ToyObjective(nn.Module):
    """A pretraining loss on a toy encoder: `forward(images in [0, 1], labels, generator)` returns the batch's loss."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def after_step(self, step: int) -> None:
        """What follows optimizer step `step` (of 1..steps): nothing, unless a family updates something outside the
        optimizer (a clamp, a teacher)."""

    def released_weights(self) -> dict[str, torch.Tensor]:
        """What pretrain@ writes: the trained encoder's timm state dict (native shapes)."""
        return self.encoder.model.state_dict()
