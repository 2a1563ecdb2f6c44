"""Encoder + decoder: [0, 1] images to decoder outputs (training) or per-class scores (inference)."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.networks.decoders import DECODERS
from pipeline.networks.encoder import Encoder


class Segmenter(nn.Module):
    def __init__(self, encoder: Encoder, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor):
        """B x 3 x H x W floats in [0, 1] -> the decoder's output (linear: B x K x grid_h x grid_w logits;
        Mask2Former: its list of predictions, the training loss consumes all of them)."""
        return self.decoder(self.encoder(x))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """B x K x h x w scores for sliding-window inference, from one forward."""
        return self.decoder.scores(self(x), x.shape[-2:])


def build_segmenter(decoder: str, num_classes: int, decoder_kwargs: dict | None = None,
                    **encoder_kwargs) -> Segmenter:
    """Encoder(**encoder_kwargs) topped by the registered decoder `decoder` built with `decoder_kwargs`."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; allowed: {sorted(DECODERS)}")
    encoder = Encoder(**encoder_kwargs)
    head = DECODERS[decoder](encoder.embed_dim, num_classes, encoder.grid_size, **(decoder_kwargs or {}))
    return Segmenter(encoder, head)
