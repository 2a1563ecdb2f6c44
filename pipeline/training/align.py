"""SimZSS / LiT text alignment against a frozen vision tower (paper Sec. 3, reference notes §2-4).

Only the text tower and the logit scale learn. The tower's CLS and patch tokens (after its
final norm) are L2-normalised and used as they are: no visual projection.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.config import AlignCfg, Variant
from pipeline.datasets.caption_augment import full_view, random_resized_crop
from pipeline.datasets.caption_shards import CaptionSample, CaptionShards, decode_caption_sample
from pipeline.datasets.shards import MANIFEST, TrainStream, file_sha256
from pipeline.networks.encoder import Encoder
from pipeline.networks.text_tower import AlignedText, TextTower
from pipeline.networks.text_tower_cfg import TextTowerCfg
from pipeline.networks.tower import normalized_tokens
from pipeline.training.checkpoint import Checkpointer, weights_sha256
from pipeline.training.distributed import Processes
from pipeline.training.feature_cache import DiskFeatureCache, FeatureCache
from pipeline.training.loop import Trainer, TrainingLoop, check_finite, seed_everything
from pipeline.training.optim import count_trainable
from pipeline.training.precision import autocast, grad_scaler, resolve_precision
from pipeline.training.simzss_loss import simzss_loss


@dataclass
class AlignResult:
    model: AlignedText
    metrics: dict


class CaptionView:
    """CaptionSample -> (image uint8 3 x size x size, tokens, concept ids, spans, image key, whether the image is real).

    Without the feature cache (`cached` False), a random resized crop of each sample. With it, the full view: the
    cache holds the features of every image this consumer handed out in an earlier batch by the time it reads the
    current one, so such an image is neither decoded nor resized again (that was most of the loader's time) and a
    blank image stands in for it. An image first handed out in the current batch is still decoded each time, as
    before, since the cache gets it only with this batch. Batches are the `batch_size` consecutive samples this
    view transforms (TrainStream's batches, a resumed stream's included).
    """

    def __init__(self, size: int, scale: tuple[float, float], cached: bool, batch_size: int):
        self.size, self.scale, self.cached, self.batch_size = size, scale, cached, batch_size
        self.handed_out: set[str] = set()  # image keys of the earlier batches
        self.batch: set[str] = set()  # image keys of the current batch
        self.count = 0

    def __call__(self, sample: CaptionSample, g: torch.Generator):
        if not self.cached:
            image, real = random_resized_crop(sample.image, self.size, self.scale, g), True
        else:
            real = sample.image_key not in self.handed_out
            image = full_view(sample.image, self.size) if real else torch.zeros(3, self.size, self.size,
                                                                                 dtype=torch.uint8)
            self._hand_out(sample.image_key)
        return image, sample.tokens, sample.concepts, sample.spans, sample.image_key, real

    def _hand_out(self, image_key: str) -> None:
        self.batch.add(image_key)
        self.count += 1
        if self.count % self.batch_size == 0:
            self.handed_out |= self.batch
            self.batch = set()


def _caption(sample: dict) -> tuple[CaptionSample]:
    return (decode_caption_sample(sample),)


def caption_loader(shards: CaptionShards, cfg: AlignCfg, cached: bool, device: torch.device,
                   procs: Processes = Processes(), skip_batches: int = 0) -> DataLoader:
    """The process's stream of caption views; web-scale shards are resampled when fewer than the consumers, and
    sha256-checked as they are read (`caption_shard_paths`)."""
    view = CaptionView(cfg.image_size, cfg.crop_scale, cached, cfg.micro_batch_size)
    stream = TrainStream(shards.paths, view, seed=cfg.seed, shuffle_buffer=cfg.shuffle_buffer, rank=procs.rank,
                         world_size=procs.world_size, decode=_caption, skip_batches=skip_batches,
                         batch_size=cfg.micro_batch_size, resample=shards.web, digests=shards.digests)
    return DataLoader(stream, batch_size=cfg.micro_batch_size, num_workers=cfg.workers,
                      pin_memory=device.type == "cuda", persistent_workers=cfg.workers > 0)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's exclusions: no decay for ndim < 2 or names with bn / ln / bias / logit_scale."""
    def excluded(name: str, p: torch.Tensor) -> bool:
        return p.ndim < 2 or any(part in name for part in ("bn", "ln", "bias", "logit_scale"))

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if excluded(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not excluded(n, p)], "weight_decay": weight_decay}]


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """open_clip's cosine_lr: linear warmup to the base lr, then cosine decay to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(steps - warmup_steps, 1)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_cache(cfg: AlignCfg, cache_dir, device: torch.device) -> FeatureCache | None:
    if cfg.feature_cache == "memory":
        return FeatureCache()
    if cfg.feature_cache == "disk":
        return DiskFeatureCache(cache_dir, device)
    return None


def build_trainer(cfg: AlignCfg, text_cfg: TextTowerCfg, embed_dim: int, precision: str, device: torch.device) -> Trainer:
    text = TextTower(text_cfg, embed_dim)
    model = AlignedText(text, cfg.logit_scale_init).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.scaled_lr, betas=cfg.betas,
                                  eps=cfg.eps, fused=device.type == "cuda" or None)
    schedule = warmup_cosine(optimizer, cfg.steps, int(cfg.warmup * cfg.steps))
    return Trainer(model, optimizer, schedule, grad_scaler(precision, device))


class MicroBatch(NamedTuple):
    """One forward's worth of a process's batch: frozen-tower features and the captions' text inputs."""
    image_global: torch.Tensor
    patches: torch.Tensor
    tokens: torch.Tensor
    concepts: torch.Tensor
    spans: torch.Tensor


