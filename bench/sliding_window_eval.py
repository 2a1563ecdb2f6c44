"""Evaluation speed: images/s of the ADE20K sliding-window protocol and the time it implies for 2,000 images.

pipeline.training.finetune.evaluate itself on --images decoded images: each uint8 image to the device, resized to
short side = crop and cut into ceil(long / crop) crop windows spread by window_starts; the windows of consecutive
images through Segmenter.scores under autocast --batch at a time; per image window averaging, resize back, argmax
and the confusion-matrix update on the device, read once at the end. Images are random uint8 of one ADE20K-like
size (default 512 x 683, 4:3: two windows per image); random weights. Defaults: ViT-B/16 linear, crop 512.

    python bench/sliding_window_eval.py --compile                        # GPU
    python bench/sliding_window_eval.py --decoder mask2former --compile  # GPU, Mask2Former
    python bench/sliding_window_eval.py --images 4 --iters 2 --threads 1 # CPU
"""
from __future__ import annotations

import argparse

import torch

from common import (add_common_args, add_model_args, add_segmenter_args, count_flops, measure, random_segmenter,
                    report, reset_peak_memory, setup)
from pipeline.evaluation.sliding_window import resize_short_side, window_starts
from pipeline.training.finetune import evaluate
from pipeline.training.precision import resolve_precision

NUM_CLASSES, IGNORE = 150, 255


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_segmenter_args(p)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=683)
    p.add_argument("--images", type=int, default=8, help="images per evaluation (one timed iteration)")
    p.add_argument("--batch", type=int, default=16, help="windows per forward (finetune.eval_batch_size)")
    p.add_argument("--protocol-images", type=int, default=2000, help="validation set size to extrapolate to")
    add_model_args(p)
    add_common_args(p, warmup=1, iters=5)
    args = p.parse_args()
    device = setup(args)
    precision = resolve_precision(args.precision, device)
    model, _ = random_segmenter(args, NUM_CLASSES, device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(256, (args.images, 3, args.height, args.width), dtype=torch.uint8, generator=g)
    labels = torch.randint(NUM_CLASSES, (args.images, args.height, args.width), dtype=torch.uint8, generator=g)
    samples = [(f"image{i}", image, label) for i, (image, label) in enumerate(zip(images, labels))]
    windows = len(window_starts(max(resize_short_side(images[0], args.crop).shape[-2:]), args.crop))

    def step() -> None:
        confusion, _, _ = evaluate(model, samples, args.crop, NUM_CLASSES, IGNORE, precision, device, show=False,
                                   batch_size=args.batch)
        confusion.miou()  # the one read of the device's counts

    flops = count_flops(step, device)
    if args.compile:
        model.scores = torch.compile(model.scores)
    reset_peak_memory(device)
    seconds = measure(step, args.warmup, args.iters, device)
    report(f"sliding_window_eval[{args.model}, crop {args.crop}, {args.decoder}, {args.height}x{args.width}, "
           f"batch {args.batch}, {precision}{', compiled' if args.compile else ''}]", args, device,
           items=args.images, unit="images", seconds=seconds, flops=flops,
           extra={"windows_per_image": windows, "precision": precision,
                  f"seconds_for_{args.protocol_images}_images": seconds / args.images * args.protocol_images})


if __name__ == "__main__":
    main()
