"""Decoder heads on B x N x D patch tokens, and the registry the `decoder` param names.

Every decoder has `scores(output, size)`: the per-class scores that sliding-window
inference averages (reference §5), from what its forward returned.
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.networks.choices import Decoder
from pipeline.networks.mask2former import Mask2FormerDecoder


class LinearDecoder(nn.Module):
    """One linear layer applied to every patch token (reference §3): no BN, no dropout."""

    def __init__(self, embed_dim: int, num_classes: int, grid_size: tuple[int, int]):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """B x K x grid_h x grid_w logits, contiguous: channels-last strides would carry through the upsampling to
        full size and make the loss's log_softmax copy the full-size logits."""
        logits = self.head(tokens)
        return logits.transpose(1, 2).reshape(tokens.shape[0], -1, *self.grid_size).contiguous()

    @staticmethod
    def scores(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The logits themselves, at token resolution (the window averaging upsamples them)."""
        return logits


DECODERS: dict[Decoder, type[nn.Module]] = {"linear": LinearDecoder, "mask2former": Mask2FormerDecoder}
