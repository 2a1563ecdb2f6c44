"""CLIP's symmetric InfoNCE, shared by the SimZSS alignment (its global loss) and the toy CLIP pretraining.

Under torchrun each process holds a slice of the global batch: each process scores its own rows against every
process's columns (open_clip's local loss); processes hold equal batches, so the mean over them is the global loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.training.distributed import Processes


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
              procs: Processes = Processes()) -> torch.Tensor:
    """Symmetric InfoNCE (SimZSS paper eq. 6) on L2-normalised B x D features; logit_scale is exp(parameter).

    The text gather keeps gradients, the image gather only when the image side is trained (SimZSS's is frozen).
    """
    all_image, offset = procs.rows(image, grad=image.requires_grad)
    all_text, _ = procs.rows(text, grad=True)
    labels = torch.arange(offset, offset + len(image), device=image.device)
    return (F.cross_entropy(logit_scale * image @ all_text.T, labels)
            + F.cross_entropy(logit_scale * text @ all_image.T, labels)) / 2
