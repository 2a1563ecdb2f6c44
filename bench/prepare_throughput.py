"""prepare@<dataset> throughput: images/s against dataset size and worker count.

Writes a miniature dataset of N images per size, prepares it with each worker count and prints
images/s. Constant images/s across sizes shows preparation is linear in N; the worker columns
show how it scales with cores.

    python bench/prepare_throughput.py --dataset ade20k --sizes 250 1000 --workers 1 2
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from pipeline.datasets.miniature import generate
from pipeline.datasets.shards import prepare_dataset
from pipeline.datasets.specs import get_spec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ade20k")
    p.add_argument("--sizes", type=int, nargs="+", default=[250, 1000])
    p.add_argument("--workers", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    args = p.parse_args()
    splits = get_spec(args.dataset).splits
    print(f"dataset {args.dataset}, {os.cpu_count()} cores")
    print("images  " + "  ".join(f"{w:>2} worker(s) img/s" for w in args.workers))
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            raw = Path(tmp) / f"raw{size}"
            generate(raw, 0, {args.dataset: {split: size // len(splits) for split in splits}})
            rates = []
            for workers in args.workers:
                start = time.perf_counter()
                manifest = prepare_dataset(args.dataset, raw / args.dataset, Path(tmp) / f"shards{size}-{workers}",
                                           shard_size=1000, workers=workers)
                count = sum(s["count"] for s in manifest["splits"].values())
                rates.append(count / (time.perf_counter() - start))
            print(f"{count:>6}  " + "  ".join(f"{r:>19.0f}" for r in rates))


if __name__ == "__main__":
    main()
