"""Dataset-level confusion matrix and the IoU metrics derived from it (reference §6)."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.evaluation.image_counts import ImageCounts, class_iou, mean_iou


class ConfusionMatrix:
    """Accumulates a K x K pixel count matrix over a whole split; rows = target, columns = prediction.

    It also keeps each `update`'s per-class intersection and union (the evaluations update once per image), whose
    sums are the matrix's own: `image_counts` hands them to the bootstrap of the rank stage. The counting runs on
    the device of the label maps without the host waiting for it: the host reads the counts once, when `matrix`,
    `image_counts` or a metric next needs them. That read also reports labels outside [0, K) (ignore_index aside),
    which are counted apart, naming the first update that had them; every later read raises too.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self._rows: list[np.ndarray] = []  # per update read: intersection, union
        self._sums: torch.Tensor | None = None  # the device's K x K counts since the last read
        self._pending: list[torch.Tensor] = []  # per update since then: intersection, union, outside counts
        self._error: tuple[int, str] | None = None  # (update, what was wrong)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of integer label maps (any equal shapes); target == ignore_index is skipped."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
        k = self.num_classes
        pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
        # one bincount with fixed bins (a CUDA bincount reads its input's range first): k * k pairs, then ignored
        # pixels, targets outside the classes, predictions outside them
        bins = torch.where((pred < 0) | (pred >= k), k * k + 2, target * k + pred)
        bins = torch.where((target < 0) | (target >= k), k * k + 1, bins)
        bins = torch.where(target == self.ignore_index, k * k, bins)
        counts = torch.zeros(k * k + 3, dtype=torch.int64, device=bins.device)
        counts.index_add_(0, bins, bins.new_ones(()).expand_as(bins))
        matrix = counts[:k * k].view(k, k)
        self._sums = matrix if self._sums is None else self._sums + matrix
        intersection = matrix.diagonal()
        self._pending.append(torch.cat([intersection, matrix.sum(0) + matrix.sum(1) - intersection,
                                        counts[k * k + 1:]]))

    @property
    def matrix(self) -> torch.Tensor:
        """The K x K int64 counts on the CPU."""
        self._read()
        return self._matrix

    @matrix.setter
    def matrix(self, value: torch.Tensor) -> None:
        """Replace the split's counts (by their sum over processes, say); the per-update counts stay."""
        self._read()
        self._matrix = value

    def _read(self) -> None:
        """Bring what the device counted since the last read to the host, in one copy, and check it."""
        if self._pending:
            k, updates = self.num_classes, len(self._pending)
            flat = torch.cat([self._sums.reshape(-1), torch.stack(self._pending).reshape(-1)]).cpu().numpy()
            rows = flat[k * k:].reshape(updates, 2 * k + 2)
            self._matrix += torch.from_numpy(flat[:k * k].reshape(k, k))
            outside = np.flatnonzero(rows[:, 2 * k:].any(1))
            if self._error is None and outside.size:
                update = len(self._rows) + int(outside[0])
                targets, predictions = rows[outside[0], 2 * k:]
                self._error = (update, f"target labels must lie in [0, {k}) or equal ignore_index "
                                       f"{self.ignore_index}, prediction labels in [0, {k}); {targets} target and "
                                       f"{predictions} predicted pixels do not")
            self._rows.extend(rows[:, :2 * k])
            self._sums, self._pending = None, []
        if self._error is not None:
            update, message = self._error
            raise ValueError(f"update {update}: {message}")

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-class (intersection, union) pixel counts of the whole split (int64)."""
        return intersection_union(self.matrix)

    def image_counts(self, keys) -> ImageCounts:
        """The counts of each `update`, one row per key (one key per update, in update order)."""
        keys = np.asarray(list(keys), dtype=str)
        updates = len(self._rows) + len(self._pending)
        if len(keys) != updates:
            raise ValueError(f"{len(keys)} keys for {updates} updates")
        try:
            self._read()
        except ValueError:
            update, message = self._error
            raise ValueError(f"{str(keys[update])!r}: {message}") from None
        rows = np.stack(self._rows) if self._rows else np.zeros((0, 2 * self.num_classes), np.int64)
        return ImageCounts(keys, rows[:, :self.num_classes].copy(), rows[:, self.num_classes:].copy())

    def iou(self) -> torch.Tensor:
        """Per-class IoU (float64); NaN for a class absent from both targets and predictions."""
        return torch.from_numpy(class_iou(*self.counts()))

    def miou(self, absent_as_zero: bool = False) -> float:
        """Mean IoU over classes present in targets or predictions (`image_counts.mean_iou`, the bootstrap's rule).

        torchmetrics >= 1.x (MulticlassJaccardIndex, zero_division=0), which the authors'
        code uses, scores absent classes 0 instead; `absent_as_zero=True` reproduces that.
        The two agree whenever every class occurs, as on the full validation sets.
        """
        if absent_as_zero:
            return float(self.iou().nan_to_num(0.0).mean())
        return float(mean_iou(*self.counts()))

    def pixel_accuracy(self) -> float:
        """Fraction of non-ignored pixels predicted correctly, in float64 like the IoUs (an int64 / int64
        division in torch gives float32, which is off from about 2**24 pixels on)."""
        matrix = self.matrix.double()
        return float(matrix.diag().sum() / matrix.sum())


def intersection_union(matrix: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (intersection, union) of a K x K confusion matrix: the diagonal, and row + column sums - it."""
    matrix = matrix.cpu().numpy()
    intersection = np.diag(matrix).copy()
    return intersection, matrix.sum(0) + matrix.sum(1) - intersection


def chance_miou(matrix: torch.Tensor) -> float:
    """The mIoU of guessing a uniformly random class for every labelled pixel, for the targets of `matrix`.

    A class's expected intersection is its pixels / K and its expected union its pixels plus all pixels / K less
    that; their ratio, with the rule of `mean_iou`, is the mIoU of the expected confusion matrix, which every
    class's column enters. It is the floor a zero-shot mIoU on the same images must clear to mean anything.
    """
    targets = matrix.double().sum(1)
    return float(mean_iou(*intersection_union(targets[:, None].expand_as(matrix) / matrix.shape[0])))

