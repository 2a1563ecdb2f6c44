"""prepare@<dataset>: read the official layout, map labels, validate, write WebDataset shards + manifest."""
from __future__ import annotations

import time

from pipeline import paths
from pipeline.atomic import check_writable
from pipeline.datasets.shards import prepare_dataset
from pipeline.errors import ConfigError
from pipeline.stages.common import main, parser


def run(args, params) -> None:
    if args.dataset not in params.datasets:
        raise ConfigError(f"--dataset: unknown value {args.dataset!r}; allowed (datasets in params.yaml): "
                          f"{list(params.datasets)}")
    check_writable(folders=[paths.shards(args.dataset)])
    start = time.perf_counter()
    manifest = prepare_dataset(
        args.dataset,
        paths.raw_dataset(params.data_root, args.dataset),
        paths.shards(args.dataset),
        shard_size=params.prepare.shard_size,
        workers=params.prepare.workers,
    )
    seconds = time.perf_counter() - start
    counts = {split: info["count"] for split, info in manifest["splits"].items()}
    total = sum(counts.values())
    print(f"{args.dataset}: {counts} -> {paths.shards(args.dataset)} ({total / seconds:.0f} images/s)")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--dataset", required=True)
    main(run, p.parse_args())
