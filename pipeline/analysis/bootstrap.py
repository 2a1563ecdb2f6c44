"""Paired bootstrap of the study: intervals for every mIoU, rank and Kendall's tau, and order-flip probabilities.

The resampling scheme. Resample b (of B) draws, with replacement,

- the validation images of each evaluation dataset d, as weights W_d[b, i] (how often image i is drawn). Every run
  evaluated on d (every model, seed and setting) uses the same W_d, so the comparisons are paired: an image that is
  hard for all models moves all of them together and cancels out of their differences, and a setting evaluated on
  the base setup's dataset is paired with the base too, which tightens its tau. Settings evaluated elsewhere
  (pascal_voc, cityscapes) are resampled independently of the base. Images are taken in key order and W_d comes
  from a generator seeded with (seed, d), so the draw depends neither on the order the runs listed their images
  in nor on which other datasets the study has;
- the seeds, where there are several, as weights V[b, s], shared by all runs as well: finetune@ seeds the
  training-data order and the decoder's initialisation with the seed, so seed s is a unit common to all runs,
  like an image.

A run's score in resample b is its dataset-level mIoU on the drawn images (the summed per-image counts, with the
headline's rule: classes with union > 0), and a model's score in a setting is the V-weighted mean over its seeds,
rounded like the headline (`MIOU_DECIMALS`). Each resample ranks the models of every setting and takes tau
against the base setting's resampled scores. Intervals are percentiles of the B values (numpy's inverted-CDF
quantile, so an end is a value a resample took: a whole rank, a tau a ranking can have). The intervals reflect
the choice of validation images and of seeds, not other training randomness.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.analysis.ranking import MIOU_DECIMALS
from pipeline.errors import CountsError
from pipeline.evaluation import image_counts
from pipeline.evaluation.image_counts import ImageCounts, mean_iou


def load_counts(counts_dir: Path, results: pd.DataFrame, eval_datasets: dict[str, str]) -> dict[tuple, ImageCounts]:
    """(model, setting, seed) -> the run's counts on its setting's evaluation dataset, rows in key order.

    Checked against `results` (the runs' metrics): a run's counts must give exactly its headline mIoU, and all runs
    of a dataset must hold the same images; errors name the file.
    """
    runs, reference = {}, {}
    for row in results.itertuples():
        name, dataset = f"{row.model}-{row.setting}-{row.seed}", eval_datasets[row.setting]
        path = Path(counts_dir) / f"{name}.npz"
        try:
            by_dataset = image_counts.load(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: missing; run finetune@{name} first") from None
        if dataset not in by_dataset:
            raise CountsError(f"{path}: no counts of {dataset!r} (holds {sorted(by_dataset)}); re-run finetune@{name}")
        counts = by_dataset[dataset].sorted()
        if counts.miou() != row.miou:
            raise CountsError(f"{path}: its counts give mIoU {counts.miou()!r}, the run's metrics {row.miou!r}; "
                              f"the two are from different runs, re-run finetune@{name}")
        first = reference.setdefault(dataset, (path, counts))
        if not np.array_equal(counts.keys, first[1].keys) or counts.union.shape[1] != first[1].union.shape[1]:
            raise CountsError(f"{path}: its {len(counts.keys)} images x {counts.union.shape[1]} classes of "
                              f"{dataset!r} are not those of {first[0]}")
        runs[row.model, row.setting, row.seed] = counts
    return runs


def resample_weights(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """resamples x n float64: how often each of n items is drawn in each of `resamples` draws of n with replacement."""
    draws = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def generator(seed: int, name: str) -> np.random.Generator:
    """A generator of its own for each dataset (and "seeds"), fixed by the bootstrap seed and the name alone."""
    return np.random.default_rng([seed, *name.encode()])


def resampled_miou(counts: ImageCounts, weights: np.ndarray) -> np.ndarray:
    """B: the run's dataset-level mIoU on each resample of its images (`weights`: B x N)."""
    k = counts.union.shape[1]
    # Float64 matmul of integer counts is exact (every sum stays far below 2**53) and runs on BLAS.
    sums = weights @ np.concatenate([counts.intersection, counts.union], axis=1).astype(np.float64)
    return mean_iou(sums[:, :k], sums[:, k:])


def bootstrap_scores(runs: dict[tuple, ImageCounts], eval_datasets: dict[str, str], seeds, resamples: int,
                     seed: int) -> dict[str, pd.DataFrame]:
    """setting -> B x models frame: each model's score (mean mIoU over `seeds`) in every resample.

    `runs` maps (model, setting, seed) to counts in key order, the same images for every run of a dataset
    (`load_counts`)."""
    seed_weights = resample_weights(generator(seed, "seeds"), len(seeds), resamples)
    image_weights, scores = {}, {}
    for setting in dict.fromkeys(setting for _, setting, _ in runs):
        models = list(dict.fromkeys(m for m, s, _ in runs if s == setting))
        dataset = eval_datasets[setting]
        if dataset not in image_weights:
            n = len(runs[models[0], setting, seeds[0]].keys)
            image_weights[dataset] = resample_weights(generator(seed, dataset), n, resamples)
        mious = {m: np.stack([resampled_miou(runs[m, setting, s], image_weights[dataset]) for s in seeds], axis=1)
                 for m in models}
        scores[setting] = pd.DataFrame({m: ((x * seed_weights).sum(1) / len(seeds)).round(MIOU_DECIMALS)
                                        for m, x in mious.items()})
    return scores


def interval(samples: np.ndarray, confidence: float) -> np.ndarray:
    """The percentile interval [low, high] of the resamples (axis 0)."""
    return np.quantile(samples, [(1 - confidence) / 2, (1 + confidence) / 2], axis=0, method="inverted_cdf")


def resampled_ranks(scores: np.ndarray) -> np.ndarray:
    """B x M ranks (1 = best, ties share the best rank) of B x M scores: the headline's rule per resample."""
    return 1 + (scores[:, None, :] > scores[:, :, None]).sum(-1)


def kendall_tau_rows(x: np.ndarray, y: np.ndarray, variant: str = "b") -> np.ndarray:
    """Kendall's tau of each row of B x M `x` with the same row of `y`: scipy's kendalltau (tau-b or tau-c)
    vectorised over rows; NaN where a row is constant."""
    i, j = np.triu_indices(x.shape[1], k=1)
    sx, sy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])
    if variant == "b":
        scale = np.sqrt((sx != 0).sum(1) * (sy != 0).sum(1))
    else:
        distinct = np.minimum(_distinct(x), _distinct(y))
        scale = x.shape[1] ** 2 * (distinct - 1) / distinct / 2
    return np.divide((sx * sy).sum(1), scale, out=np.full(len(x), np.nan), where=scale > 0)


