"""`dino`: self-distillation with no labels (Caron et al. 2021) at toy scale.

A student and its EMA teacher (the same toy ViT, each with a DINO head) see multi-crop views of each training crop:
the teacher the global views, the student every view. The student on each view matches the teacher's centred,
sharpened distribution on each *other* global view. The released weights are the teacher backbone's, as DINO's.
Local views are smaller than the input: the position embedding is resampled to their grid, as DINO's
`interpolate_pos_encoding`.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, trunc_normal_
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from pipeline.config import DinoCfg
from pipeline.networks.encoder import Encoder
from pipeline.training.toy_objectives import ToyObjective

COLOUR_JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)  # DINO's, applied with p 0.8


class DinoHead(nn.Module):
    """3-layer MLP (GELU) to a bottleneck, L2-normalised, then prototypes of unit norm: DINO's head with its
    weight-normalised last layer's norm fixed to 1 (norm_last_layer)."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        for layer in self.mlp[::2]:
            trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        self.prototypes = nn.Linear(bottleneck_dim, out_dim, bias=False)  # default init, as DINO's last layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(self.mlp(x), dim=-1), F.normalize(self.prototypes.weight, dim=-1))


def cls_token(encoder: Encoder, images: torch.Tensor) -> torch.Tensor:
    """B x D final-norm CLS token of images of any side that is a multiple of the patch size (a timm ViT with a CLS
    token and no registers, as the toys are)."""
    vit = encoder.model
    x = vit.patch_embed.proj(encoder.normalize(images))
    pos_embed = resample_abs_pos_embed(vit.pos_embed, list(x.shape[-2:]), old_size=list(encoder.grid_size),
                                       num_prefix_tokens=encoder.num_prefix_tokens)
    x = vit.patch_embed.norm(x.flatten(2).transpose(1, 2))
    x = torch.cat([vit.cls_token.expand(len(x), -1, -1), x], dim=1) + pos_embed
    return vit.norm(vit.blocks(vit.norm_pre(x)))[:, 0]


def dino_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor, student_temp: float,
              teacher_temp: float) -> torch.Tensor:
    """Mean over the (teacher view i, student view v != i) pairs of the cross-entropy between the teacher's centred,
    sharpened distribution and the student's. Both lists hold B x K logits per view, the global views first."""
    targets = [F.softmax((logits - center) / teacher_temp, dim=-1) for logits in teacher]
    log_probs = [F.log_softmax(logits / student_temp, dim=-1) for logits in student]
    return torch.stack([-(target * log_prob).sum(-1).mean() for i, target in enumerate(targets)
                        for v, log_prob in enumerate(log_probs) if v != i]).mean()


def view_transform(size: int, scale: tuple[float, float]) -> v2.Compose:
    """DINO's view of an image in [0, 1]: random resized crop, horizontal flip, colour jitter with p 0.8 (bilinear:
    DINO's bicubic on floats would leave [0, 1]; its grayscale, blur and solarisation are left out)."""
    crop = v2.RandomResizedCrop(size, scale=scale, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return v2.Compose([crop, v2.RandomHorizontalFlip(), v2.RandomApply([v2.ColorJitter(**COLOUR_JITTER)], p=0.8)])


class DinoObjective(ToyObjective):
    """`encoder` is the student; `steps` sets the teacher momentum's schedule."""

    global_views = 2

    def __init__(self, encoder: Encoder, cfg: DinoCfg, steps: int):
        super().__init__(encoder)
        self.cfg, self.steps = cfg, steps
        self.head = DinoHead(encoder.embed_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.out_dim)
        self.teacher = copy.deepcopy(encoder).requires_grad_(False)
        self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        self.global_view = view_transform(encoder.model.patch_embed.img_size[0], cfg.global_scale)
        self.local_view = view_transform(cfg.local_size, cfg.local_scale)

    def views(self, images: torch.Tensor, generator: torch.Generator) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(global, local) views, a batch each; every image is transformed on its own, torchvision drawing from the
        global RNG seeded from `generator` (and restored after)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (), generator=generator)))
            global_views = [torch.stack([self.global_view(image) for image in images])
                            for _ in range(self.global_views)]
            local_views = [torch.stack([self.local_view(image) for image in images])
                           for _ in range(self.cfg.local_crops)]
        return global_views, local_views

    def student_logits(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each view's logits; the views (of one size) in one forward."""
        return list(self.head(cls_token(self.encoder, torch.cat(views))).chunk(len(views))) if views else []

    def forward(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        global_views, local_views = self.views(images, generator)
        student = self.student_logits(global_views) + self.student_logits(local_views)
        with torch.no_grad():
            teacher = self.teacher_head(cls_token(self.teacher, torch.cat(global_views)))
        loss = dino_loss(student, list(teacher.chunk(self.global_views)), self.center, self.cfg.student_temp,
                         self.cfg.teacher_temp)
        self.update_center(teacher)
        return loss

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        m = self.cfg.center_momentum
        self.center.mul_(m).add_(teacher.mean(0, keepdim=True), alpha=1 - m)

    def teacher_momentum(self, step: int) -> float:
        """DINO's cosine schedule from teacher_momentum at step 1 towards 1 at the last step."""
        return 1 - (1 - self.cfg.teacher_momentum) * (math.cos(math.pi * (step - 1) / self.steps) + 1) / 2

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """teacher = m * teacher + (1 - m) * student, backbone and head."""
        m = self.teacher_momentum(step)
        student = [*self.encoder.parameters(), *self.head.parameters()]
        teacher = [*self.teacher.parameters(), *self.teacher_head.parameters()]
        for t, s in zip(teacher, student, strict=True):
            t.mul_(m).add_(s, alpha=1 - m)

    def released_weights(self) -> dict[str, torch.Tensor]:
        return self.teacher.model.state_dict()
