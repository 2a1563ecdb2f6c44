"""generate: write the miniature's synthetic datasets in the official on-disk layouts."""
from __future__ import annotations

from pipeline import paths
from pipeline.datasets.miniature import generate
from pipeline.stages.common import main, parser


def run(args, params) -> None:
    summary = generate(paths.MINIATURE, seed=params.generate["seed"], counts=params.generate["counts"])
    print(f"miniature written to {paths.MINIATURE}: {summary}")


if __name__ == "__main__":
    main(run, parser(__doc__).parse_args())
