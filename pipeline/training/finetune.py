"""Fine-tuning a segmenter and evaluating it: the benchmark's training protocol (reference notes §4-6)."""
from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from pipeline.config import FinetuneCfg, Mask2FormerCfg, Run
from pipeline.datasets.augment import TrainAugment
from pipeline.datasets.shards import MANIFEST, TrainStream, file_sha256, load_split, shard_paths
from pipeline.datasets.specs import get_spec
from pipeline.errors import PipelineError
from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.sliding_window import predict
from pipeline.networks.segmenter import Segmenter, build_segmenter
from pipeline.training.criteria import Criterion, build_criterion
from pipeline.training.checkpoint import Checkpointer, set_rng_state, weights_sha256
from pipeline.training.distributed import Processes
from pipeline.training.optim import build_optimizer, build_schedule, count_trainable
from pipeline.training.precision import autocast, grad_scaler, resolve_precision
from pipeline.training.train_log import TrainLog


class NonFiniteLossError(PipelineError):
    """Training produced a NaN or infinite loss (a learning rate too high, or broken data)."""


@dataclass
class FinetuneResult:
    model: Segmenter
    metrics: dict


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_loader(shards: list[str], crop: int, cfg: FinetuneCfg, seed: int, device: torch.device, procs: Processes,
                 skip_batches: int = 0) -> DataLoader:
    stream = TrainStream(shards, TrainAugment(crop, cfg.scale_range), seed=seed, rank=procs.rank,
                         world_size=procs.world_size, skip_batches=skip_batches, batch_size=cfg.micro_batch_size)
    return DataLoader(
        stream,
        batch_size=cfg.micro_batch_size,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.workers > 0,
    )


def fingerprint(run: Run, cfg: FinetuneCfg, mask2former: Mask2FormerCfg, weights: Path, train_shards: Path) -> dict:
    """What determines a fine-tuning run's result: its params and the digests of its inputs."""
    return {"params": {"run": asdict(run), "finetune": {k: v for k, v in asdict(cfg).items() if k != "log_every"},
                       "mask2former": asdict(mask2former) if run.setup.decoder == "mask2former" else None},
            "inputs": {"weights_sha256": weights_sha256(weights),
                       "data_sha256": file_sha256(train_shards / MANIFEST)}}


def train(
    model: Segmenter, shards: list[str], run: Run, cfg: FinetuneCfg, criterion: Criterion, device: torch.device,
    live_dir: Path | None, checkpointer: Checkpointer, procs: Processes,
) -> float:
    """Run `run.steps` optimizer steps of micro-batches x accumulation x processes samples; the seconds spent.

    A killed run resumes from the checkpointer's last checkpoint; under torchrun the model is
    wrapped in DDP, which averages the gradients over processes on the last micro-batch of a step.
    """
    precision = resolve_precision(cfg.precision, device)
    accumulation = cfg.accumulation(procs.world_size)
    optimizer = build_optimizer(model.encoder, model.decoder, cfg.lr, cfg.encoder_lr_multiplier, cfg.weight_decay)
    schedule = build_schedule(optimizer, run.steps, cfg.poly_power)
    scaler = grad_scaler(precision, device)
    resumed = checkpointer.resume(model, optimizer, schedule, scaler)
    start, seconds = (resumed.step, resumed.extra["seconds"]) if resumed else (0, 0.0)
    batches = iter(train_loader(shards, run.crop, cfg, run.seed, device, procs, skip_batches=start * accumulation))
    if resumed:
        set_rng_state(resumed.rng)
    parallel = DistributedDataParallel(model) if procs.distributed else model
    forward = torch.compile(parallel) if run.compile else parallel
    log = TrainLog(live_dir, procs, resumed.extra["history"] if resumed else None)
    model.train()
    started = time.perf_counter()
    for step in range(start + 1, run.steps + 1):
        total, terms = 0.0, {}
        for micro in range(accumulation):
            images, labels = next(batches)
            images = images.to(device, non_blocking=True).float().div_(255)
            labels = labels.to(device, non_blocking=True).long()
            syncs = micro == accumulation - 1 or not procs.distributed
            with contextlib.nullcontext() if syncs else parallel.no_sync():
                with autocast(precision, device):
                    output = forward(images)
                loss, micro_terms = criterion(output, labels)
                loss = loss / accumulation
                scaler.scale(loss).backward()
            total += loss.item()
            for name, value in micro_terms.items():
                terms[name] = terms.get(name, 0.0) + value / accumulation
        total = procs.mean(total)
        if not math.isfinite(total):
            log.close()
            raise NonFiniteLossError(f"{run.name}: loss is {total} at optimizer step {step}; stopping "
                                     f"({checkpointer.last_saved()})")
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        if step % cfg.log_every == 0 or step == run.steps:
            values = {"train/loss": total, **{f"train/{k}": procs.mean(v) for k, v in terms.items()}}
            log.log(step, values | {f"train/lr_{g['name']}": g["lr"] for g in optimizer.param_groups})
        if checkpointer.due(step, run.steps):
            elapsed = seconds + time.perf_counter() - started
            checkpointer.save(step, model, optimizer, schedule, scaler, {"seconds": elapsed, "history": log.history})
    log.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seconds + time.perf_counter() - started


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
             weights: Path, live_dir: Path | None, checkpointer: Checkpointer,
             procs: Processes = Processes()) -> FinetuneResult | None:
    """Train, then (main process only) evaluate; the other processes return None."""
    device = procs.device()
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
    train_seconds = train(model, shard_paths(train_shards, "train"), run, cfg, criterion, device, live_dir,
                          checkpointer, procs)
    if not procs.is_main:
        return None
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
