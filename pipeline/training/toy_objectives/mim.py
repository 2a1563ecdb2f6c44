"""`mim`: masked image modelling, SimMIM-style: masked patches are replaced by a learned mask token and their
per-patch-normalised pixels regressed from the last-layer tokens."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.networks.encoder import Encoder
from pipeline.training.toy_objectives import ToyObjective


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """B x 3 x H x W -> B x N x (patch*patch*3), patches in row-major token order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class MaskedImageObjective(ToyObjective):
    def __init__(self, encoder: Encoder, mask_ratio: float):
        super().__init__(encoder)
        self.mask_ratio = mask_ratio
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
