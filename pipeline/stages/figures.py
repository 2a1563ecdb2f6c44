"""figures: what a researcher looks at beyond the tables, drawn from what finetune@ saved (per_image/previews/):

- plots/runs/<run>.png: per run, a strip of qualitative predictions (image, ground truth, prediction in the
  dataset's palette) of the first `finetune.preview_images` validation images by key (DVC-cached: at paper scale
  the strips of 240 runs are too large for git);
- plots/per_class/iou.png: per-class IoU bars per model in the base setting (rank.base_setting), mean over seeds;
- plots/per_class/confusion_<model>.png: each model's confusion matrix in the base setting, seeds summed.

A stage of its own, so that redrawing a figure never re-runs a fine-tuning.
"""
from __future__ import annotations

import warnings

import numpy as np

from pipeline import paths
from pipeline.analysis import run_figures
from pipeline.evaluation import previews
from pipeline.stages.common import main, parser


def load(run: str) -> previews.RunEvaluation:
    path = paths.finetune_previews(run)
    try:
        return previews.load(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; run finetune@{run} first") from None


def run(args, params) -> None:
    base = params.rank.base_setting
    base_runs: dict[str, list[previews.RunEvaluation]] = {}
    for model in params.models:
        for setting in params.settings:
            for seed in params.seeds:
                name = f"{model}-{setting}-{seed}"
                evaluation = load(name)
                shown = len(evaluation.previews)
                run_figures.predictions_strip(
                    evaluation, f"finetune@{name}: {evaluation.dataset} validation, first {shown} images by key",
                    paths.RUN_FIGURES / f"{name}.png")
                if setting == base:
                    base_runs.setdefault(model, []).append(previews.RunEvaluation(evaluation.dataset,
                                                                                  evaluation.confusion, ()))
    dataset = next(iter(base_runs.values()))[0].dataset
    ious, mious = {}, {}
    with warnings.catch_warnings():  # a class no seed saw has an all-NaN column: its mean is NaN, as meant
        warnings.simplefilter("ignore", RuntimeWarning)
        for model, runs in base_runs.items():
            per_run = np.vstack([run_figures.class_iou(r.confusion) for r in runs])
            ious[model] = np.nanmean(per_run, axis=0)
            mious[model] = float(np.mean(np.nanmean(per_run, axis=1)))
    seeds = len(params.seeds)
    run_figures.per_class_iou(ious, mious, dataset,
                              f"Per-class IoU, {base} setting ({dataset} validation; mean over {seeds} seed(s))",
                              paths.CLASS_FIGURES / "iou.png")
    for model, runs in base_runs.items():
        run_figures.confusion_matrix(sum(r.confusion for r in runs), dataset,
                                     f"{model}, {base} setting: confusion on {dataset} validation "
                                     f"({seeds} seed(s) summed), rows normalised",
                                     paths.CLASS_FIGURES / f"confusion_{model}.png")
    print(f"written: {paths.RUN_FIGURES}/*.png ({len(params.models) * len(params.settings) * seeds} runs), "
          f"{paths.CLASS_FIGURES}/iou.png, {paths.CLASS_FIGURES}/confusion_*.png")


if __name__ == "__main__":
    main(run, parser(__doc__).parse_args())
