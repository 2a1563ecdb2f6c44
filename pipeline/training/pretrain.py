"""Pretraining of the miniature's toy ViTs, so that the miniature's ranking means something.

Five kinds, mirroring the families the paper compares (one module each in toy_objectives/):
- `random`: no pretraining (the seeded initialisation);
- `supervised`: multi-label classification of which classes appear in each region of a crop (image-level labels);
- `mim`: masked image modelling, SimMIM-style (pixel regression of masked patches);
- `clip`: contrastive image-caption learning, captions written from each crop's label map;
- `dino`: self-distillation with no labels (an EMA teacher on multi-crop views).
All train on the same stream of crops. The result is the timm model's state dict in its native shapes, which
`finetune` loads through the same local-checkpoint path as real checkpoints.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from pipeline.config import PretrainCfg, Variant
from pipeline.datasets.augment import TrainAugment
from pipeline.datasets.shards import TrainStream
from pipeline.datasets.specs import DatasetSpec
from pipeline.networks.encoder import Encoder
from pipeline.training.choices import TOY_PRETRAININGS
from pipeline.training.loop import check_finite, seed_everything
from pipeline.training.toy_objectives import ToyObjective
from pipeline.training.toy_objectives.clip import ClipObjective
from pipeline.training.toy_objectives.dino import DinoObjective
from pipeline.training.toy_objectives.mim import MaskedImageObjective
from pipeline.training.toy_objectives.supervised import SupervisedObjective

# Each trained toy pretraining's objective, from the toy encoder, the pretrain section and the training dataset.
OBJECTIVES: dict[str, Callable[[Encoder, PretrainCfg, DatasetSpec], ToyObjective]] = {
    "supervised": lambda encoder, cfg, spec: SupervisedObjective(encoder, spec.num_classes, spec.ignore_index,
                                                                 cfg.presence_cell),
    "mim": lambda encoder, cfg, spec: MaskedImageObjective(encoder, cfg.mask_ratio),
    "clip": lambda encoder, cfg, spec: ClipObjective(encoder, cfg.clip, spec.classes, spec.ignore_index),
    "dino": lambda encoder, cfg, spec: DinoObjective(encoder, cfg.dino, cfg.steps),
}


def build_toy(variant: Variant, normalization: str) -> Encoder:
    img_size, patch = variant.toy_input
    return Encoder(variant.timm_name, img_size, patch, timm_kwargs=variant.timm_kwargs, normalization=normalization)


def pretrain_toy(method: str, variant: Variant, normalization: str, shards: list[str], cfg: PretrainCfg,
                 spec: DatasetSpec) -> dict[str, torch.Tensor]:
    """Train a toy encoder with `method` on `spec`'s training shards; return the timm model's state dict (native
    shapes)."""
    seed_everything(cfg.seed)
    encoder = build_toy(variant, normalization)
    if method == "random":
        return encoder.model.state_dict()
    if method not in OBJECTIVES:
        raise ValueError(f"unknown toy pretraining {method!r}; allowed: {list(TOY_PRETRAININGS)}")
    objective = OBJECTIVES[method](encoder, cfg, spec)
    generator = torch.Generator().manual_seed(cfg.seed)
    stream = TrainStream(shards, TrainAugment(variant.toy_input[0]), seed=cfg.seed)
    batches = iter(DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.workers))
    trained = [p for p in objective.parameters() if p.requires_grad]  # not a DINO teacher's
    optimizer = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    objective.train()
    for step in range(1, cfg.steps + 1):
        images, labels = next(batches)
        loss = objective(images.float() / 255, labels.long(), generator)
        check_finite(loss.item(), f"optimizer step {step} of toy pretraining ({method})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        objective.after_step(step)
        schedule.step()
    return objective.released_weights()
