"""Where each stage reads and writes; dvc.yaml declares the same paths."""
from __future__ import annotations

from pathlib import Path

MINIATURE = Path("data/miniature")
RAW = Path("data/raw")
SHARDS = Path("data/shards")
PRETRAIN = Path("models/pretrain")
FINETUNE = Path("models/finetune")
FINETUNE_METRICS = Path("metrics/finetune")
FINETUNE_COUNTS = Path("per_image/finetune")
TRAIN_PLOTS = Path("plots/train")
RANKING = Path("metrics/ranking.json")
RANK_FLIPS = Path("plots/rank_flips.json")
PLOTS = Path("plots")
FIGURES = Path("plots/figures")
PREVIEWS = Path("per_image/previews")      # finetune@: confusion matrix and preview images of each run
RUN_FIGURES = Path("plots/runs")           # figures: per run, its predictions strip (DVC-cached)
CLASS_FIGURES = Path("plots/per_class")    # figures: per-class IoU bars and confusion matrices (base setting)
REPORT = Path("plots/report.md")           # report: the study's results as one markdown page


def raw_dataset(data_root: str, dataset: str) -> Path:
    return Path(data_root) / dataset


def shards(dataset: str) -> Path:
    return SHARDS / dataset


def encoder_weights(model: str, size: str) -> Path:
    return PRETRAIN / model / size / "encoder.safetensors"


def finetune_dir(run_name: str) -> Path:
    return FINETUNE / run_name


def finetune_metrics(run_name: str) -> Path:
    return FINETUNE_METRICS / f"{run_name}.json"


def finetune_counts(run_name: str) -> Path:
    """Per-image intersection and union counts of the run's evaluation (`pipeline.evaluation.image_counts`)."""
    return FINETUNE_COUNTS / f"{run_name}.npz"


def finetune_previews(run_name: str) -> Path:
    """The run's confusion matrix and preview images (`pipeline.evaluation.previews`)."""
    return PREVIEWS / f"{run_name}.npz"


def train_plots(run_name: str) -> Path:
    return TRAIN_PLOTS / run_name


CONCEPTS = Path("data/concepts")
CONCEPT_STATS = Path("metrics/concepts.json")
ALIGN = Path("models/align")
ALIGN_METRICS = Path("metrics/align")
ALIGN_PLOTS = Path("plots/align")
ZEROSHOT_METRICS = Path("metrics/zeroshot")
ZEROSHOT_COUNTS = Path("per_image/zeroshot")


def align_name(tower: str, method: str) -> str:
    return f"{tower}-{method}"


def aligned_text(tower: str, method: str) -> Path:
    return ALIGN / align_name(tower, method) / "text.safetensors"


def align_metrics(tower: str, method: str) -> Path:
    return ALIGN_METRICS / f"{align_name(tower, method)}.json"


def align_plots(tower: str, method: str) -> Path:
    return ALIGN_PLOTS / align_name(tower, method)


def zeroshot_metrics(tower: str, method: str) -> Path:
    return ZEROSHOT_METRICS / f"{align_name(tower, method)}.json"


def zeroshot_counts(tower: str, method: str) -> Path:
    return ZEROSHOT_COUNTS / f"{align_name(tower, method)}.npz"
