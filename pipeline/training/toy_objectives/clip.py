"""`clip`: contrastive image-caption pretraining (Radford et al. 2021) with a text tower trained from scratch.

The captions are written on the fly from each crop's label map by the miniature's caption writer: the classes the
crop shows, worded as people caption photos. The image side is the CLS token through a linear projection that is
not released; the loss is CLIP's symmetric InfoNCE with a learnable temperature.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import ClipCfg
from pipeline.datasets.miniature.captions import seen_in_labels, write_caption
from pipeline.networks.encoder import Encoder
from pipeline.networks.text_tower import AlignedText, TextTower, tokenize
from pipeline.networks.text_tower_cfg import TextTowerCfg
from pipeline.training.contrastive import clip_loss
from pipeline.training.toy_objectives import ToyObjective

LOGIT_SCALE_INIT, LOGIT_SCALE_MAX = 1 / 0.07, 100.0  # CLIP's


def label_captions(labels: np.ndarray, class_names: Sequence[str], ignore_index: int,
                   rng: np.random.Generator) -> list[str]:
    """One caption per B x H x W label map of the classes it shows; a scene with sky is outdoor, else indoor."""
    captions = []
    for label in labels:
        seen = seen_in_labels(label, class_names, ignore_index)
        captions.append(write_caption(seen, "outdoor" if "sky" in seen else "indoor", rng))
    return captions


class ClipObjective(ToyObjective):
    def __init__(self, encoder: Encoder, cfg: ClipCfg, class_names: Sequence[str], ignore_index: int):
        super().__init__(encoder)
        self.class_names, self.ignore_index = class_names, ignore_index
        self.image_projection = nn.Linear(encoder.embed_dim, cfg.embed_dim, bias=False)
        tower = TextTowerCfg(width=cfg.text_width, layers=cfg.text_layers, heads=cfg.text_heads)
        self.text = AlignedText(TextTower(tower, cfg.embed_dim), LOGIT_SCALE_INIT)

    def captions(self, labels: torch.Tensor, generator: torch.Generator) -> list[str]:
        """The batch's captions, drawn with a numpy generator seeded from `generator`."""
        rng = np.random.default_rng(int(torch.randint(2**62, (), generator=generator)))
        return label_captions(labels.numpy(), self.class_names, self.ignore_index, rng)

    def features(self, images: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised B x D image and caption embeddings."""
        image = F.normalize(self.image_projection(self.encoder.tokens(images)[0]), dim=-1)
        return image, self.text.text.encode(tokenize(captions))

    def forward(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        image, text = self.features(images, self.captions(labels, generator))
        return clip_loss(image, text, self.text.logit_scale.exp())

    def after_step(self, step: int) -> None:
        self.text.clamp_logit_scale(LOGIT_SCALE_MAX)
