"""Dataset-level confusion matrix and the IoU metrics derived from it (reference §6)."""
from __future__ import annotations

import torch


class ConfusionMatrix:
    """Accumulates a K x K pixel count matrix over a whole split; rows = target, columns = prediction."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of integer label maps (any equal shapes); target == ignore_index is skipped."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
        pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        k = self.num_classes
        for name, labels in (("target", target), ("prediction", pred)):
            if labels.numel() and (labels.min() < 0 or labels.max() >= k):
                raise ValueError(
                    f"{name} labels must lie in [0, {k}) or equal ignore_index {self.ignore_index}; "
                    f"got range [{int(labels.min())}, {int(labels.max())}]"
                )
        counts = torch.bincount(target * k + pred, minlength=k * k).reshape(k, k)
        self.matrix += counts.to(self.matrix.device)

    def iou(self) -> torch.Tensor:
        """Per-class IoU (float64); NaN for a class absent from both targets and predictions."""
        matrix = self.matrix.double()
        intersection = matrix.diag()
        union = matrix.sum(0) + matrix.sum(1) - intersection
        return torch.where(union > 0, intersection / union, torch.full_like(union, float("nan")))

    def miou(self, absent_as_zero: bool = False) -> float:
        """Mean IoU over classes present in targets or predictions.

        torchmetrics >= 1.x (MulticlassJaccardIndex, zero_division=0), which the authors'
        code uses, scores absent classes 0 instead; `absent_as_zero=True` reproduces that.
        The two agree whenever every class occurs, as on the full validation sets.
        """
        iou = self.iou()
        if absent_as_zero:
            return float(iou.nan_to_num(0.0).mean())
        return float(iou.nanmean())

    def pixel_accuracy(self) -> float:
        """Fraction of non-ignored pixels predicted correctly."""
        return float(self.matrix.diag().sum() / self.matrix.sum())
