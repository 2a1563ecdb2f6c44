"""Data pipeline speed alone: decode + training augmentation, images/s per CPU core, and through a DataLoader.

Samples are built in memory as the shards hold them ({"jpg": JPEG bytes, "label.png": PNG bytes}): ADE20K-like
512 x 683 smooth images with noise (JPEG quality 90, ~ADE20K file sizes) and blocky labels of 12 classes
with some ignore pixels. Per core: one process, one torch thread, shards.decode_sample then TrainAugment
(crop 512, scale 0.5-2.0), as each DataLoader worker does. With `--workers N ...`, the same samples written
as WebDataset shards are read through the training loader's path (TrainStream -> DataLoader, micro-batch 16)
with N workers each: total images/s and per worker. The GPU needs effective batch x steps/s crops/s from it
(e.g. 400 crops/s for the fine-tune target). Hue jitter alone (drawn for half the images) is timed too: the
project's `adjust_hue` against torchvision's, which it equals bit for bit. The alignment's image path is measured
too: a COCO-like 512 x 512 JPEG decoded, then open_clip's random resized crop to 224 (align) or the cached full view
(what the loader still does per sample when align.feature_cache skips the tower: 8,000 img/s needs that many
decodes).

    python bench/data_pipeline.py --workers 2                          # this CPU
    python bench/data_pipeline.py --workers 4 8 16 --iters 500         # a GPU host
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.io import ImageReadMode, decode_image

from common import add_common_args, measure, report
from pipeline.datasets.augment import TrainAugment, adjust_hue
from pipeline.datasets.caption_augment import full_view, random_resized_crop
from pipeline.datasets.shards import TrainStream, decode_sample

NUM_CLASSES, IGNORE = 150, 255


def make_samples(count: int, height: int, width: int, seed: int = 0) -> list[dict]:
    """`count` shard-style samples: smooth random JPEG images and blocky PNG labels."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(count):
        low = torch.randint(256, (1, 3, 12, 16), generator=g).float()
        image = F.interpolate(low, size=(height, width), mode="bicubic", align_corners=False)[0]
        image = (image + 12 * torch.randn(image.shape, generator=g)).clamp(0, 255).to(torch.uint8)
        palette = torch.cat([torch.randperm(NUM_CLASSES, generator=g)[:12], torch.tensor([IGNORE])])
        cells = palette[torch.randint(len(palette), (1, 1, 8, 8), generator=g)].float()
        label = F.interpolate(cells, size=(height, width), mode="nearest")[0, 0].to(torch.uint8)
        jpg, png = io.BytesIO(), io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(jpg, "JPEG", quality=90)
        Image.fromarray(label.numpy()).save(png, "PNG")
        samples.append({"__key__": f"sample{i:06d}", "jpg": jpg.getvalue(), "label.png": png.getvalue()})
    return samples


def write_shards(samples: list[dict], folder: Path, shards: int) -> list[str]:
    paths = [str(folder / f"train-{i:06d}.tar") for i in range(shards)]
    for i, path in enumerate(paths):
        with wds.TarWriter(path, mtime=0) as writer:
            for sample in samples[i::shards]:
                writer.write(sample)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=683)
    p.add_argument("--samples", type=int, default=64, help="distinct encoded samples")
    p.add_argument("--workers", type=int, nargs="*", default=[], help="DataLoader worker counts to measure")
    p.add_argument("--batch", type=int, default=16, help="DataLoader batch (the micro-batch)")
    p.add_argument("--batches", type=int, default=20, help="timed DataLoader batches per worker count")
    p.add_argument("--align-size", type=int, default=224, help="alignment view size (COCO images are 512 x 512)")
    add_common_args(p, warmup=5, iters=100, device=False)
    args = p.parse_args()
    device = torch.device("cpu")
    samples = make_samples(args.samples, args.height, args.width)
    jpeg_kib = np.mean([len(s["jpg"]) for s in samples]) / 1024
    augment = TrainAugment(args.crop, (0.5, 2.0))

    torch.set_num_threads(1)
    g, index = torch.Generator().manual_seed(0), 0

    def one_sample() -> None:
        nonlocal index
        _, image, label = decode_sample(samples[index % len(samples)])
        index += 1
        image, label = augment(image, label, g)
        if image.shape[-2:] != (args.crop, args.crop):
            raise RuntimeError(f"augmentation returned {tuple(image.shape)}")

    decode_only = measure(lambda: decode_sample(samples[0]), args.warmup, args.iters, device)
    seconds = measure(one_sample, args.warmup, args.iters, device)
    report(f"data_pipeline[decode+augment, crop {args.crop}, {args.height}x{args.width}, 1 core]", args, device,
           items=1, unit="images", seconds=seconds,
           extra={"decode_only_images_per_s": 1 / decode_only, "jpeg_kib": float(jpeg_kib)})

    image = decode_sample(samples[0])[1]
    torchvision_hue = measure(lambda: TF.adjust_hue(image, 0.03), args.warmup, args.iters, device)
    report(f"data_pipeline[hue jitter, {args.height}x{args.width}, 1 core]", args, device, items=1, unit="images",
           seconds=measure(lambda: adjust_hue(image, 0.03), args.warmup, args.iters, device),
           extra={"torchvision_images_per_s": 1 / torchvision_hue})

    captions = [s["jpg"] for s in make_samples(min(args.samples, 16), 512, 512, seed=1)]
    for view, name in ((lambda im: random_resized_crop(im, args.align_size, (0.9, 1.0), g), "random resized crop"),
                       (lambda im: full_view(im, args.align_size), "full view, cached")):
        def caption_image(view=view) -> None:
            nonlocal index
            data = captions[index % len(captions)]
            index += 1
            view(decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB))

        seconds = measure(caption_image, args.warmup, args.iters, device)
        report(f"data_pipeline[align image: decode 512x512 + {name} {args.align_size}, 1 core]", args, device,
               items=1, unit="images", seconds=seconds)

    with tempfile.TemporaryDirectory() as tmp:
        shards = write_shards(samples, Path(tmp), 8)
        for workers in args.workers:
            stream = TrainStream(shards, augment, seed=0)
            loader = DataLoader(stream, batch_size=args.batch, num_workers=workers, persistent_workers=workers > 0)
            batches = iter(loader)
            for _ in range(max(2 * workers, 2)):  # worker start-up and one batch in flight per worker
                next(batches)
            start = time.perf_counter()
            for _ in range(args.batches):
                images, labels = next(batches)
            seconds = (time.perf_counter() - start) / args.batches
            if images.shape != (args.batch, 3, args.crop, args.crop):
                raise RuntimeError(f"loader returned {tuple(images.shape)}")
            report(f"data_pipeline[TrainStream + DataLoader, {workers} workers, batch {args.batch}]", args, device,
                   items=args.batch, unit="images", seconds=seconds,
                   extra={"workers": workers, "images_per_s_per_worker": args.batch / seconds / max(workers, 1)})
            del batches, loader


if __name__ == "__main__":
    main()