def train_step(trainer: Trainer, micro_batches: list[MicroBatch], cfg: AlignCfg, concept_weight: float,
               precision: str, where: str, procs: Processes = Processes()) -> dict[str, float]:
    """One optimizer step on this process's micro-batches; the logged terms except the logit scale (means over
    processes), read to the host at once before the backward.

    The contrastive and concept losses need the whole batch at once, so more than one micro-batch
    is accumulated the GradCache way: text features of every micro-batch without a graph, the loss
    and its gradient with respect to those features on the whole batch, then each micro-batch's
    forward again with that gradient. One process with k micro-batches and k processes with one
    each compute the same step. Gradients are averaged over processes after the backward.
    """
    model = trainer.model

    def text(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(precision, tokens.device):
            text_global, token_emb = model.text(tokens)
        return text_global.float(), token_emb.float()

    def batch(field: str) -> torch.Tensor:
        return torch.cat([getattr(m, field) for m in micro_batches])

    if len(micro_batches) == 1:
        text_global, token_emb = text(micro_batches[0].tokens)
    else:
        with torch.no_grad():
            features = [text(m.tokens) for m in micro_batches]
        text_global = torch.cat([f[0] for f in features]).requires_grad_()
        token_emb = torch.cat([f[1] for f in features]).requires_grad_()
    out = simzss_loss(batch("image_global"), batch("patches"), text_global, token_emb, batch("concepts"),
                      batch("spans"), model.logit_scale.exp(), concept_weight, cfg.concept_temperature,
                      cfg.concept_scale, cfg.concept_target, cfg.concept_query, procs)
    loss, clip, concept, accuracy = procs.means(
        torch.stack([out.total, out.clip, out.concept, out.concept_accuracy]).double())  # the step's one read
    check_finite(loss, where)
    trainer.scaler.scale(out.total).backward()
    if len(micro_batches) > 1:
        rows = 0
        for m in micro_batches:
            part = slice(rows, rows + len(m.tokens))
            used = [(out, leaf.grad[part]) for out, leaf in zip(text(m.tokens), (text_global, token_emb))
                    if leaf.grad is not None]  # LiT leaves the token embeddings out of the loss
            torch.autograd.backward(*zip(*used))
            rows = part.stop
    procs.average_gradients(model)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.schedule.step()
    model.clamp_logit_scale(cfg.logit_scale_max)
    return {"loss": loss, "clip_loss": clip, "concept_loss": concept, "concept_accuracy": accuracy,
            "concepts_per_batch": out.concepts}


def fingerprint(cfg: AlignCfg, text_cfg: TextTowerCfg, concept_weight: float, tower: Variant, weights: Path,
                concepts: Path) -> dict:
    """What determines an alignment run's result: its params and the digests of its inputs."""
    return {"params": {"align": {k: v for k, v in asdict(cfg).items() if k not in ("log_every", "cache_dir")},
                       "text_tower": asdict(text_cfg), "concept_weight": concept_weight, "tower": asdict(tower)},
            "inputs": {"weights_sha256": weights_sha256(weights), "data_sha256": file_sha256(concepts / MANIFEST)}}


def align_text(tower: Encoder, cfg: AlignCfg, text_cfg: TextTowerCfg, concept_weight: float, shards: CaptionShards,
               live_dir, checkpointer: Checkpointer, procs: Processes = Processes(), cache_dir=None,
               name: str = "align") -> AlignResult | None:
    """Train a random-init text tower against the frozen `tower` for cfg.steps optimizer steps.

    Resumes from the checkpointer's last checkpoint; the main process returns the result, the others None.
    """
    device = procs.device()
    seed_everything(cfg.seed)
    precision = resolve_precision(cfg.precision, device)
    tower = tower.to(device).eval().requires_grad_(False)
    trainer = build_trainer(cfg, text_cfg, tower.embed_dim, precision, device)
    accumulation = cfg.accumulation(procs.world_size)
    cache = build_cache(cfg, cache_dir, device)
    loader = partial(caption_loader, shards, cfg, cache is not None, device, procs)
    loop = TrainingLoop(f"align@{name}", cfg.steps, cfg.log_every, trainer, checkpointer, loader, accumulation,
                        live_dir, procs, device)
    sums, terms = loop.extra.get("sums", {}), loop.extra.get("terms", {})

    def vision(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return normalized_tokens(tower, images.float().div_(255), precision, cfg.global_token)

    def micro_batch() -> MicroBatch:
        images, tokens, concepts, spans, keys, real = next(loop.batches)
        images = images.to(device, non_blocking=True)
        features = vision(images) if cache is None else cache.features(list(keys), images, vision, real.tolist())
        return MicroBatch(*features, tokens.to(device), concepts.to(device), spans.to(device))

    with loop:
        for step in loop.steps():
            micro_batches = [micro_batch() for _ in range(accumulation)]
            terms = train_step(trainer, micro_batches, cfg, concept_weight, precision, f"optimizer step {step}", procs)
            for key in ("loss", "concepts_per_batch"):
                sums[key] = sums.get(key, 0.0) + terms[key]
            if loop.logs(step):  # the logit scale after the step: one more read, only when it is logged
                terms["logit_scale"] = trainer.model.logit_scale.exp().item()
            lr = trainer.optimizer.param_groups[0]["lr"]
            loop.report(step, {f"train/{k}": v for k, v in terms.items()} | {"train/lr": lr}, loss=terms["loss"], lr=lr)
            loop.checkpoint(step, sums=sums, terms=terms)
    seconds = loop.seconds()
    if not procs.is_main:
        return None
    metrics = {f"final_{k}": v for k, v in terms.items()}
    metrics.update({f"mean_{k}": v / cfg.steps for k, v in sums.items() if k in ("loss", "concepts_per_batch")})
    metrics.update({"train_seconds": seconds, "samples_per_second": cfg.steps * cfg.batch_size / seconds,
                    "optimizer_steps": cfg.steps, "trainable_params": count_trainable(trainer.model),
                    "concept_weight": concept_weight})
    if cache is not None:
        metrics["cache_hit_rate"] = cache.hits / max(cache.hits + cache.misses, 1)
    return AlignResult(trainer.model, metrics)
