"""Mask-classification targets, Hungarian matching and the Mask2Former loss (reference §3).

Everything here runs in float32 with autocast disabled, whatever the caller's precision.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from pipeline.networks.mask2former import MaskPrediction

Matching = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class MaskTarget:
    classes: torch.Tensor  # M long
    masks: torch.Tensor  # M x H x W bool/float


def targets_from_labels(labels: torch.Tensor, ignore_index: int) -> list[MaskTarget]:
    """B x H x W dense labels -> per image one binary mask per class present (ignore pixels belong to no mask)."""
    targets = []
    for label in labels:
        classes = label.unique()
        classes = classes[classes != ignore_index].long()
        targets.append(MaskTarget(classes, label[None] == classes[:, None, None]))
    return targets


def point_sample(inputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """inputs N x C x H x W (or N x H x W), coords N x P x 2 in [0, 1] as (x, y) -> N x C x P (or N x P),
    bilinear with align_corners=False, so (0.5/W, 0.5/H) is the centre of the top-left pixel."""
    squeeze = inputs.dim() == 3
    if squeeze:
        inputs = inputs.unsqueeze(1)
    grid = (2.0 * coords - 1.0).unsqueeze(2).to(inputs.dtype)
    out = F.grid_sample(inputs, grid, align_corners=False).squeeze(3)
    return out.squeeze(1) if squeeze else out


def _uniform_coords(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """U[0, 1) coordinates on `device`, drawn on the generator's own device when one is given."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def uncertainty_points(
    mask_logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """M x h x w logits -> M x num_points x 2 coords: of int(num_points*oversample_ratio) uniform candidates keep
    the int(importance_ratio*num_points) most uncertain (largest -|logit|), then fill with fresh uniform points."""
    num_masks = mask_logits.shape[0]
    candidates = _uniform_coords((num_masks, int(num_points * oversample_ratio), 2), mask_logits.device, generator)
    uncertainty = -point_sample(mask_logits, candidates).abs()
    num_uncertain = int(importance_ratio * num_points)
    top = uncertainty.topk(num_uncertain, dim=1).indices
    chosen = candidates.gather(1, top[..., None].expand(-1, -1, 2))
    fresh = _uniform_coords((num_masks, num_points - num_uncertain, 2), mask_logits.device, generator)
    return torch.cat((chosen, fresh), dim=1)


