"""SimZSS / LiT text alignment against a frozen vision tower (paper Sec. 3, reference notes §2-4).

Only the text tower and the logit scale learn. The tower's CLS and patch tokens (after its
final norm) are L2-normalised and used as they are: no visual projection.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from dvclive import Live
from torch import nn
from torch.utils.data import DataLoader

from pipeline.config import AlignCfg, TextCfg
from pipeline.datasets.caption_augment import full_view, random_resized_crop
from pipeline.datasets.caption_shards import CaptionSample, decode_caption_sample
from pipeline.datasets.shards import TrainStream
from pipeline.networks.encoder import Encoder
from pipeline.networks.text_tower import AlignedText, TextTower, TextTowerCfg
from pipeline.networks.tower import normalized_tokens
from pipeline.training.feature_cache import DiskFeatureCache, FeatureCache
from pipeline.training.finetune import NonFiniteLossError, seed_everything
from pipeline.training.optim import count_trainable
from pipeline.training.precision import autocast, default_device, grad_scaler, resolve_precision
from pipeline.training.simzss_loss import simzss_loss


@dataclass
class AlignResult:
    model: AlignedText
    metrics: dict


class CaptionView:
    """CaptionSample -> (image uint8 3 x size x size, tokens, concept ids, spans, image key).

    `fixed` gives the cached full view instead of the random resized crop.
    """

    def __init__(self, size: int, scale: tuple[float, float], fixed: bool):
        self.size, self.scale, self.fixed = size, scale, fixed

    def __call__(self, sample: CaptionSample, g: torch.Generator):
        if self.fixed:
            image = full_view(sample.image, self.size)
        else:
            image = random_resized_crop(sample.image, self.size, self.scale, g)
        return image, sample.tokens, sample.concepts, sample.spans, sample.image_key


def _caption(sample: dict) -> tuple[CaptionSample]:
    return (decode_caption_sample(sample),)


def caption_loader(shards: list[str], cfg: AlignCfg, fixed_view: bool, device: torch.device) -> DataLoader:
    stream = TrainStream(shards, CaptionView(cfg.image_size, cfg.crop_scale, fixed_view), seed=cfg.seed,
                         shuffle_buffer=cfg.shuffle_buffer, decode=_caption)
    return DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.workers,
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


@dataclass
class Trainer:
    """The aligned text model and what updates it."""

    model: AlignedText
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler


def build_trainer(cfg: AlignCfg, text_cfg: TextCfg, embed_dim: int, precision: str, device: torch.device) -> Trainer:
    text = TextTower(TextTowerCfg(text_cfg.width, text_cfg.layers, text_cfg.heads, text_cfg.context_length), embed_dim)
    model = AlignedText(text, cfg.logit_scale_init).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.scaled_lr, betas=cfg.betas,
                                  eps=cfg.eps)
    schedule = warmup_cosine(optimizer, cfg.steps, int(cfg.warmup * cfg.steps))
    return Trainer(model, optimizer, schedule, grad_scaler(precision, device))


def train_step(trainer: Trainer, vision: tuple[torch.Tensor, torch.Tensor], tokens: torch.Tensor,
               concepts: torch.Tensor, spans: torch.Tensor, cfg: AlignCfg, concept_weight: float, precision: str,
               where: str) -> dict[str, float]:
    """One optimizer step on a batch whose frozen-tower features are `vision`; the logged terms."""
    model, device = trainer.model, tokens.device
    with autocast(precision, device):
        text_global, token_emb = model.text(tokens)
    out = simzss_loss(*vision, text_global.float(), token_emb.float(), concepts, spans, model.logit_scale.exp(),
                      concept_weight, cfg.concept_temperature, cfg.concept_scale, cfg.concept_target,
                      cfg.concept_query)
    if not torch.isfinite(out.total):
        raise NonFiniteLossError(f"{where}: loss is {out.total.item()}; stopping")
    trainer.scaler.scale(out.total).backward()
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.schedule.step()
    model.clamp_logit_scale(cfg.logit_scale_max)
    return {"loss": out.total.item(), "clip_loss": out.clip.item(), "concept_loss": out.concept.item(),
            "concept_accuracy": out.concept_accuracy.item(), "concepts_per_batch": out.concepts,
            "logit_scale": model.logit_scale.exp().item()}


def align_text(tower: Encoder, cfg: AlignCfg, text_cfg: TextCfg, concept_weight: float, shards: list[str],
               live_dir, cache_dir=None, name: str = "align") -> AlignResult:
    """Train a random-init text tower against the frozen `tower` for cfg.steps optimizer steps."""
    device = default_device()
    seed_everything(cfg.seed)
    precision = resolve_precision(cfg.precision, device)
    tower = tower.to(device).eval().requires_grad_(False)
    trainer = build_trainer(cfg, text_cfg, tower.embed_dim, precision, device)
    cache = build_cache(cfg, cache_dir, device)
    batches = iter(caption_loader(shards, cfg, cache is not None, device))

    def vision(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return normalized_tokens(tower, images.float().div_(255), precision, cfg.global_token)

    live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) if live_dir else None
    sums, start = {}, time.perf_counter()
    try:
        for step in range(1, cfg.steps + 1):
            images, tokens, concepts, spans, keys = next(batches)
            images = images.to(device, non_blocking=True)
            features = vision(images) if cache is None else cache.features(list(keys), images, vision)
            terms = train_step(trainer, features, tokens.to(device), concepts.to(device), spans.to(device), cfg,
                               concept_weight, precision, f"{name}, optimizer step {step}")
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
            if live is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                live.step = step
                for key, value in terms.items():
                    live.log_metric(f"train/{key}", value)
                live.log_metric("train/lr", trainer.optimizer.param_groups[0]["lr"])
    finally:
        if live is not None:
            live.end()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    metrics = {f"final_{k}": v for k, v in terms.items()}
    metrics.update({f"mean_{k}": v / cfg.steps for k, v in sums.items() if k in ("loss", "concepts_per_batch")})
    metrics.update({"train_seconds": seconds, "samples_per_second": cfg.steps * cfg.batch_size / seconds,
                    "optimizer_steps": cfg.steps, "trainable_params": count_trainable(trainer.model),
                    "concept_weight": concept_weight})
    if cache is not None:
        metrics["cache_hit_rate"] = cache.hits / max(cache.hits + cache.misses, 1)
    return AlignResult(trainer.model, metrics)
