"""Optimizer and schedule of the benchmark (reference notes §4).

AdamW with weight decay on *all* parameters (norms, biases, tokens included, as the
authors' code), two learning rates (decoder, encoder x multiplier), polynomial decay
to zero over the optimizer steps, no warmup.
"""
from __future__ import annotations

import torch
from torch import nn


def build_optimizer(
    encoder: nn.Module, decoder: nn.Module, lr: float, encoder_lr_multiplier: float, weight_decay: float
) -> torch.optim.AdamW:
    groups = [
        {"params": list(decoder.parameters()), "lr": lr, "name": "decoder"},
        {"params": list(encoder.parameters()), "lr": lr * encoder_lr_multiplier, "name": "encoder"},
    ]
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=fused or None)


def build_schedule(optimizer: torch.optim.Optimizer, steps: int, power: float) -> torch.optim.lr_scheduler.PolynomialLR:
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=steps, power=power)


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
