"""Zero-shot segmentation of one aligned (tower, text tower) pair on every benchmark, and its ImageNet-1k
zero-shot classification."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

from pipeline.config import ZeroshotCfg
from pipeline.datasets.concept_bank import prompt_names
from pipeline.datasets.shards import split_loader
from pipeline.datasets.specs import VIEWS, benchmark_classes, get_view, has_background
from pipeline.evaluation.image_counts import ImageCounts
from pipeline.evaluation.zeroshot import class_embeddings, evaluate_benchmark, evaluate_classification
from pipeline.networks.encoder import Encoder
from pipeline.networks.text_tower import TextTower, tokenize
from pipeline.networks.tower import normalized_tokens


def tower_functions(tower: Encoder, precision: str, global_token: str = "cls"):
    """(patch_fn, global_fn) over float [0, 1] batches (moved to the tower's device): L2-normalised patch grids
    B x h x w x D and globals B x D."""
    device = next(tower.parameters()).device

    def patch_fn(x: torch.Tensor) -> torch.Tensor:
        return normalized_tokens(tower, x.to(device), precision)[1].unflatten(1, tower.grid_size)

    def global_fn(x: torch.Tensor) -> torch.Tensor:
        return normalized_tokens(tower, x.to(device), precision, global_token)[0]

    return patch_fn, global_fn


def text_classifier(text: TextTower, names: Sequence[str], device: torch.device) -> torch.Tensor:
    """K x D class embeddings of `names` from the 80 OpenAI ImageNet templates (`class_embeddings`)."""
    with torch.no_grad():
        return class_embeddings(lambda t: text.encode(t.to(device)), tokenize, names)


def evaluate_imagenet(tower: Encoder, text: TextTower, shards: Path, image_size: int, batch_size: int, workers: int,
                      precision: str, global_token: str = "cls") -> dict:
    """top1_imagenet, top5_imagenet and images_imagenet of ImageNet-1k val (prepared in `shards`): the tower's
    global token of each image's `image_size` crop against the classifier of open_clip's IMAGENET_CLASSNAMES
    (reference §6). `tower` takes `image_size` inputs."""
    device = next(tower.parameters()).device
    _, global_fn = tower_functions(tower, precision, global_token)
    result = evaluate_classification(split_loader(shards, "val", workers, device), global_fn,
                                     text_classifier(text, IMAGENET_CLASSNAMES, device),
                                     image_size=image_size, batch_size=batch_size)
    return {f"{key}_imagenet": value for key, value in result.items()}


def benchmark_thresholds(cfg: ZeroshotCfg, benchmark: str) -> list[float]:
    """The configured background threshold first, then the sweep's other values."""
    chosen = cfg.background_threshold[benchmark]
    return [chosen] + [t for t in cfg.threshold_sweep if t != chosen]


def evaluate_suite(tower: Encoder, text: TextTower, cfg: ZeroshotCfg, shards_root: Path, precision: str,
                   global_token: str = "cls") -> tuple[dict, dict[str, ImageCounts]]:
    """Flat metrics: miou_<b>, chance_miou_<b> (a uniformly random class per pixel) and dominant_class_top1_<b> per
    benchmark, and the means of both mIoUs over the benchmarks with and without background; for a with-background
    benchmark also
    miou_<b>_thr<t> per swept threshold and miou_<b>_tuned_on_eval (the best of them, chosen on the eval set).
    Also the per-image counts behind each miou_<b>, per benchmark."""
    device = next(tower.parameters()).device
    patch_fn, global_fn = tower_functions(tower, precision, global_token)
    metrics, counts, means = {}, {}, {"with_background": [], "without_background": []}
    for benchmark in cfg.benchmarks:
        classes = benchmark_classes(benchmark)
        with_background = has_background(benchmark)
        names = list(prompt_names(benchmark)[1:] if with_background else prompt_names(benchmark))
        class_emb = text_classifier(text, names, device)
        view = get_view(benchmark) if benchmark in VIEWS else None
        samples = split_loader(Path(shards_root) / (view.base if view else benchmark), "val", cfg.workers, device, view)
        thresholds = benchmark_thresholds(cfg, benchmark) if with_background else []
        result = evaluate_benchmark(samples, patch_fn, global_fn, class_emb, num_classes=len(classes),
                                    with_background=with_background, thresholds=thresholds,
                                    short_side=cfg.short_side, window=cfg.window, stride=cfg.stride,
                                    batch_size=cfg.batch_size, resize=cfg.resize, long_side=cfg.long_side)
        metrics.update(_benchmark_metrics(benchmark, result))
        counts[benchmark] = result["counts"]
        kind = "with_background" if with_background else "without_background"
        means[kind].append((metrics[f"miou_{benchmark}"], metrics[f"chance_miou_{benchmark}"]))
    for kind, values in means.items():
        if values:
            metrics[f"miou_mean_{kind}"] = sum(v for v, _ in values) / len(values)
            metrics[f"chance_miou_mean_{kind}"] = sum(c for _, c in values) / len(values)
    return metrics, counts


def _benchmark_metrics(benchmark: str, result: dict) -> dict:
    configured, *swept = result["miou"]
    metrics = {f"miou_{benchmark}": configured["miou"], f"chance_miou_{benchmark}": result["chance_miou"],
               f"images_{benchmark}": result["images"]}
    if result["dominant_class_top1"] is not None:
        metrics[f"dominant_class_top1_{benchmark}"] = result["dominant_class_top1"]
    if configured["threshold"] is not None:
        for entry in [configured, *swept]:
            metrics[f"miou_{benchmark}_thr{entry['threshold']:g}"] = entry["miou"]
        best = max([configured, *swept], key=lambda e: e["miou"])
        metrics[f"miou_{benchmark}_tuned_on_eval"] = best["miou"]
        metrics[f"threshold_{benchmark}_tuned_on_eval"] = best["threshold"]
    return metrics
