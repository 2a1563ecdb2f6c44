"""Fine-tuning a segmenter and evaluating it: the benchmark's training protocol (reference notes §4-6)."""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from torch.utils.data import DataLoader

from pipeline.config import FinetuneCfg, Mask2FormerCfg, Run
from pipeline.datasets.augment import TrainAugment
from pipeline.datasets.shards import TrainStream, load_split, shard_paths
from pipeline.datasets.specs import get_spec
from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.sliding_window import predict
from pipeline.networks.segmenter import Segmenter, build_segmenter
from pipeline.training.criteria import Criterion, build_criterion
from pipeline.training.optim import build_optimizer, build_schedule, count_trainable
from pipeline.training.precision import autocast, default_device, grad_scaler, resolve_precision


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


@dataclass
class FinetuneResult:
    model: Segmenter
    metrics: dict


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_loader(shards: list[str], crop: int, cfg: FinetuneCfg, seed: int, device: torch.device) -> DataLoader:
    stream = TrainStream(shards, TrainAugment(crop, cfg.scale_range), seed=seed)
    return DataLoader(
        stream,
        batch_size=cfg.micro_batch_size,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.workers > 0,
    )


def train(
    model: Segmenter, loader: DataLoader, run: Run, cfg: FinetuneCfg, criterion: Criterion, device: torch.device,
    live: Live | None,
) -> float:
    """Run `run.steps` optimizer steps of `cfg.accumulation` micro-batches; return the seconds spent."""
    precision = resolve_precision(cfg.precision, device)
    optimizer = build_optimizer(model.encoder, model.decoder, cfg.lr, cfg.encoder_lr_multiplier, cfg.weight_decay)
    schedule = build_schedule(optimizer, run.steps, cfg.poly_power)
    scaler = grad_scaler(precision, device)
    forward = torch.compile(model) if run.compile else model
    batches = iter(loader)
    model.train()
    start = time.perf_counter()
    for step in range(1, run.steps + 1):
        total, terms = 0.0, {}
        for _ in range(cfg.accumulation):
            images, labels = next(batches)
            images = images.to(device, non_blocking=True).float().div_(255)
            labels = labels.to(device, non_blocking=True).long()
            with autocast(precision, device):
                output = forward(images)
            loss, micro_terms = criterion(output, labels)
            loss = loss / cfg.accumulation
            scaler.scale(loss).backward()
            total += loss.item()
            for name, value in micro_terms.items():
                terms[name] = terms.get(name, 0.0) + value / cfg.accumulation
        if not np.isfinite(total):
            raise NonFiniteLossError(f"{run.name}: loss is {total} at optimizer step {step}; stopping")
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        if live is not None and (step % cfg.log_every == 0 or step == run.steps):
            live.step = step
            live.log_metric("train/loss", total)
            for name, value in terms.items():
                live.log_metric(f"train/{name}", value)
            for group in optimizer.param_groups:
                live.log_metric(f"train/lr_{group['name']}", group["lr"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@torch.no_grad()
def evaluate(
    model: Segmenter, samples, crop: int, num_classes: int, ignore_index: int, precision: str, device: torch.device
) -> ConfusionMatrix:
    """Sliding-window inference on every sample; dataset-level confusion matrix."""
    model.eval()
    confusion = ConfusionMatrix(num_classes, ignore_index)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast(precision, device):
            return model.scores(x).float()

    for _, image, label in samples:
        prediction = predict(forward, image.to(device), crop, num_classes)
        confusion.update(prediction.cpu(), label.long())
    return confusion


def finetune(run: Run, cfg: FinetuneCfg, mask2former: Mask2FormerCfg, train_shards: Path, eval_shards: Path,
             weights: Path, live_dir: Path | None) -> FinetuneResult:
    device = default_device()
    seed_everything(run.seed)
    spec, eval_spec = get_spec(run.setup.dataset), get_spec(run.setup.eval_dataset)
    model = build_segmenter(
        run.setup.decoder,
        spec.num_classes,
        decoder_kwargs=mask2former.decoder_kwargs if run.setup.decoder == "mask2former" else None,
        timm_name=run.variant.timm_name,
        img_size=run.crop,
        patch_size=run.setup.patch_size,
        checkpoint=str(weights),
        timm_kwargs=run.variant.timm_kwargs,
        normalization=run.setup.normalization,
    ).to(device)
    model.encoder.set_frozen(run.setup.freeze_encoder)
    criterion = build_criterion(run.setup.decoder, spec.num_classes, spec.ignore_index, mask2former, device)
    loader = train_loader(shard_paths(train_shards, "train"), run.crop, cfg, run.seed, device)

    live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) if live_dir else None
    try:
        train_seconds = train(model, loader, run, cfg, criterion, device, live)
    finally:
        if live is not None:
            live.end()

    eval_start = time.perf_counter()
    samples = load_split(eval_shards, "val")
    precision = resolve_precision(cfg.precision, device)
    confusion = evaluate(model, samples, run.crop, eval_spec.num_classes, eval_spec.ignore_index, precision, device)
    metrics = {
        "miou": confusion.miou(),
        "pixel_accuracy": confusion.pixel_accuracy(),
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - eval_start,
        "crops_per_second": run.steps * cfg.batch_size / train_seconds,
        "optimizer_steps": run.steps,
        "trainable_params": count_trainable(model),
        "eval_images": len(samples),
    }
    metrics.update(per_class_iou(confusion, eval_spec.classes))
    return FinetuneResult(model, metrics)


def per_class_iou(confusion: ConfusionMatrix, classes: tuple[str, ...]) -> dict[str, float]:
    """`iou_<class>` for every class present in the ground truth or the prediction (absent ones have no IoU)."""
    ious = confusion.iou().tolist()
    return {f"iou_{name.replace(' ', '_')}": value for name, value in zip(classes, ious) if not math.isnan(value)}
