"""Each decoder's training loss as one callable: (decoder output, B x H x W labels) -> (loss, logged terms).

The logged terms stay on the device (detached): the training loop reads them only when it logs.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.config import Mask2FormerCfg
from pipeline.evaluation.windows import upsample_logits
from pipeline.training.mask_classification import Mask2FormerLoss, targets_from_labels

Criterion = Callable[[Any, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Cross-entropy on logits upsampled to the target size, averaged over labelled pixels.

    Summing and dividing by the labelled-pixel count (at least 1) keeps a crop with no
    labelled pixel from turning the loss into NaN.
    """
    logits = upsample_logits(logits, target.shape[-2:])
    loss = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    return loss / (target != ignore_index).sum().clamp(min=1)


def build_criterion(decoder: str, num_classes: int, ignore_index: int, mask2former: Mask2FormerCfg,
                    device: torch.device) -> Criterion:
    if decoder == "linear":
        return lambda logits, labels: (segmentation_loss(logits, labels, ignore_index), {})
    if decoder == "mask2former":
        loss = Mask2FormerLoss(num_classes, **mask2former.loss_kwargs).to(device)
        last = mask2former.num_blocks

        def criterion(predictions, labels):
            total, terms = loss(predictions, targets_from_labels(labels, ignore_index, num_classes))
            return total, {name: terms[f"layer{last}/{name}"] for name in ("ce", "bce", "dice")}

        return criterion
    raise ValueError(f"no training loss for decoder {decoder!r}")
