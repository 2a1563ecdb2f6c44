"""Per-image intersection and union counts, the one IoU rule, and the `.npz` files finetune@ and zeroshot@ write.

A class's intersection (pixels labelled and predicted as it) and union (labelled or predicted as it) are sums over
pixels, so the counts of the images add up exactly to those of the dataset-level confusion matrix. Keeping them
per image lets `rank` resample the validation images (`pipeline.analysis.bootstrap`) without re-running inference.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import CountsError
from pipeline.evaluation.npz_files import load_npz, save_npz

FIELDS = ("keys", "intersection", "union")


def class_iou(intersection, union) -> np.ndarray:
    """IoU per class (last axis) in float64; NaN where the union is 0 (absent from targets and predictions)."""
    intersection, union = np.asarray(intersection, np.float64), np.asarray(union, np.float64)
    return np.divide(intersection, union, out=np.full(union.shape, np.nan), where=union > 0)


def mean_iou(intersection, union) -> np.ndarray:
    """mIoU along the last axis over the classes present in targets or predictions (union > 0); NaN if none is."""
    present = np.asarray(union) > 0
    total = np.where(present, class_iou(intersection, union), 0.0).sum(-1)
    count = present.sum(-1)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


@dataclass(frozen=True)
class ImageCounts:
    """Rows: the images (named by `keys`); columns: the classes. Ignored target pixels are not counted."""

    keys: np.ndarray          # N str
    intersection: np.ndarray  # N x K int64
    union: np.ndarray         # N x K int64

    def miou(self) -> float:
        """The dataset-level mIoU: the rule of `mean_iou` on the summed counts."""
        return float(mean_iou(self.intersection.sum(0), self.union.sum(0)))

    def sorted(self) -> ImageCounts:
        """Rows in key order: one order for every run of a dataset, whatever order it evaluated in."""
        order = np.argsort(self.keys, kind="stable")
        return ImageCounts(self.keys[order], self.intersection[order], self.union[order])


def save(path: Path, counts: dict[str, ImageCounts]) -> None:
    """Write `{dataset: counts}` as one compressed `.npz` (arrays `<dataset>.keys`, `.intersection`, `.union`)."""
    save_npz(path, {f"{name}.{field}": getattr(c, field) for name, c in counts.items() for field in FIELDS})


def load(path: Path) -> dict[str, ImageCounts]:
    """Read a file of `save`, checking its arrays; errors name the file."""
    arrays = load_npz(path, CountsError, "per-image counts")
    names = sorted({name.rsplit(".", 1)[0] for name in arrays})
    expected = {f"{n}.{field}" for n in names for field in FIELDS}
    if set(arrays) != expected:
        raise CountsError(f"{path}: arrays {sorted(arrays)}; expected <dataset>.{{{', '.join(FIELDS)}}} per dataset")
    counts = {}
    for name in names:
        keys, intersection, union = (arrays[f"{name}.{field}"] for field in FIELDS)
        n = len(keys)
        if (keys.ndim != 1 or keys.dtype.kind != "U" or len(set(keys)) != n or intersection.ndim != 2
                or intersection.shape != union.shape or intersection.shape[0] != n
                or intersection.dtype.kind not in "iu" or union.dtype.kind not in "iu"):
            raise CountsError(f"{path}: {name!r} needs N distinct keys and two N x K integer arrays; got keys "
                              f"{keys.dtype}{keys.shape}, intersection {intersection.dtype}{intersection.shape}, "
                              f"union {union.dtype}{union.shape}")
        if (intersection < 0).any() or (intersection > union).any():
            raise CountsError(f"{path}: {name!r} has counts with 0 <= intersection <= union violated")
        counts[name] = ImageCounts(keys, intersection.astype(np.int64), union.astype(np.int64))
    return counts