def _distinct(x: np.ndarray) -> np.ndarray:
    return 1 + (np.diff(np.sort(x, axis=1), axis=1) != 0).sum(1)


def with_intervals(summary: pd.DataFrame, scores: dict[str, pd.DataFrame], confidence: float) -> pd.DataFrame:
    """`summary` plus the interval of every model's mIoU and rank in its setting."""
    parts = []
    for setting, group in summary.groupby("setting", sort=False):
        frame = scores[setting][list(group.model)].to_numpy()
        miou, rank = interval(frame, confidence), interval(resampled_ranks(frame), confidence).astype(int)
        parts.append(group.assign(miou_ci_low=miou[0], miou_ci_high=miou[1], rank_ci_low=rank[0],
                                  rank_ci_high=rank[1]))
    return pd.concat(parts).loc[summary.index]


def tau_intervals(comparison: pd.DataFrame, scores: dict[str, pd.DataFrame], base_setting: str, variant: str,
                  confidence: float) -> pd.DataFrame:
    """`comparison` plus, per setting, the interval of tau against the base setting and P(tau < 1), over the
    models both hold (as `compare_settings`) and the resamples whose tau is defined."""
    base = scores[base_setting]
    columns = {"tau_ci_low": [], "tau_ci_high": [], "p_tau_below_1": []}
    for setting in comparison.setting:
        common = [m for m in base.columns if m in scores[setting].columns]
        taus = kendall_tau_rows(base[common].to_numpy(), scores[setting][common].to_numpy(), variant)
        taus = taus[np.isfinite(taus)]
        low, high = interval(taus, confidence) if len(taus) else (np.nan, np.nan)
        for name, value in zip(columns, [low, high, (taus < 1).mean() if len(taus) else np.nan]):
            columns[name].append(value)
    return comparison.assign(**columns)


def flip_records(summary: pd.DataFrame, scores: dict[str, pd.DataFrame]) -> list[dict]:
    """Per setting and pair of models (`model_a` ranked above or tied with `model_b`): the probability that a
    resample orders them otherwise (reversed, or tied where they were not, or untied where they were)."""
    records = []
    for setting, group in summary.groupby("setting", sort=False):
        group = group.sort_values("rank", kind="stable")
        frame = scores[setting]
        for i, a in enumerate(group.itertuples()):
            for b in group.iloc[i + 1:].itertuples():
                observed = np.sign(a.miou - b.miou)
                resampled = np.sign(frame[a.model].to_numpy() - frame[b.model].to_numpy())
                records.append({"setting": setting, "model_a": a.model, "model_b": b.model,
                                "miou_diff": float(a.miou - b.miou), "p_flip": float((resampled != observed).mean())})
    return records
