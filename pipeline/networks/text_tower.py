"""SimZSS text side (reference §2): a randomly initialised CLIP text transformer whose bias-free
projection is applied to every token, and the learnable global temperature of the aligned model."""
from __future__ import annotations

import math

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer
from torch import nn

from pipeline.networks.text_tower_cfg import TextTowerCfg

VOCAB_SIZE = 49408  # CLIP's BPE vocabulary (open_clip.tokenize)


def tokenize(texts: list[str]) -> torch.LongTensor:
    """N x 77 CLIP token ids (SOT, BPE, EOT, zero padding; truncated with EOT kept last).

    open_clip.tokenize runs the one SimpleTokenizer instance open_clip caches at import.
    """
    return open_clip.tokenize(texts)


class TextTower(nn.Module):
    """open_clip TextTransformer (causal, pre-LN, GELU, default init) with its projection on all tokens."""

    def __init__(self, cfg: TextTowerCfg, embed_dim: int):
        super().__init__()
        self.transformer = TextTransformer(
            context_length=cfg.context_length, vocab_size=VOCAB_SIZE, width=cfg.width, heads=cfg.heads,
            layers=cfg.layers, output_dim=embed_dim, output_tokens=True)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B x D global, B x L x D per-token), both unnormalised.

        The global embedding is TextTransformer's pooled output: the projected token at the EOT
        position (argmax of the ids). The per-token embeddings are the ln_final outputs it returns,
        projected by the same bias-free `text_projection` (a width x D parameter).
        """
        pooled, hidden = self.transformer(tokens)
        return pooled, hidden @ self.transformer.text_projection

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """B x D L2-normalised global embeddings."""
        return F.normalize(self.forward(tokens)[0], dim=-1)


class AlignedText(nn.Module):
    """What SimZSS trains: the text tower and the global temperature (exp(logit_scale), init 1/0.07, capped at 100)."""

    def __init__(self, text: TextTower, logit_scale_init: float = 1 / 0.07):
        super().__init__()
        self.text = text
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))

    @torch.no_grad()
    def clamp_logit_scale(self, max_scale: float = 100.0) -> None:
        """Cap exp(logit_scale) at max_scale in place; called after every optimizer step."""
        self.logit_scale.clamp_(max=math.log(max_scale))
