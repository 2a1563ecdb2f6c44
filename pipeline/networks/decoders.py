"""Decoder heads mapping B x N x D patch tokens to B x K x grid_h x grid_w outputs."""
from __future__ import annotations

import torch
from torch import nn


class LinearDecoder(nn.Module):
    """One linear layer applied to every patch token (reference §3): no BN, no dropout."""

    def __init__(self, embed_dim: int, num_classes: int, grid_size: tuple[int, int]):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.head(tokens)
        return logits.transpose(1, 2).reshape(tokens.shape[0], -1, *self.grid_size)


DECODERS: dict[str, type[nn.Module]] = {"linear": LinearDecoder}
