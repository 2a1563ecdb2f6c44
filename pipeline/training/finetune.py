"""Fine-tuning a segmenter and evaluating it: the benchmark's training protocol (reference notes §4-6)."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from pipeline.config import FinetuneCfg, Mask2FormerCfg, Run
from pipeline.datasets.augment import TrainAugment
from pipeline.datasets.shards import MANIFEST, TrainStream, file_sha256, shard_paths, split_loader
from pipeline.datasets.specs import get_spec
from pipeline.evaluation.image_counts import ImageCounts
from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.previews import RunEvaluation, make_preview
from pipeline.evaluation.sliding_window import predictions
from pipeline.networks.segmenter import Segmenter, build_segmenter
from pipeline.training.criteria import Criterion, build_criterion
from pipeline.training.checkpoint import Checkpointer, rng_state, set_rng_state, weights_sha256
from pipeline.training.distributed import Processes
from pipeline.training.loop import Trainer, TrainingLoop, check_finite, seed_everything
from pipeline.training.optim import build_optimizer, build_schedule, count_trainable
from pipeline.training.precision import autocast, grad_scaler, resolve_precision
from pipeline.training.progress import Progress

NOT_IN_FINGERPRINT = ("log_every", "val_every", "preview_images", "eval_batch_size")
"""FinetuneCfg keys that do not change the trained weights (logging, validation, figures): a checkpoint written
under other values resumes."""


@dataclass
class FinetuneResult:
    model: Segmenter
    metrics: dict
    counts: ImageCounts  # per validation image, for the rank stage's bootstrap
    evaluation: RunEvaluation  # confusion matrix and preview images, for the figures stage


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
    return {"params": {"run": asdict(run), "finetune": {k: v for k, v in asdict(cfg).items()
                                                       if k not in NOT_IN_FINGERPRINT},
                       "mask2former": asdict(mask2former) if run.setup.decoder == "mask2former" else None},
            "inputs": {"weights_sha256": weights_sha256(weights),
                       "data_sha256": file_sha256(train_shards / MANIFEST)}}


def train(
    model: Segmenter, shards: list[str], run: Run, cfg: FinetuneCfg, criterion: Criterion, device: torch.device,
    live_dir: Path | None, checkpointer: Checkpointer, procs: Processes,
    validate: Callable[[], dict[str, float]] | None = None,
) -> float:
    """Run `run.steps` optimizer steps of micro-batches x accumulation x processes samples; the seconds spent
    training (validation excluded).

    The host waits for the device once per optimizer step, to read the loss (for the finiteness check and the
    progress line) together with the loss terms on a step that logs them.

    A killed run resumes from the checkpointer's last checkpoint; under torchrun the model is
    wrapped in DDP, which averages the gradients over processes on the last micro-batch of a step.
    Every `cfg.val_every` optimizer steps (0: never) every process runs `validate` (which shares the images out)
    and the main one logs its values as `val/<name>`; see `validation` for why that leaves the training unchanged.
    """
    precision = resolve_precision(cfg.precision, device)
    accumulation = cfg.accumulation(procs.world_size)
    optimizer = build_optimizer(model.encoder, model.decoder, cfg.lr, cfg.encoder_lr_multiplier, cfg.weight_decay)
    schedule = build_schedule(optimizer, run.steps, cfg.poly_power)
    scaler = grad_scaler(precision, device)
    loader = partial(train_loader, shards, run.crop, cfg, run.seed, device, procs)
    loop = TrainingLoop(f"finetune@{run.name}", run.steps, cfg.log_every, Trainer(model, optimizer, schedule, scaler),
                        checkpointer, loader, accumulation, live_dir, procs, device)
    parallel = DistributedDataParallel(model) if procs.distributed else model
    forward = torch.compile(parallel) if run.compile else parallel
    model.train()
    with loop:
        for step in loop.steps():
            total, terms = torch.zeros((), dtype=torch.float64, device=device), {}
            for micro in range(accumulation):
                images, labels = next(loop.batches)
                images = images.to(device, non_blocking=True).float().div_(255)
                labels = labels.to(device, non_blocking=True).long()
                syncs = micro == accumulation - 1 or not procs.distributed
                with contextlib.nullcontext() if syncs else parallel.no_sync():
                    with autocast(precision, device):
                        output = forward(images)
                    loss, micro_terms = criterion(output, labels)
                    loss = loss / accumulation
                    scaler.scale(loss).backward()
                total += loss.detach().double()  # float64 on the device: the sum a float on the host would give
                for name, value in micro_terms.items():
                    terms[name] = terms.get(name, 0.0) + value.double() / accumulation
            logged = list(terms) if loop.logs(step) else []  # the terms are read only when they are logged
            total, *read = procs.means(torch.stack([total, *(terms[name] for name in logged)]))
            check_finite(total, f"optimizer step {step}")
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
            values = {"train/loss": total, **{f"train/{name}": value for name, value in zip(logged, read)}}
            loop.report(step, values | {f"train/lr_{name}": lr for name, lr in lrs.items()},
                        loss=total, lr=lrs.get("decoder", next(iter(lrs.values()))))
            if validate is not None and cfg.val_every and step % cfg.val_every == 0:
                with loop.untimed():
                    scores = validation(model, validate)
                loop.log.log(step, {f"val/{name}": value for name, value in scores.items()})
                loop.progress.write(f"finetune@{run.name} step {step}: validation "
                                    + ", ".join(f"{name} {value:.4f}" for name, value in scores.items()))
            loop.checkpoint(step)
    return loop.seconds()


def validation(model: Segmenter, validate: Callable[[], dict[str, float]]) -> dict[str, float]:
    """`validate()` in the middle of training, leaving the training as if it had not run.

    It runs in eval mode under no_grad (the optimizer, the gradients and the schedule are untouched; no dropout or
    drop-path is drawn), and every RNG state (Python, NumPy, torch, CUDA) is saved before and restored after, so
    the rest of the training draws the same random numbers. The training data iterator is not touched. So the
    trained weights are the same with validation on or off (bit-identical on CPU, tests/test_training.py; on CUDA
    as far as its kernels are deterministic).
    """
    state = rng_state()
    try:
        return validate()
    finally:
        set_rng_state(state)
        model.train()


@torch.no_grad()
def evaluate(
    model: Segmenter, samples, crop: int, num_classes: int, ignore_index: int, precision: str, device: torch.device,
    keep: frozenset[str] = frozenset(), desc: str = "evaluate", brief: bool = False, show: bool = True,
    batch_size: int = 16,
) -> tuple[ConfusionMatrix, list[str], dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Sliding-window inference on every (key, image, label) sample, the windows of consecutive images going
    through the model `batch_size` at a time; the dataset-level confusion matrix, the keys in the order of its
    updates, and (image, label, prediction in train ids) on the CPU of the samples whose key is in `keep`.

    The host does not wait for the device on the way: images and labels go to it without blocking (a GPU loader
    pins them), the counts stay on it until read (ConfusionMatrix) and the kept predictions come back at the end.
    Progress: a bar on a terminal, else a line every tenth of the samples; `brief` (a validation during training)
    removes the bar when done and prints no lines; `show=False` shows nothing (a process other than the main)."""
    model.eval()
    confusion = ConfusionMatrix(num_classes, ignore_index)
    keys, kept = [], {}

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast(precision, device):
            return model.scores(x).float()

    images = (((key, image, label), image.to(device, non_blocking=True)) for key, image, label in samples)
    every = 0 if brief else max(1, len(samples) // 10)
    with Progress(desc, len(samples), unit="image", every=every, leave=not brief, enabled=show) as progress:
        for done, ((key, image, label), prediction) in enumerate(
                predictions(forward, images, crop, num_classes, batch_size), 1):
            confusion.update(prediction, label.to(device, non_blocking=True))
            keys.append(key)
            if key in keep:
                kept[key] = (image, label, prediction)
            progress.update(done)
    return confusion, keys, {key: (image, label, prediction.cpu()) for key, (image, label, prediction) in kept.items()}


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
    precision = resolve_precision(cfg.precision, device)

    def samples(rank: int = 0, world_size: int = 1) -> DataLoader:
        """The evaluation split (every world_size-th image from the rank-th), decoded by the loader's workers."""
        return split_loader(eval_shards, "val", cfg.workers, device, rank=rank, world_size=world_size)

    def validate() -> dict[str, float]:
        """mIoU and pixel accuracy on the evaluation split, each process evaluating its share of the images (so
        under torchrun no process waits on the others for a whole evaluation)."""
        confusion, _, _ = evaluate(model, samples(procs.rank, procs.world_size), run.crop, eval_spec.num_classes,
                                   eval_spec.ignore_index, precision, device, desc=f"validate@{run.name}",
                                   brief=True, show=procs.is_main, batch_size=cfg.eval_batch_size)
        confusion.matrix = sum(procs.gather_objects(confusion.matrix))
        return {"miou": confusion.miou(), "pixel_accuracy": confusion.pixel_accuracy()}

    train_seconds = train(model, shard_paths(train_shards, "train"), run, cfg, criterion, device, live_dir,
                          checkpointer, procs, validate)
    if not procs.is_main:
        return None
    eval_start = time.perf_counter()
    split = samples()
    keep = frozenset(sorted(split.dataset.keys())[:cfg.preview_images])
    confusion, keys, kept = evaluate(model, split, run.crop, eval_spec.num_classes, eval_spec.ignore_index,
                                     precision, device, keep=keep, desc=f"evaluate@{run.name}",
                                     batch_size=cfg.eval_batch_size)
    metrics = {
        "miou": confusion.miou(),
        "pixel_accuracy": confusion.pixel_accuracy(),
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - eval_start,
        "crops_per_second": run.steps * cfg.batch_size / train_seconds,
        "optimizer_steps": run.steps,
        "trainable_params": count_trainable(model),
        "eval_images": len(keys),
    }
    metrics.update(per_class_iou(confusion, eval_spec.classes))
    previews = tuple(make_preview(key, *kept[key]) for key in sorted(kept))
    return FinetuneResult(model, metrics, confusion.image_counts(keys),
                          RunEvaluation(run.setup.eval_dataset, confusion.matrix.numpy(), previews))


def per_class_iou(confusion: ConfusionMatrix, classes: tuple[str, ...]) -> dict[str, float]:
    """`iou_<class>` for every class present in the ground truth or the prediction (absent ones have no IoU)."""
    ious = confusion.iou().tolist()
    return {f"iou_{name.replace(' ', '_')}": value for name, value in zip(classes, ious) if not math.isnan(value)}
