"""What a fine-tuning run's figures are drawn from: its confusion matrix and a few validation images with their
ground truth and prediction, saved by finetune@ as one `.npz` (DVC-cached, per_image/previews/<run>.npz).

Keeping the data, not the pictures, in the run's outputs lets the `figures` stage redraw every figure without
re-running a fine-tuning when only the drawing changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import PreviewError
from pipeline.evaluation.npz_files import load_npz, save_npz

MAX_SIDE = 512
"""Previews are shrunk to at most this many pixels on their long side (a Cityscapes image is 1024 x 2048)."""


@dataclass(frozen=True)
class Preview:
    """One validation image with its ground truth and the run's prediction (train ids)."""
    key: str
    image: np.ndarray       # H x W x 3 uint8
    label: np.ndarray       # H x W uint8 train ids (the dataset's ignore index where unlabelled)
    prediction: np.ndarray  # H x W uint8 train ids


@dataclass(frozen=True)
class RunEvaluation:
    dataset: str              # the evaluation dataset (pipeline.datasets.specs name)
    confusion: np.ndarray     # K x K int64 pixel counts, rows = ground truth, columns = prediction
    previews: tuple[Preview, ...]


def make_preview(key: str, image: torch.Tensor, label: torch.Tensor, prediction: torch.Tensor,
                 max_side: int = MAX_SIDE) -> Preview:
    """From an evaluation sample (image uint8 3 x H x W, label and prediction H x W) at most `max_side` pixels on
    its long side: the image area-averaged, the label maps by nearest neighbour."""
    h, w = label.shape[-2:]
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if scale < 1.0:
        image = F.interpolate(image[None].float(), size=size, mode="area")[0].round().clamp(0, 255)
        label, prediction = (F.interpolate(m[None, None].float(), size=size, mode="nearest")[0, 0]
                             for m in (label, prediction))
    return Preview(key, image.to(torch.uint8).permute(1, 2, 0).cpu().numpy(),
                   label.to(torch.uint8).cpu().numpy(), prediction.to(torch.uint8).cpu().numpy())


def save(path: Path, evaluation: RunEvaluation) -> None:
    arrays = {"dataset": np.array(evaluation.dataset), "confusion": evaluation.confusion.astype(np.int64),
              "keys": np.array([p.key for p in evaluation.previews], dtype=str)}
    for i, p in enumerate(evaluation.previews):
        arrays |= {f"image_{i}": p.image, f"label_{i}": p.label, f"prediction_{i}": p.prediction}
    save_npz(path, arrays)


def load(path: Path) -> RunEvaluation:
    """Read a file of `save`, checking its arrays; errors name the file."""
    arrays = load_npz(path, PreviewError, "a run's evaluation")
    try:
        confusion, keys = arrays["confusion"], arrays["keys"]
        dataset = str(arrays["dataset"])
        previews = tuple(Preview(str(key), arrays[f"image_{i}"], arrays[f"label_{i}"], arrays[f"prediction_{i}"])
                         for i, key in enumerate(keys))
    except KeyError as err:
        raise PreviewError(f"{path}: array {err} missing; re-run the finetune@ stage that wrote it") from None
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or confusion.dtype.kind not in "iu":
        raise PreviewError(f"{path}: confusion must be a K x K integer matrix, got {confusion.dtype}{confusion.shape}")
    for p in previews:
        if p.image.ndim != 3 or p.image.shape[2] != 3 or p.label.shape != p.image.shape[:2] \
                or p.prediction.shape != p.label.shape:
            raise PreviewError(f"{path}: preview {p.key!r} needs an H x W x 3 image and H x W label and prediction, "
                               f"got {p.image.shape}, {p.label.shape}, {p.prediction.shape}")
    return RunEvaluation(dataset, confusion, previews)
