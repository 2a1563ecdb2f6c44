"""align@ optimizer-step speed: images/s, MFU and peak memory of one SimZSS step, random weights and data.

The step mirrors pipeline.training.align.train_step: the frozen tower's L2-normalised CLS and patch tokens
(normalized_tokens, no gradients), the text tower (autocast) forward, simzss_loss (concept weight 0.05),
the finiteness check, backward, AdamW (fused on CUDA, as build_trainer), zero_grad, logit-scale clamp.
`--cached` replaces the tower forward by the library's in-memory FeatureCache, filled before timing and kept
on the device (every lookup a hit): what a step costs once every image has been seen. Captions are random
token ids (SOT, 10-20 tokens, EOT) with 1-4 concepts of 1-3 tokens each, ids from the 277-name bank.
Defaults: the paper's DINOv2-B/14 with 4 registers at 224 px, text tower 512 wide x 12 layers x 8 heads,
context 77, batch 512 (the paper's per-GPU batch).

    python bench/align_step.py --compile              # GPU, full step
    python bench/align_step.py --compile --cached     # GPU, with the feature cache
    python bench/align_step.py --batch 64 --iters 3   # CPU
"""
from __future__ import annotations

import argparse
import math
from types import SimpleNamespace

import torch

from common import add_common_args, add_model_args, count_flops, measure, report, reset_peak_memory, setup
from pipeline.networks.encoder import Encoder
from pipeline.networks.text_tower import AlignedText, TextTower, TextTowerCfg
from pipeline.networks.tower import normalized_tokens
from pipeline.training.feature_cache import FeatureCache
from pipeline.training.precision import autocast, resolve_precision
from pipeline.training.simzss_loss import simzss_loss

SOT, EOT, BANK = 49406, 49407, 277
MAX_CONCEPTS, MAX_CONCEPT_TOKENS = 32, 16


def random_captions(batch: int, context: int, g: torch.Generator):
    """(tokens B x context, concept ids B x 32, spans B x 32 x 16) shaped as the caption shards store them."""
    tokens = torch.zeros(batch, context, dtype=torch.long)
    concepts = torch.full((batch, MAX_CONCEPTS), -1, dtype=torch.long)
    spans = torch.zeros(batch, MAX_CONCEPTS, MAX_CONCEPT_TOKENS, dtype=torch.long)
    for b in range(batch):
        length = int(torch.randint(10, 21, (), generator=g))
        tokens[b, 0], tokens[b, length + 1] = SOT, EOT
        tokens[b, 1:length + 1] = torch.randint(1, SOT, (length,), generator=g)
        position = 1
        for k in range(int(torch.randint(1, 5, (), generator=g))):
            width = int(torch.randint(1, 4, (), generator=g))
            if position + width > length + 1:
                break
            concepts[b, k] = int(torch.randint(BANK, (), generator=g))
            spans[b, k, :width] = torch.arange(position, position + width)
            position += width + 1
    return tokens, concepts, spans


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tower", default="vit_base_patch14_reg4_dinov2", help="timm name (random init)")
    p.add_argument("--patch", type=int, default=14)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--context", type=int, default=77)
    p.add_argument("--concept-weight", type=float, default=0.05, help="0 = LiT (no concept loss)")
    p.add_argument("--cached", action="store_true", help="tower features from the FeatureCache (all hits)")
    add_model_args(p)
    add_common_args(p)
    args = p.parse_args()
    device = setup(args)
    precision = resolve_precision(args.precision, device)
    torch.manual_seed(0)

    tower = Encoder(args.tower, args.image_size, args.patch, normalization="clip").to(device)
    tower.eval().requires_grad_(False)
    model = AlignedText(TextTower(TextTowerCfg(args.width, args.layers, args.heads, args.context), tower.embed_dim),
                        1 / 0.07).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4.8e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2,
                                  fused=device.type == "cuda" or None)
    # normalized_tokens calls tower.tokens, which torch.compile(tower) would leave uncompiled
    tower_fwd = SimpleNamespace(tokens=torch.compile(tower.tokens)) if args.compile else tower
    text_fwd = torch.compile(model.text) if args.compile else model.text

    g = torch.Generator().manual_seed(0)
    images = torch.randint(256, (args.batch, 3, args.image_size, args.image_size), dtype=torch.uint8, generator=g)
    if device.type == "cuda":
        images = images.pin_memory()
    tokens, concepts, spans = (t.to(device) for t in random_captions(args.batch, args.context, g))
    keys = [f"image{i}" for i in range(args.batch)]
    cache = FeatureCache()

    def vision(net, x: torch.Tensor):
        return normalized_tokens(net, x.float().div_(255), precision, "cls")

    def step(tower_net, text_net) -> float:
        x = images.to(device, non_blocking=True)
        if args.cached:
            features = cache.features(keys, x, lambda batch: vision(tower_net, batch))
        else:
            features = vision(tower_net, x)
        with autocast(precision, device):
            text_global, token_emb = text_net(tokens)
        out = simzss_loss(*features, text_global.float(), token_emb.float(), concepts, spans, model.logit_scale.exp(),
                          args.concept_weight, 0.1, 1 / 0.07, "label", "prototype")
        if not torch.isfinite(out.total):
            raise RuntimeError(f"loss is {out.total.item()}")
        out.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.clamp_logit_scale(100.0)
        return out.total.item()

    if args.cached:
        step(tower, model.text)  # fills the cache: from here on every lookup is a hit
        if cache.misses != args.batch:
            raise RuntimeError(f"cache holds {cache.misses} of {args.batch} images")
    flops = count_flops(lambda: step(tower, model.text), device)
    reset_peak_memory(device)
    seconds = measure(lambda: step(tower_fwd, text_fwd), args.warmup, args.iters, device)
    if args.cached and cache.misses != args.batch:
        raise RuntimeError(f"{cache.misses - args.batch} cache misses while timing")
    tokens_per_image = math.prod(tower.grid_size)
    report(f"align_step[{args.tower} {args.image_size}px, text {args.width}x{args.layers}, batch {args.batch}, "
           f"{'cached' if args.cached else 'full'}, {precision}{', compiled' if args.compile else ''}]", args, device,
           items=args.batch, unit="images", seconds=seconds, flops=flops,
           extra={"precision": precision, "patch_tokens": tokens_per_image,
                  "concepts_per_batch": int((concepts >= 0).sum())})


if __name__ == "__main__":
    main()
