"""The rank stage's paired bootstrap at paper size: seconds for the whole analysis (target: at most 60 s on 2 cores).

What `pipeline.stages.rank` runs between reading the per-image counts and writing its outputs: `bootstrap_scores`
(every run's mIoU on every resample of the images and seeds), `with_intervals` (mIoU and rank intervals),
`tau_intervals` (tau against the base setup per resample) and `flip_records` (pairwise order flips). Default study:
2,000 validation images x 150 classes x 10 models x 8 settings x 1 seed x 1,000 resamples, every setting evaluated
on the same dataset (the most work: one image-weight matrix per dataset is drawn once, the run sums are what
costs). Counts are random, ADE20K-like: about 10 classes per image, unions up to ~10^5 pixels.

    python bench/rank_bootstrap.py                  # this CPU (numpy's BLAS uses every core)
    python bench/rank_bootstrap.py --seeds 3        # three seeds per run: 3x the run sums
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch

from common import add_common_args, measure, report
from pipeline.analysis.bootstrap import bootstrap_scores, flip_records, tau_intervals, with_intervals
from pipeline.analysis.ranking import compare_settings, summarize
from pipeline.evaluation.image_counts import ImageCounts


def make_study(args) -> tuple[dict, pd.DataFrame]:
    """Random per-image counts for every run, and the results frame their mIoUs make."""
    rng = np.random.default_rng(0)
    keys = np.array([f"img{i:05d}" for i in range(args.images)])
    present = rng.random((args.images, args.classes)) < 10 / args.classes
    runs, rows = {}, []
    for m in range(args.models):
        for s in range(args.settings):
            for seed in range(args.seeds):
                union = rng.integers(1, 100_000, size=present.shape) * present
                intersection = rng.binomial(union, rng.uniform(0.2 + 0.05 * m, 0.5 + 0.05 * m, size=(args.images, 1)))
                counts = ImageCounts(keys, intersection, union)
                runs[f"model{m}", f"setting{s}", seed] = counts
                rows.append({"model": f"model{m}", "setting": f"setting{s}", "seed": seed, "miou": counts.miou(),
                             "train_seconds": 1.0, "trainable_params": 1})
    return runs, pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--classes", type=int, default=150)
    p.add_argument("--models", type=int, default=10)
    p.add_argument("--settings", type=int, default=8)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--target-s", type=float, default=60.0, help="the issue's budget for the whole bootstrap")
    add_common_args(p, warmup=0, iters=1, device=False)
    args = p.parse_args()
    runs, results = make_study(args)
    eval_datasets = {f"setting{s}": "ade20k" for s in range(args.settings)}

    def bootstrap() -> None:
        scores = bootstrap_scores(runs, eval_datasets, list(range(args.seeds)), args.resamples, seed=0)
        summary = with_intervals(summarize(results), scores, 0.95)
        tau_intervals(compare_settings(summary, "setting0"), scores, "setting0", "b", 0.95)
        flip_records(summary, scores)

    seconds = measure(bootstrap, args.warmup, args.iters, torch.device("cpu"))
    size = (f"{args.images:,} images x {args.classes} classes x {args.models} models x {args.settings} settings x "
            f"{args.seeds} seed(s) x {args.resamples:,} resamples")
    print(f"rank bootstrap, {size}: {seconds:.1f} s (target <= {args.target_s:.0f} s: "
          f"{'met' if seconds <= args.target_s else 'MISSED'})")
    report(f"rank_bootstrap[{size}]", args, torch.device("cpu"), items=args.resamples, unit="resamples",
           seconds=seconds, extra={"seconds": seconds, "target_s": args.target_s})


if __name__ == "__main__":
    main()
