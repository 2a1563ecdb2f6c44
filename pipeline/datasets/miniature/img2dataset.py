"""What `img2dataset --output_format webdataset` writes for the miniature's captioned images, one row per caption
(as the authors downloaded COCO Captions, reference notes §4): the layout web-scale alignment reads.

`{00000..}.tar` shards of `rows_per_shard` rows; keys `<shard:05d><row:04d>`; each sample `jpg` (the image at its
own size: img2dataset's --resize_mode no), `txt` (the caption) and `json` (img2dataset's fields); `<shard>_stats.json`
beside each shard. Deterministic; `generate` writes it when its counts name `img2dataset` (params.yaml's do not:
the miniature aligns on COCO Captions), and tests and benchmarks call `write_img2dataset` directly.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.datasets.miniature.coco import captioned_images
from pipeline.datasets.miniature.formats import encode_jpeg, write_tar


def _rows(seed: int, images: int):
    """(url, width, height, jpeg, caption) per caption of the first `images` miniature caption images."""
    for image_id, canvas, image, captions in captioned_images(seed, "train", list(range(1, images + 1))):
        jpeg = encode_jpeg(image)
        url = f"http://images.cocodataset.org/train2017/{image_id:012d}.jpg"
        for caption in captions:
            yield url, canvas.w, canvas.h, jpeg, caption


def _sample(key: str, row) -> dict[str, bytes]:
    url, width, height, jpeg, caption = row
    meta = {"url": url, "caption": caption, "key": key, "status": "success", "error_message": None,
            "width": width, "height": height, "original_width": width, "original_height": height}
    return {f"{key}.jpg": jpeg, f"{key}.txt": caption.encode(), f"{key}.json": json.dumps(meta).encode()}


def write_img2dataset(out: Path, seed: int, images: int, rows_per_shard: int) -> list[Path]:
    """The shards and their stats files in `out`; returns the shards' paths."""
    out.mkdir(parents=True, exist_ok=True)
    rows = list(_rows(seed, images))
    paths = []
    for shard, start in enumerate(range(0, len(rows), rows_per_shard)):
        part = rows[start:start + rows_per_shard]
        files = {}
        for index, row in enumerate(part):
            files.update(_sample(f"{shard:05d}{index:04d}", row))
        paths.append(out / f"{shard:05d}.tar")
        write_tar(paths[-1], files)
        stats = {"count": len(part), "successes": len(part), "failed_to_download": 0, "failed_to_resize": 0,
                 "status_dict": {"success": len(part)}}
        (out / f"{shard:05d}_stats.json").write_text(json.dumps(stats, indent=4))
    return paths


ROWS_PER_SHARD = 64  # img2dataset's --number_sample_per_shard (its default, 10,000, would make one miniature shard)


def write_img2dataset_split(out: Path, seed: int, counts: dict[str, int]) -> None:
    """`generate`'s writer: the first counts["train"] captioned images, as img2dataset shards."""
    write_img2dataset(out, seed, counts["train"], ROWS_PER_SHARD)