def _pairwise_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Q x P logits, M x P targets -> Q x M sigmoid BCE, mean over points."""
    return (F.softplus(-logits) @ targets.T + F.softplus(logits) @ (1 - targets).T) / logits.shape[1]


def _pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Q x P logits, M x P targets -> Q x M dice loss with +1 smoothing."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T + 1
    return 1 - numerator / (probs.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)


class HungarianMatcher:
    def __init__(
        self, class_weight: float = 2.0, mask_weight: float = 5.0, dice_weight: float = 5.0,
        num_points: int = 12544, generator: torch.Generator | None = None,
    ):
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points
        self.generator = generator

    @torch.no_grad()
    def __call__(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, targets: list[MaskTarget]) -> Matching:
        """Per image (pred_idx, tgt_idx), via scipy.optimize.linear_sum_assignment on CPU.

        Each image draws one set of uniform points shared by all its predicted and target masks.
        """
        with torch.autocast(mask_logits.device.type, enabled=False):
            return [
                self._match_image(logits.float(), masks.float(), target)
                for logits, masks, target in zip(class_logits, mask_logits, targets)
            ]

    def _match_image(
        self, class_logits: torch.Tensor, mask_logits: torch.Tensor, target: MaskTarget
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device = mask_logits.device
        if len(target.classes) == 0:
            empty = torch.empty(0, dtype=torch.long, device=device)
            return empty, empty
        coords = _uniform_coords((1, self.num_points, 2), device, self.generator)
        pred = point_sample(mask_logits[None], coords)[0]
        tgt = point_sample(target.masks.to(device, torch.float32)[None], coords)[0]
        probs = class_logits.softmax(-1)[:, target.classes.to(device)]
        cost = (
            self.mask_weight * _pairwise_bce(pred, tgt)
            + self.dice_weight * _pairwise_dice(pred, tgt)
            - self.class_weight * probs
        )
        indices = linear_sum_assignment(cost.clamp(-1e10, 1e10).cpu().numpy())
        pred_idx, tgt_idx = (torch.as_tensor(i, dtype=torch.long, device=device) for i in indices)
        return pred_idx, tgt_idx


class Mask2FormerLoss(nn.Module):
    """Hungarian-matched CE + point-sampled BCE + dice, summed over every prediction (deep supervision)."""

    def __init__(
        self, num_classes: int, *, class_weight: float = 2.0, mask_weight: float = 5.0, dice_weight: float = 5.0,
        no_object_weight: float = 0.1, num_points: int = 12544, oversample_ratio: float = 3.0,
        importance_ratio: float = 0.75, generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_ratio = importance_ratio
        self.generator = generator
        self.matcher = HungarianMatcher(class_weight, mask_weight, dice_weight, num_points, generator)
        weights = torch.ones(num_classes + 1)
        weights[-1] = no_object_weight
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(
        self, predictions: list[MaskPrediction], targets: list[MaskTarget]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum over all predictions of class_weight*CE + mask_weight*BCE + dice_weight*dice; the dict holds the
        detached unweighted terms per layer ('layer{i}/ce', 'layer{i}/bce', 'layer{i}/dice')."""
        device = predictions[0].mask_logits.device
        num_masks = self._num_masks(targets, device)
        total = torch.zeros((), device=device)
        terms: dict[str, torch.Tensor] = {}
        with torch.autocast(device.type, enabled=False):
            for layer, prediction in enumerate(predictions):
                class_logits, mask_logits = prediction.class_logits.float(), prediction.mask_logits.float()
                matching = self.matcher(class_logits, mask_logits, targets)
                ce = self.class_loss(class_logits, targets, matching)
                bce, dice = self.mask_losses(mask_logits, targets, matching, num_masks)
                total = total + self.class_weight * ce + self.mask_weight * bce + self.dice_weight * dice
                terms.update({f"layer{layer}/ce": ce.detach(), f"layer{layer}/bce": bce.detach(),
                              f"layer{layer}/dice": dice.detach()})
        return total, terms

    def class_loss(self, class_logits: torch.Tensor, targets: list[MaskTarget], matching: Matching) -> torch.Tensor:
        """Weighted mean CE over the queries of the images with a labelled pixel; unmatched queries target
        no-object (index num_classes). An all-ignore image (a crop that found no labelled pixel within its
        redraws) says nothing about its queries, so it is left out, and a batch of them gives 0."""
        target_classes = torch.full(class_logits.shape[:2], self.num_classes, dtype=torch.long,
                                    device=class_logits.device)
        for b, (target, (pred_idx, tgt_idx)) in enumerate(zip(targets, matching)):
            target_classes[b, pred_idx] = target.classes.to(class_logits.device)[tgt_idx]
        labelled = [b for b, target in enumerate(targets) if len(target.classes)]
        if not labelled:
            return class_logits.sum() * 0.0
        if len(labelled) < len(targets):
            class_logits, target_classes = class_logits[labelled], target_classes[labelled]
        weights = self.class_weights.to(class_logits.device)
        return F.cross_entropy(class_logits.transpose(1, 2), target_classes, weight=weights)

    def mask_losses(
        self, mask_logits: torch.Tensor, targets: list[MaskTarget], matching: Matching, num_masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(BCE, dice) of the matched pairs on importance-sampled points, each summed over masks / num_masks."""
        device = mask_logits.device
        batch_idx = torch.cat([torch.full_like(pred_idx, b) for b, (pred_idx, _) in enumerate(matching)])
        pred = mask_logits[batch_idx, torch.cat([pred_idx for pred_idx, _ in matching])]
        tgt = torch.cat([t.masks.to(device)[tgt_idx] for t, (_, tgt_idx) in zip(targets, matching)]).float()
        with torch.no_grad():
            coords = uncertainty_points(pred, self.num_points, self.oversample_ratio, self.importance_ratio,
                                        self.generator)
            point_tgt = point_sample(tgt, coords)
        point_logits = point_sample(pred, coords)
        bce = F.binary_cross_entropy_with_logits(point_logits, point_tgt, reduction="none").mean(1)
        probs = point_logits.sigmoid()
        dice = 1 - (2 * (probs * point_tgt).sum(1) + 1) / (probs.sum(1) + point_tgt.sum(1) + 1)
        return bce.sum() / num_masks, dice.sum() / num_masks

    @staticmethod
    def _num_masks(targets: list[MaskTarget], device: torch.device) -> torch.Tensor:
        """Target masks per process: the batch total averaged over processes, at least 1."""
        num_masks = torch.tensor(float(sum(len(t.classes) for t in targets)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
            num_masks = num_masks / dist.get_world_size()
        return num_masks.clamp(min=1)
