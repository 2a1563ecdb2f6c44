"""Single-scale Mask2Former decoder on plain-ViT tokens (reference §3).

No pixel decoder and no multi-scale features: every block cross-attends to the same
projected last-layer token map, and masks are predicted at token resolution.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class MaskPrediction(NamedTuple):
    class_logits: torch.Tensor  # B x Q x (K+1), last = no-object
    mask_logits: torch.Tensor  # B x Q x h x w at token resolution


def sine_position_encoding(
    h: int, w: int, num_feats: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32,
    temperature: float = 10000.0,
) -> torch.Tensor:
    """hw x 2*num_feats row-major encoding, channels (y features, x features), as HF `Mask2FormerSinePositionEmbedding`
    with normalize=True: positions 1..n are divided by n (+1e-6) and scaled by 2*pi, without a -0.5 shift."""
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
    y, x = y / (h + eps) * scale, x / (w + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions[:, None] / dim_t
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=-1).flatten(1)

    pos_y = encode(y)[:, None].expand(h, w, num_feats)
    pos_x = encode(x)[None].expand(h, w, num_feats)
    return torch.cat((pos_y, pos_x), dim=-1).reshape(h * w, 2 * num_feats).to(dtype)


def attention_mask(mask_logits: torch.Tensor, num_heads: int) -> torch.Tensor:
    """B x Q x h x w logits -> (B*num_heads) x Q x hw boolean mask, True = may not attend.

    A query attends only where its predicted mask is positive; a query whose mask is empty
    everywhere attends everywhere instead (an all-True row would give NaN attention).
    """
    masked = mask_logits.detach().flatten(2) < 0
    masked[masked.all(-1)] = False
    return masked.repeat_interleave(num_heads, dim=0)


class MaskedAttentionBlock(nn.Module):
    """Post-norm decoder block: masked cross-attention, self-attention, FFN (no dropout)."""

    def __init__(self, hidden_dim: int, num_heads: int, ffn_dim: int):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(hidden_dim, num_heads, batch_first=True)
        self.cross_norm = nn.LayerNorm(hidden_dim)
        self.self_attn = nn.MultiheadAttention(hidden_dim, num_heads, batch_first=True)
        self.self_norm = nn.LayerNorm(hidden_dim)
        self.ffn = nn.Sequential(nn.Linear(hidden_dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, hidden_dim))
        self.ffn_norm = nn.LayerNorm(hidden_dim)

    def forward(
        self, queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
        attn_mask: torch.Tensor,
    ) -> torch.Tensor:
        """queries/query_pos B x Q x C, keys/values B x hw x C, attn_mask (B*heads) x Q x hw."""
        out, _ = self.cross_attn(queries + query_pos, keys, values, attn_mask=attn_mask, need_weights=False)
        queries = self.cross_norm(queries + out)
        q = queries + query_pos
        out, _ = self.self_attn(q, q, queries, need_weights=False)
        queries = self.self_norm(queries + out)
        return self.ffn_norm(queries + self.ffn(queries))


class Mask2FormerDecoder(nn.Module):
    def __init__(
        self, embed_dim: int, num_classes: int, grid_size: tuple[int, int], *, hidden_dim: int = 256,
        num_queries: int = 100, num_blocks: int = 9, num_heads: int = 8, ffn_dim: int = 2048,
    ):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.input_proj = nn.Linear(embed_dim, hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_pos = nn.Embedding(num_queries, hidden_dim)
        self.blocks = nn.ModuleList(MaskedAttentionBlock(hidden_dim, num_heads, ffn_dim) for _ in range(num_blocks))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_head = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
        )

    def forward(self, tokens: torch.Tensor) -> list[MaskPrediction]:
        """B x N x D patch tokens (N = grid_h*grid_w, row-major) -> num_blocks + 1 predictions
        (deep supervision), the last one final."""
        batch = tokens.shape[0]
        h, w = self.grid_size
        values = self.input_proj(tokens)
        mask_features = values.transpose(1, 2).reshape(batch, self.hidden_dim, h, w)
        keys = values + sine_position_encoding(h, w, self.hidden_dim // 2, values.device, values.dtype)
        queries = self.query_feat.weight.expand(batch, -1, -1)
        query_pos = self.query_pos.weight.expand(batch, -1, -1)

        predictions = [self._predict(queries, mask_features)]
        for block in self.blocks:
            attn_mask = attention_mask(predictions[-1].mask_logits, self.num_heads)
            queries = block(queries, query_pos, keys, values, attn_mask)
            predictions.append(self._predict(queries, mask_features))
        return predictions

    def _predict(self, queries: torch.Tensor, mask_features: torch.Tensor) -> MaskPrediction:
        queries = self.decoder_norm(queries)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(queries), mask_features)
        return MaskPrediction(self.class_head(queries), mask_logits)

    def scores(self, predictions: list[MaskPrediction], size: tuple[int, int]) -> torch.Tensor:
        """Inference uses the last prediction only."""
        return self.semantic_scores(predictions[-1], size)

    @staticmethod
    def semantic_scores(prediction: MaskPrediction, size: tuple[int, int]) -> torch.Tensor:
        """B x K x H x W float32 scores: mask logits upsampled bilinearly to `size`, then
        sum_q sigmoid(mask_q) * softmax(class_q) with the no-object column dropped."""
        masks = F.interpolate(prediction.mask_logits.float(), size=tuple(size), mode="bilinear", align_corners=False)
        probs = prediction.class_logits.float().softmax(-1)[..., :-1]
        return torch.einsum("bqk,bqhw->bkhw", probs, masks.sigmoid())
