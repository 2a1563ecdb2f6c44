"""Evaluation speed: images/s of the ADE20K sliding-window protocol and the time it implies for 2,000 images.

Per image, what pipeline.training.finetune.evaluate does: the uint8 image to the device, predict() (resize to
short side = crop, ceil(long / crop) crop windows spread by window_starts, one batched forward of
Segmenter.scores under autocast, window averaging, resize back, argmax), the prediction back to the host and
the confusion-matrix update. Images are random uint8 of one ADE20K-like size (default 512 x 683, 4:3: two
windows per image); random weights. Defaults: ViT-B/16 linear, crop 512.

    python bench/sliding_window_eval.py --compile                        # GPU
    python bench/sliding_window_eval.py --decoder mask2former --compile  # GPU, Mask2Former
    python bench/sliding_window_eval.py --iters 4 --warmup 1             # CPU
"""
from __future__ import annotations

import argparse

import torch

from common import (add_common_args, add_model_args, add_segmenter_args, count_flops, measure, random_segmenter,
                    report, reset_peak_memory, setup)
from pipeline.evaluation.miou import ConfusionMatrix
from pipeline.evaluation.sliding_window import predict, resize_short_side, window_starts
from pipeline.training.precision import autocast, resolve_precision

NUM_CLASSES, IGNORE = 150, 255


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_segmenter_args(p)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=683)
    p.add_argument("--images", type=int, default=8, help="distinct images cycled through")
    p.add_argument("--protocol-images", type=int, default=2000, help="validation set size to extrapolate to")
    add_model_args(p)
    add_common_args(p, warmup=5, iters=50)
    args = p.parse_args()
    device = setup(args)
    precision = resolve_precision(args.precision, device)
    model, _ = random_segmenter(args, NUM_CLASSES, device)
    model.eval()
    scores = torch.compile(model.scores) if args.compile else model.scores
    g = torch.Generator().manual_seed(0)
    images = torch.randint(256, (args.images, 3, args.height, args.width), dtype=torch.uint8, generator=g)
    labels = torch.randint(NUM_CLASSES, (args.images, args.height, args.width), dtype=torch.uint8, generator=g)
    confusion = ConfusionMatrix(NUM_CLASSES, IGNORE)
    windows = len(window_starts(max(resize_short_side(images[0], args.crop).shape[-2:]), args.crop))
    index = 0

    def step(net) -> None:
        nonlocal index
        image, label = images[index % args.images], labels[index % args.images]
        index += 1

        def forward(x: torch.Tensor) -> torch.Tensor:
            with autocast(precision, device):
                return net(x).float()

        with torch.no_grad():
            prediction = predict(forward, image.to(device), args.crop, NUM_CLASSES)
        confusion.update(prediction.cpu(), label.long())

    flops = count_flops(lambda: step(model.scores), device)
    reset_peak_memory(device)
    seconds = measure(lambda: step(scores), args.warmup, args.iters, device)
    report(f"sliding_window_eval[{args.model}, crop {args.crop}, {args.decoder}, {args.height}x{args.width}, "
           f"{precision}{', compiled' if args.compile else ''}]", args, device,
           items=1, unit="images", seconds=seconds, flops=flops,
           extra={"windows_per_image": windows, "precision": precision,
                  f"seconds_for_{args.protocol_images}_images": seconds * args.protocol_images})


if __name__ == "__main__":
    main()
