"""finetune@ optimizer-step speed: crops/s, MFU and peak memory of one fine-tuning step, random weights and data.

The step is pipeline.training.finetune.train's inner loop: `accumulation` micro-batches of uint8 crops copied
from (pinned) host memory, [0, 1] floats, autocast forward, the decoder's criterion, backward, the loss summed on
the device and read once, then the AdamW step of build_optimizer (fused on CUDA) and zero_grad. Labels are blocky
maps of 12 classes per crop (ADE20K-like), which matters for Mask2Former's matching. Defaults: the paper's default run
(ViT-B/16, crop 512, linear, effective batch 16 = micro-batch 16 x 1).

    python bench/finetune_step.py --compile                          # GPU, paper default (bf16 on CUDA)
    python bench/finetune_step.py --decoder mask2former --compile    # the Mask2Former step
    python bench/finetune_step.py --model vit_small_patch16_224 --crop 224 --micro-batch 2 --iters 3  # CPU
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import (add_common_args, add_model_args, add_segmenter_args, count_flops, measure, random_segmenter,
                    report, reset_peak_memory, setup)
from pipeline.training.criteria import build_criterion
from pipeline.training.optim import build_optimizer
from pipeline.training.precision import autocast, resolve_precision

NUM_CLASSES, IGNORE = 150, 255  # ADE20K


def blocky_labels(n: int, crop: int, classes_per_crop: int, g: torch.Generator) -> torch.Tensor:
    """n x crop x crop uint8 labels: an 8 x 8 grid of regions, each one of `classes_per_crop` random classes."""
    palette = torch.stack([torch.randperm(NUM_CLASSES, generator=g)[:classes_per_crop] for _ in range(n)])
    cells = palette.gather(1, torch.randint(classes_per_crop, (n, 64), generator=g)).view(n, 1, 8, 8)
    return F.interpolate(cells.float(), size=(crop, crop), mode="nearest")[:, 0].to(torch.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_segmenter_args(p)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--accumulation", type=int, default=1, help="effective batch = micro-batch x accumulation")
    p.add_argument("--freeze-encoder", action="store_true", help="linear probing")
    add_model_args(p)
    add_common_args(p)
    args = p.parse_args()
    device = setup(args)
    precision = resolve_precision(args.precision, device)
    model, m2f = random_segmenter(args, NUM_CLASSES, device)
    model.encoder.set_frozen(args.freeze_encoder)
    model.train()
    criterion = build_criterion(args.decoder, NUM_CLASSES, IGNORE, m2f, device)
    optimizer = build_optimizer(model.encoder, model.decoder, 1e-4, 0.1, 0.05)
    forward = torch.compile(model) if args.compile else model

    g = torch.Generator().manual_seed(0)
    shape = (args.accumulation, args.micro_batch)
    images = torch.randint(256, (*shape, 3, args.crop, args.crop), dtype=torch.uint8, generator=g)
    labels = blocky_labels(args.accumulation * args.micro_batch, args.crop, 12, g).view(*shape, args.crop, args.crop)
    if device.type == "cuda":
        images, labels = images.pin_memory(), labels.pin_memory()

    def step(net) -> float:
        total = torch.zeros((), dtype=torch.float64, device=device)
        for micro_images, micro_labels in zip(images, labels):
            x = micro_images.to(device, non_blocking=True).float().div_(255)
            y = micro_labels.to(device, non_blocking=True).long()
            with autocast(precision, device):
                output = net(x)
            loss, _ = criterion(output, y)
            (loss / args.accumulation).backward()
            total += loss.detach().double() / args.accumulation
        total = total.item()  # train() reads the loss once per optimizer step
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total

    flops = count_flops(lambda: step(model), device)  # eager: FlopCounterMode does not see inside compiled code
    reset_peak_memory(device)
    seconds = measure(lambda: step(forward), args.warmup, args.iters, device)
    report(f"finetune_step[{args.model}, crop {args.crop}, {args.decoder}, {precision}"
           f"{', compiled' if args.compile else ''}]", args, device,
           items=args.micro_batch * args.accumulation, unit="crops", seconds=seconds, flops=flops,
           extra={"effective_batch": args.micro_batch * args.accumulation, "precision": precision})


if __name__ == "__main__":
    main()
