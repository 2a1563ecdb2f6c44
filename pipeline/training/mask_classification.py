"""Mask-classification targets, Hungarian matching and the Mask2Former loss (reference §3).

Everything here runs in float32 with autocast disabled, whatever the caller's precision. The host waits for the
device twice per micro-batch: targets_from_labels reads how many classes each image holds, and the matcher copies
the cost matrices of every prediction and image to scipy at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
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


def targets_from_labels(labels: torch.Tensor, ignore_index: int, num_classes: int | None = None) -> list[MaskTarget]:
    """B x H x W dense labels -> per image one binary mask per class present (ignore pixels belong to no mask).

    One host read for the batch, the number of classes of each image: presence is scattered on the device and the
    present ids, in increasing order, are the first of a stable sort (no `unique`, no boolean indexing). Labels are
    below `num_classes` (default: their maximum + 1, one more read) or ignore_index.
    """
    slots = int(labels.max()) + 1 if num_classes is None else num_classes
    flat = labels.flatten(1).long()
    flat = flat.masked_fill(flat == ignore_index, slots)
    present = torch.zeros(len(labels), slots + 1, dtype=torch.bool, device=labels.device).scatter_(1, flat, True)
    present = present[:, :slots]
    ids = (~present).byte().argsort(dim=1, stable=True)
    return [MaskTarget(ids[b, :count], label[None] == ids[b, :count, None, None])
            for b, (label, count) in enumerate(zip(labels, present.sum(1).tolist()))]


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


class PointDraws(NamedTuple):
    """The uniform draws of `uncertainty_points` for M masks: M x candidates x 2 and M x fresh points x 2."""
    candidates: torch.Tensor
    fresh: torch.Tensor


def draw_points(num_masks: int, num_points: int, oversample_ratio: float, importance_ratio: float,
                device: torch.device, generator: torch.Generator | None = None) -> PointDraws:
    candidates = _uniform_coords((num_masks, int(num_points * oversample_ratio), 2), device, generator)
    fresh = _uniform_coords((num_masks, num_points - int(importance_ratio * num_points), 2), device, generator)
    return PointDraws(candidates, fresh)


def uncertainty_points(
    mask_logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_ratio: float,
    generator: torch.Generator | PointDraws | None = None,
) -> torch.Tensor:
    """M x h x w logits -> M x num_points x 2 coords: of int(num_points*oversample_ratio) uniform candidates keep
    the int(importance_ratio*num_points) most uncertain (largest -|logit|), then fill with fresh uniform points.

    `generator` may be the draws themselves (`draw_points`): the loss draws them before matching, to keep the order of
    the random stream while every prediction is matched in one host round trip.
    """
    draws = generator if isinstance(generator, PointDraws) else draw_points(
        mask_logits.shape[0], num_points, oversample_ratio, importance_ratio, mask_logits.device, generator)
    uncertainty = -point_sample(mask_logits, draws.candidates).abs()
    top = uncertainty.topk(int(importance_ratio * num_points), dim=1).indices
    chosen = draws.candidates.gather(1, top[..., None].expand(-1, -1, 2))
    return torch.cat((chosen, draws.fresh), dim=1)


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

    def __call__(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, targets: list[MaskTarget]) -> Matching:
        """Per image (pred_idx, tgt_idx) of one prediction; see `match`."""
        return self.match([(class_logits, mask_logits)], targets, [self.draw(targets, mask_logits.device)])[0]

    def draw(self, targets: list[MaskTarget], device: torch.device) -> list[torch.Tensor | None]:
        """Per image with a target, one set of uniform points shared by all its predicted and target masks."""
        return [_uniform_coords((1, self.num_points, 2), device, self.generator) if len(t.classes) else None
                for t in targets]

    @torch.no_grad()
    def match(self, predictions: list[tuple[torch.Tensor, torch.Tensor]], targets: list[MaskTarget],
              points: list[list[torch.Tensor | None]]) -> list[Matching]:
        """Per prediction (class logits, mask logits) and image, (pred_idx, tgt_idx) by scipy's
        linear_sum_assignment on the image's cost matrix at its `points` (`draw`).

        The cost matrices of all predictions and images go to the host in one copy and the indices come back in
        one, so the device waits for the host once, however many predictions and images.
        """
        device = predictions[0][1].device
        target_masks = [t.masks.to(device, torch.float32) for t in targets]
        with torch.autocast(device.type, enabled=False):
            costs = [self._cost(class_logits[b].float(), mask_logits[b].float(), target_masks[b], targets[b].classes,
                                coords)
                     for (class_logits, mask_logits), image_points in zip(predictions, points)
                     for b, coords in enumerate(image_points) if coords is not None]
        host = torch.cat([c.flatten() for c in costs]).cpu().numpy() if costs else None
        pairs, offset = [], 0
        for cost in costs:
            pairs.extend(linear_sum_assignment(host[offset:offset + cost.numel()].reshape(cost.shape)))
            offset += cost.numel()
        flat = torch.from_numpy(np.concatenate(pairs) if pairs else np.empty(0, dtype=np.int64))
        solved = iter(flat.to(device, torch.long, non_blocking=True).split([len(i) for i in pairs]))
        empty = torch.empty(0, dtype=torch.long, device=device)
        return [[(next(solved), next(solved)) if coords is not None else (empty, empty) for coords in image_points]
                for image_points in points]

    def _cost(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, target_masks: torch.Tensor,
              classes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Q x M matching cost of one image, clamped to +-1e10 (linear_sum_assignment refuses infinite costs)."""
        pred = point_sample(mask_logits[None], coords)[0]
        tgt = point_sample(target_masks[None], coords)[0]
        probs = class_logits.softmax(-1)[:, classes.to(mask_logits.device)]
        cost = (
            self.mask_weight * _pairwise_bce(pred, tgt)
            + self.dice_weight * _pairwise_dice(pred, tgt)
            - self.class_weight * probs
        )
        return cost.clamp(-1e10, 1e10)


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
        detached unweighted terms per layer ('layer{i}/ce', 'layer{i}/bce', 'layer{i}/dice'), on the device.

        Every prediction is matched in one host round trip, so the random points are drawn first, in the order
        that matching and sampling one prediction after the other draws them: the matcher's, then the mask losses'.
        """
        device = predictions[0].mask_logits.device
        num_masks = self._num_masks(targets, device)
        num_queries = predictions[0].class_logits.shape[1]
        matched = sum(min(num_queries, len(t.classes)) for t in targets)  # linear_sum_assignment's pairs
        total = torch.zeros((), device=device)
        terms: dict[str, torch.Tensor] = {}
        with torch.autocast(device.type, enabled=False):
            layers = [(p.class_logits.float(), p.mask_logits.float()) for p in predictions]
            points, draws = [], []
            for _ in layers:
                points.append(self.matcher.draw(targets, device))
                draws.append(draw_points(matched, self.num_points, self.oversample_ratio, self.importance_ratio,
                                         device, self.generator))
            matchings = self.matcher.match(layers, targets, points)
            for layer, ((class_logits, mask_logits), matching, layer_draws) in enumerate(zip(layers, matchings, draws)):
                ce = self.class_loss(class_logits, targets, matching)
                bce, dice = self.mask_losses(mask_logits, targets, matching, num_masks, layer_draws)
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
        self, mask_logits: torch.Tensor, targets: list[MaskTarget], matching: Matching, num_masks: torch.Tensor,
        draws: PointDraws,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(BCE, dice) of the matched pairs on importance-sampled points (from `draws`), each summed over masks /
        num_masks."""
        device = mask_logits.device
        batch_idx = torch.cat([torch.full_like(pred_idx, b) for b, (pred_idx, _) in enumerate(matching)])
        pred = mask_logits[batch_idx, torch.cat([pred_idx for pred_idx, _ in matching])]
        tgt = torch.cat([t.masks.to(device)[tgt_idx] for t, (_, tgt_idx) in zip(targets, matching)]).float()
        with torch.no_grad():
            coords = uncertainty_points(pred, self.num_points, self.oversample_ratio, self.importance_ratio, draws)
            point_tgt = point_sample(tgt, coords)
        point_logits = point_sample(pred, coords)
        bce = F.binary_cross_entropy_with_logits(point_logits, point_tgt, reduction="none").mean(1)
        probs = point_logits.sigmoid()
        dice = 1 - (2 * (probs * point_tgt).sum(1) + 1) / (probs.sum(1) + point_tgt.sum(1) + 1)
        return bce.sum() / num_masks, dice.sum() / num_masks

    @staticmethod
    def _num_masks(targets: list[MaskTarget], device: torch.device) -> torch.Tensor:
        """Target masks per process: the batch total averaged over processes, at least 1."""
        num_masks = torch.full((), float(sum(len(t.classes) for t in targets)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
            num_masks = num_masks / dist.get_world_size()
        return num_masks.clamp(min=1)
