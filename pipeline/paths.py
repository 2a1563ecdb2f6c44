"""Where each stage reads and writes; dvc.yaml declares the same paths."""
from __future__ import annotations

from pathlib import Path

MINIATURE = Path("data/miniature")
RAW = Path("data/raw")
SHARDS = Path("data/shards")
PRETRAIN = Path("models/pretrain")
FINETUNE = Path("models/finetune")
FINETUNE_METRICS = Path("metrics/finetune")
TRAIN_PLOTS = Path("plots/train")
RANKING = Path("metrics/ranking.json")
PLOTS = Path("plots")
FIGURES = Path("plots/figures")


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


def train_plots(run_name: str) -> Path:
    return TRAIN_PLOTS / run_name


CONCEPTS = Path("data/concepts")
CONCEPT_STATS = Path("metrics/concepts.json")
ALIGN = Path("models/align")
ALIGN_METRICS = Path("metrics/align")
ALIGN_PLOTS = Path("plots/align")
ZEROSHOT_METRICS = Path("metrics/zeroshot")


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
