"""download@<dataset>: fetch a dataset's official files (or verify those placed by hand) into data/raw/<dataset>."""
from __future__ import annotations

from pipeline import paths
from pipeline.datasets.fetch import fetch
from pipeline.datasets.sources import get_source
from pipeline.stages.common import main, parser


def run(args, params) -> None:
    cfg = params.download
    files = fetch(get_source(args.dataset), paths.raw_dataset(paths.RAW, args.dataset), cfg.cache_dir,
                  mirrors=cfg.mirrors, retries=cfg.retries, backoff_s=cfg.backoff_s, timeout_s=cfg.timeout_s)
    total = sum(f.stat().st_size for f in files)
    print(f"{args.dataset}: {len(files)} file(s), {total / 2**30:.2f} GiB verified in "
          f"{paths.raw_dataset(paths.RAW, args.dataset)}")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--dataset", required=True)
    main(run, p.parse_args())
