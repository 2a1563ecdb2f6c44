"""A synthetic paper-scale study's tracked outputs (10 models x 8 settings x 3 seeds, 11 towers x 2 methods), for
the tests of what reviewers see: every per-run file the stages write under metrics/ and plots/, with the stages'
key sets, then the real rank and report stages on top.

`write_study(root, params, seed)` fills `root` (the current directory is kept); another `seed` changes every
number, as a pull request that changes a base setting does.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pipeline import paths
from pipeline.datasets.specs import get_spec
from pipeline.evaluation import image_counts
from pipeline.evaluation.image_counts import ImageCounts
from pipeline.stages import rank, report

IMAGES = 40  # validation images per dataset (the bootstrap's cost, not the metrics' size, grows with them)


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _counts(rng: np.random.Generator, classes: int, quality: float) -> ImageCounts:
    union = rng.integers(0, 4000, size=(IMAGES, classes)) * (rng.random((IMAGES, classes)) < 0.3)
    intersection = np.floor(union * np.clip(quality + rng.normal(0, 0.15, union.shape), 0, 1)).astype(np.int64)
    keys = np.array([f"val_{i:04d}" for i in range(IMAGES)])
    return ImageCounts(keys, intersection, union.astype(np.int64))


def write_study(root: Path, params, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cwd = Path.cwd()
    os.chdir(root)
    try:
        quality = {m: rng.uniform(0.2, 0.6) for m in params.models}
        for model in params.models:
            for setting in params.settings:
                dataset = params.setup_for(setting).eval_dataset
                classes = get_spec(dataset).classes
                for s in params.seeds:
                    name = f"{model}-{setting}-{s}"
                    counts = _counts(rng, len(classes), quality[model] + rng.normal(0, 0.05))
                    image_counts.save(paths.finetune_counts(name), {dataset: counts})
                    iou = image_counts.class_iou(counts.intersection.sum(0), counts.union.sum(0))
                    train = float(rng.uniform(3000, 40000))
                    _write(paths.finetune_metrics(name), {
                        "miou": counts.miou(), "pixel_accuracy": float(rng.uniform(0.5, 0.9)),
                        "train_seconds": train, "eval_seconds": float(rng.uniform(60, 600)),
                        "crops_per_second": 16 * 40000 / train, "optimizer_steps": 40000,
                        "trainable_params": int(rng.integers(1e6, 3e8)), "eval_images": IMAGES,
                        **{f"iou_{c.replace(' ', '_')}": float(v) for c, v in zip(classes, iou) if np.isfinite(v)}})
                    _write(paths.train_plots(name) / "metrics.json",
                           {"step": 40000, "train": {"loss": float(rng.random()), "lr_decoder": 0.0,
                                                     "lr_encoder": 0.0}})
        for tower in params.towers:
            for method in params.methods:
                name = f"{tower}-{method}"
                zero_shot = {}
                for b in params.zeroshot.benchmarks:
                    zero_shot |= {f"miou_{b}": float(rng.uniform(0.1, 0.5)), f"chance_miou_{b}": 0.01,
                                  f"images_{b}": 500, f"dominant_class_top1_{b}": float(rng.random())}
                    zero_shot |= {f"miou_{b}_thr{t:g}": float(rng.random()) for t in params.zeroshot.threshold_sweep}
                zero_shot |= {"miou_mean_with_background": float(rng.random()),
                              "miou_mean_without_background": float(rng.random()),
                              "eval_seconds": float(rng.uniform(100, 1000))}
                _write(paths.zeroshot_metrics(tower, method), zero_shot)
                _write(paths.align_metrics(tower, method), {
                    "final_loss": float(rng.random()), "final_clip_loss": float(rng.random()),
                    "final_concept_loss": float(rng.random()), "final_logit_scale": float(rng.uniform(10, 100)),
                    "mean_loss": float(rng.random()), "train_seconds": float(rng.uniform(1e4, 1e5)),
                    "samples_per_second": float(rng.uniform(100, 1000)), "optimizer_steps": 977,
                    "trainable_params": 63_000_000, "concept_weight": 0.05})
                _write(paths.align_plots(tower, method) / "metrics.json", {"step": 977, "train": {
                    "loss": float(rng.random())}})
        _write(paths.CONCEPT_STATS, {"captions": 591_753, "images": 118_287,
                                     "fraction_with_concept": float(rng.uniform(0.9, 1.0)),
                                     "concepts_per_caption": float(rng.uniform(1, 3)), "distinct_concepts": 573})
        rank.run(SimpleNamespace(), params)
        report.run(SimpleNamespace(), params)
    finally:
        os.chdir(cwd)
