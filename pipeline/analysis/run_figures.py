"""Figures of the fine-tuning runs' evaluations (the `figures` stage): a strip of qualitative predictions per run,
per-class IoU bars per model and a confusion matrix per model, drawn from what finetune@ saved
(`pipeline.evaluation.previews`)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from pipeline.atomic import atomic_path  # noqa: E402
from pipeline.datasets.specs import CITYSCAPES_LABELS, get_spec, voc_palette  # noqa: E402
from pipeline.evaluation.previews import RunEvaluation  # noqa: E402

CONFUSION_CLASSES = 30
"""A confusion matrix shows at most this many classes (those with the most ground-truth pixels); the rest are
summed into one `other` row and column, so ADE20K's 150 classes stay readable."""
LEGEND_CLASSES = 12
"""Classes named next to each preview row (the largest in its ground truth and prediction)."""


def save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def label_palette(dataset: str) -> np.ndarray:
    """uint8[256, 3]: train id -> colour, the dataset's official palette where the project has one.

    PASCAL VOC: its colormap (train id = VOC index; 255 is VOC's void colour). Cityscapes and GTA V: the official
    Cityscapes colour of each train id. The others (ADE20K, PASCAL Context, COCO), which ship no palette in their
    label files: the VOC colormap shifted by one, so that no class is black. Ignored pixels (255) are black.
    """
    if dataset == "pascal_voc":
        return voc_palette()
    palette = np.zeros((256, 3), np.uint8)
    if dataset in ("cityscapes", "gta5"):
        for _, _, train_id, colour in CITYSCAPES_LABELS:
            if train_id != 255:
                palette[train_id] = colour
        return palette
    k = get_spec(dataset).num_classes
    palette[:k] = voc_palette()[1:k + 1]
    return palette


def class_iou(confusion: np.ndarray) -> np.ndarray:
    """IoU per class of a K x K confusion matrix (rows = ground truth); NaN where a class is in neither."""
    confusion = confusion.astype(np.float64)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return np.divide(intersection, union, out=np.full(union.shape, np.nan), where=union > 0)


def predictions_strip(evaluation: RunEvaluation, title: str, path: Path) -> None:
    """One row per preview image: the image, its ground truth and the run's prediction in the dataset's palette,
    with the largest classes of the row named on the right."""
    spec = get_spec(evaluation.dataset)
    palette = label_palette(evaluation.dataset)
    rows = max(1, len(evaluation.previews))
    aspect = max((p.label.shape[0] / p.label.shape[1] for p in evaluation.previews), default=1.0)
    width = max((p.label.shape[1] for p in evaluation.previews), default=256)
    cell = min(2.6, max(1.6, width / 100))  # inches at 100 dpi: small images are not blown up into large PNGs
    row = max(cell * aspect, 0.17 * LEGEND_CLASSES + 0.2)  # tall enough for the row's legend
    fig, axes = plt.subplots(rows, 3, figsize=(3 * cell + 1.8, rows * (row + 0.3) + 0.4), squeeze=False)
    for row, preview in zip(axes, evaluation.previews):
        labelled = preview.label != spec.ignore_index
        accuracy = (preview.prediction == preview.label)[labelled].mean() if labelled.any() else float("nan")
        for ax, picture, name in zip(row, (preview.image, palette[preview.label], palette[preview.prediction]),
                                     ("image", "ground truth", f"prediction (pixel acc. {accuracy:.0%})")):
            ax.imshow(picture, interpolation="antialiased" if name == "image" else "nearest")
            ax.set_title(f"{preview.key}: {name}" if name == "image" else name, fontsize=8)
            ax.set_axis_off()
        classes = np.concatenate([preview.label[labelled], preview.prediction.ravel()])
        sizes = np.bincount(classes[classes < spec.num_classes], minlength=spec.num_classes)
        shown = [c for c in np.argsort(-sizes, kind="stable")[:LEGEND_CLASSES] if sizes[c] > 0]
        row[2].legend(handles=[Patch(color=palette[c] / 255, label=spec.classes[c]) for c in shown],
                      loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    for ax in axes.flat[3 * len(evaluation.previews):]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)


def confusion_matrix(confusion: np.ndarray, dataset: str, title: str, path: Path,
                     max_classes: int = CONFUSION_CLASSES) -> None:
    """Row-normalised confusion matrix (each ground-truth class's pixels spread over the predicted classes) of
    the classes present in the ground truth, at most `max_classes` of them plus `other`."""
    classes = get_spec(dataset).classes
    support = confusion.sum(1)
    present = [c for c in np.argsort(-support, kind="stable") if support[c] > 0]
    shown, rest = present[:max_classes], present[max_classes:] + [c for c in range(len(classes)) if support[c] == 0]
    names = [classes[c] for c in shown]
    matrix = confusion[np.ix_(shown, shown)].astype(np.float64)
    if rest:
        names.append("other")
        matrix = np.block([[matrix, confusion[np.ix_(shown, rest)].sum(1, keepdims=True)],
                           [confusion[np.ix_(rest, shown)].sum(0, keepdims=True),
                            confusion[np.ix_(rest, rest)].sum(keepdims=True)]]).astype(np.float64)
    rows = matrix.sum(1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    n = len(names)
    fig, ax = plt.subplots(figsize=(0.28 * n + 2.5, 0.28 * n + 2.0))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    if n <= 20:
        for i, j in zip(*np.nonzero(normalised >= 0.005)):
            ax.text(j, i, f"{normalised[i, j] * 100:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if normalised[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.04, label="share of the ground-truth class's pixels")
    ax.set_title(title, fontsize=9)
    save(fig, path)


def per_class_iou(ious: dict[str, np.ndarray], mious: dict[str, float], dataset: str, title: str,
                  path: Path) -> None:
    """One panel per model: its IoU per class (`ious`, bars in the class's palette colour) and its mIoU (`mious`),
    the classes in the order of their mean IoU over the models, those no model saw or predicted left out."""
    spec, palette = get_spec(dataset), label_palette(dataset)
    table = np.vstack(list(ious.values()))
    seen = np.flatnonzero(~np.isnan(table).all(0))
    mean = np.nanmean(table[:, seen], axis=0) if seen.size else np.zeros(0)
    order = seen[np.argsort(-mean, kind="stable")]
    fig, axes = plt.subplots(len(ious), 1, figsize=(max(6.0, 0.14 * len(order) + 1.5), 1.5 * len(ious) + 1.2),
                             sharex=True, squeeze=False)
    for ax, (model, iou) in zip(axes[:, 0], ious.items()):
        values = np.nan_to_num(iou[order] * 100)
        ax.bar(range(len(order)), values, color=palette[order] / 255, edgecolor="black", linewidth=0.3)
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"{model}\nmIoU {mious[model] * 100:.1f}", fontsize=8)
        ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    axes[-1, 0].set_xticks(range(len(order)), [spec.classes[c] for c in order], rotation=90, fontsize=6)
    axes[-1, 0].set_xlim(-0.6, len(order) - 0.4)
    fig.supylabel("IoU %")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)
