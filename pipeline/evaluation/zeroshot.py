"""Zero-shot segmentation and classification from text class embeddings (SimZSS, reference §5-6).

Classification (`evaluate_classification`, ImageNet-1k) follows open_clip's zero_shot_eval: the
image's short side is resized to the tower's input size (bicubic) and centre-cropped, its
L2-normalised global embedding f is scored against the normalised class embeddings W as 100·f·W,
and top-1 / top-5 accuracy are reported.

Segmentation follows the MMSegmentation protocol of TCL that the paper uses: the image
is resized as mmcv's `imrescale` does to TCL's scale (2048, 448), i.e. keeping its aspect
ratio, short side `short_side` unless the long side would exceed `long_side`, bilinear
without antialiasing (`resize="mmseg"`, the default). It is scored by a `window` x
`window` sliding window of stride `stride` (mmseg "slide" mode), per-window cosine scores
are upsampled bilinearly to the window, averaged where windows overlap and resized back
to the original size. With a background class, pixels whose best foreground score falls
below a threshold are background. `resize="antialias"` keeps the project's earlier
resize: short side exactly `short_side`, antialiased, no cap on the long side.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import get_args

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from torchvision.transforms.v2.functional import InterpolationMode, center_crop, resize

from pipeline.errors import DataError
from pipeline.evaluation.choices import ZeroshotResize
from pipeline.evaluation.miou import ConfusionMatrix, chance_miou
from pipeline.evaluation.sliding_window import resize_short_side
from pipeline.evaluation.windows import Box, Job, WindowMean, batched, upsample_logits

PatchFn = Callable[[torch.Tensor], torch.Tensor]

RESIZES = get_args(ZeroshotResize)
TCL_SCALE = (2048, 448)  # TCL's test img_scale (long side cap, short side): configs/_base_/datasets/*.py


def protocol_long_side(short_side: int) -> int:
    """The long-side cap that keeps TCL's ratio 2048 / 448 at another short side (2048 at 448, 439 at 96)."""
    return round(short_side * TCL_SCALE[0] / TCL_SCALE[1])


def mmseg_size(height: int, width: int, short_side: int, long_side: int) -> tuple[int, int]:
    """(height, width) that mmcv's `rescale_size` gives an H x W image for the scale (long_side, short_side).

    The image is scaled by min(long edge / max(H, W), short edge / min(H, W)), the edges being the
    larger and smaller of the two values, and each side rounds as int(side * scale + 0.5).
    """
    long_edge, short_edge = max(long_side, short_side), min(long_side, short_side)
    scale = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_mmseg(image: torch.Tensor, short_side: int, long_side: int) -> torch.Tensor:
    """A C x H x W image resized as mmcv.imrescale(img, (long_side, short_side)) does (cv2 INTER_LINEAR).

    Bilinear with half-pixel centres and edge clamping, no antialiasing; a uint8 image is rounded
    back to uint8 (cv2 rounds in fixed point, so its pixels may differ from these by one grey level).
    """
    size = mmseg_size(*image.shape[-2:], short_side, long_side)
    if size == tuple(image.shape[-2:]):
        return image
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False,
                            antialias=False)[0]
    if image.dtype == torch.uint8:
        return resized.round().clamp(0, 255).to(torch.uint8)
    return resized.to(image.dtype)


def resize_for_zeroshot(image: torch.Tensor, short_side: int, resize: str = "mmseg",
                        long_side: int | None = None) -> torch.Tensor:
    """The test-time resize of a C x H x W image before the sliding window.

    `mmseg` (the protocol): `resize_mmseg` with the long side capped at `long_side`
    (default `protocol_long_side(short_side)`). `antialias`: the short side exactly `short_side`,
    bilinear antialiased, no cap (`sliding_window.resize_short_side`, the fine-tuning evaluation's).
    """
    if resize == "antialias":
        return resize_short_side(image, short_side)
    if resize != "mmseg":
        raise ValueError(f"resize must be one of {list(RESIZES)}, got {resize!r}")
    return resize_mmseg(image, short_side, protocol_long_side(short_side) if long_side is None else long_side)


@torch.no_grad()
def class_embeddings(
    encode_text: Callable[[torch.Tensor], torch.Tensor],
    tokenize: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[Callable[[str], str]] = OPENAI_IMAGENET_TEMPLATES,
    batch_size: int = 256,
) -> torch.Tensor:
    """K x D class embeddings as open_clip's build_zero_shot_classifier builds them.

    Every (class, template) prompt is encoded and L2-normalised, the prompts of a class
    are averaged over templates and the mean is renormalised. `encode_text` maps
    tokens to one embedding per prompt; the prompts go through it `batch_size` at a time.
    """
    if not classnames or not templates:
        raise ValueError("class_embeddings needs at least one class name and one template")
    tokens = tokenize([template(name) for name in classnames for template in templates])
    embeddings = torch.cat([F.normalize(encode_text(chunk).float(), dim=-1)
                            for chunk in tokens.split(batch_size)])
    mean = embeddings.reshape(len(classnames), len(templates), -1).mean(1)
    return F.normalize(mean, dim=-1)


def slide_windows(height: int, width: int, window: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of mmseg's slide_inference windows, rows outer, columns inner.

    The last window on each axis is shifted back to end at the border; on an axis
    shorter than `window` the single window is clipped to it, as in mmseg.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")

    def spans(length: int) -> list[tuple[int, int]]:
        grids = max(length - window + stride - 1, 0) // stride + 1
        ends = [min(i * stride + window, length) for i in range(grids)]
        return [(max(end - window, 0), end) for end in ends]

    return [(y0, y1, x0, x1) for y0, y1 in spans(height) for x0, x1 in spans(width)]


def _slide_crops(image: torch.Tensor, short_side: int, window: int, stride: int, resize: str,
                 long_side: int | None) -> tuple[torch.Tensor, list[Box], tuple[int, int], tuple[int, int]]:
    """The windows (n x 3 x window x window uint8) of the resized and padded image, their boxes, and the padded
    and resized sizes."""
    resized = resize_for_zeroshot(image, short_side, resize, long_side)
    resized_h, resized_w = resized.shape[-2:]
    padded = F.pad(resized, (0, max(window - resized_w, 0), 0, max(window - resized_h, 0)))
    boxes = slide_windows(*padded.shape[-2:], window, stride)
    crops = torch.stack([padded[:, y0:y1, x0:x1] for y0, y1, x0, x1 in boxes])
    return crops, boxes, tuple(padded.shape[-2:]), (resized_h, resized_w)


def _patch_tokens(patch_fn: PatchFn, dim: int, crops: torch.Tensor) -> torch.Tensor:
    """patch_fn's tokens (B x h x w x D) of B square uint8 crops, checked."""
    tokens = patch_fn(crops.float() / 255)
    if tokens.dim() != 4 or tokens.shape[0] != crops.shape[0] or tokens.shape[-1] != dim:
        raise ValueError(f"patch_fn returned shape {tuple(tokens.shape)} for {crops.shape[0]} windows; "
                         f"expected {crops.shape[0]} x h x w x {dim}")
    return tokens


@torch.no_grad()
def batched_dense_scores(
    patch_fn: PatchFn,
    images: Iterable[tuple[Job, torch.Tensor]],
    class_emb: torch.Tensor,
    short_side: int,
    window: int,
    stride: int,
    batch_size: int = 16,
    *,
    resize: str = "mmseg",
    long_side: int | None = None,
) -> Iterator[tuple[Job, torch.Tensor]]:
    """(job, `dense_scores` of the image) for each (job, image) of `images`, in order, the windows of consecutive
    images going through `patch_fn` `batch_size` at a time (`windows.batched`)."""
    classes = F.normalize(class_emb.float(), dim=-1)
    jobs = (((job, image.shape[-2:], boxes, padded, resized), crops) for job, image in images
            for crops, boxes, padded, resized in [_slide_crops(image, short_side, window, stride, resize, long_side)])
    for (job, size, boxes, padded, resized), tokens in batched(
            jobs, partial(_patch_tokens, patch_fn, classes.shape[-1]), batch_size):
        scores = torch.einsum("bhwd,kd->bkhw", tokens.float(), classes.to(tokens.device))
        average = WindowMean(classes.shape[0], *padded)
        average.add(boxes, upsample_logits(scores, (window, window)))
        yield job, upsample_logits(average.mean()[None, :, :resized[0], :resized[1]], size)[0]


def dense_scores(
    patch_fn: PatchFn,
    image: torch.Tensor,
    class_emb: torch.Tensor,
    short_side: int,
    window: int,
    stride: int,
    batch_size: int = 16,
    *,
    resize: str = "mmseg",
    long_side: int | None = None,
) -> torch.Tensor:
    """K x H x W float32 cosine scores for a uint8 3 x H x W image.

    `patch_fn` maps B x 3 x window x window floats in [0, 1] to L2-normalised patch
    tokens B x h x w x D; `class_emb` (K x D) is normalised here. Where the resized image
    is smaller than the window it is zero-padded bottom/right to the window (mmseg pads
    too, though after normalisation) and the padded scores are cropped away before the
    final resize. The scores live on patch_fn's output device. `resize` and `long_side` choose
    the test-time resize (`resize_for_zeroshot`).
    """
    [(_, scores)] = batched_dense_scores(patch_fn, [(None, image)], class_emb, short_side, window, stride,
                                         batch_size, resize=resize, long_side=long_side)
    return scores


def predict(scores: torch.Tensor, background_threshold: float | None = None) -> torch.Tensor:
    """H x W int64 labels from K x H x W scores.

    Without a threshold: the argmax. With one, the K classes are the foreground classes
    of a with-background benchmark: 0 (background) where the best score is below the
    threshold, else 1 + argmax.
    """
    if background_threshold is None:
        return scores.argmax(0)
    best, index = scores.max(0)
    return torch.where(best < background_threshold, torch.zeros_like(index), index + 1)


def classify(global_emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """B top-1 class indices: the class embedding of highest cosine similarity."""
    classes = F.normalize(class_emb.float(), dim=-1).to(global_emb.device)
    return (F.normalize(global_emb.float(), dim=-1) @ classes.T).argmax(-1)


def dominant_class(label: torch.Tensor, num_classes: int, with_background: bool,
                   ignore_index: int = 255) -> int | None:
    """Index (among the class embeddings) of the most frequent labelled foreground class.

    Background (label 0 of a with-background benchmark) and `ignore_index` do not count;
    ties go to the lower index; None when no pixel qualifies.
    """
    values = label.reshape(-1).long()
    values = values[(values != ignore_index) & (values < num_classes)]
    counts = torch.bincount(values, minlength=num_classes)
    if with_background:
        counts = counts[1:]
    if counts.sum() == 0:
        return None
    return int(counts.argmax())


def _center_window(image: torch.Tensor, window: int) -> torch.Tensor:
    """1 x 3 x window x window floats in [0, 1]: short side resized to `window`, centre crop."""
    crop = center_crop(resize_short_side(image, window), [window, window])
    return crop[None].float() / 255


def _levels(num_classes: int, num_embeddings: int, with_background: bool,
            thresholds: Sequence[float]) -> list[float | None]:
    """Background thresholds to score ([None] without background), after checking the sizes."""
    expected = num_embeddings + 1 if with_background else num_embeddings
    if num_classes != expected:
        raise ValueError(f"num_classes={num_classes} but {num_embeddings} class embeddings "
                         f"{'plus background ' if with_background else ''}give {expected}")
    if not with_background:
        return [None]
    if not thresholds:
        raise ValueError("a with-background benchmark needs at least one background threshold")
    return [float(t) for t in thresholds]


@torch.no_grad()
def evaluate_benchmark(
    samples: Iterable[tuple[str, torch.Tensor, torch.Tensor]],
    patch_fn: PatchFn,
    global_fn: Callable[[torch.Tensor], torch.Tensor],
    class_emb: torch.Tensor,
    *,
    num_classes: int,
    with_background: bool,
    thresholds: Sequence[float],
    short_side: int,
    window: int,
    stride: int,
    batch_size: int = 16,
    ignore_index: int = 255,
    resize: str = "mmseg",
    long_side: int | None = None,
) -> dict:
    """Dataset-level mIoU (per background threshold) and dominant-class top-1 over `samples`.

    `samples` are (key, uint8 3 x H x W image, H x W label) as `shards.SplitStream` gives them. The
    windows of consecutive images go through `patch_fn`, and their centre crops through `global_fn`,
    `batch_size` at a time; the host reads what the device counted once, at the end. With
    background, `class_emb` holds the K foreground classes, labels run 0..K with 0 =
    background, and the dense scores of each image are computed once and thresholded at
    every value of `thresholds`; without background, `thresholds` is unused. Dominant-class top-1
    (a stand-in, not a classification benchmark) predicts each image's most frequent labelled
    foreground class from `global_fn` (B x 3 x window x
    window floats in [0, 1] -> B x D global embeddings) on the centre crop; images without
    a labelled foreground pixel are not classified. `resize` and `long_side` choose the resize
    before the sliding window (`resize_for_zeroshot`); the centre crop for top-1 keeps the
    antialiased short-side resize. Returns {"images", "miou": [{"threshold",
    "miou"}...], "classified", "dominant_class_top1", "counts", "chance_miou"} with mIoU the mmseg mean over
    classes present, "counts" the per-image `ImageCounts` of the first level (the configured threshold) and
    "chance_miou" the mIoU of a uniformly random class per pixel on the same targets.
    """
    if resize not in RESIZES:
        raise ValueError(f"resize must be one of {list(RESIZES)}, got {resize!r}")
    levels = _levels(num_classes, class_emb.shape[0], with_background, thresholds)
    matrices = [ConfusionMatrix(num_classes, ignore_index) for _ in levels]
    keys, centres, dominants, predicted = [], [], [], []

    def classify_centres() -> None:
        if centres:
            predicted.append(classify(global_fn(torch.cat(centres)), class_emb))
            centres.clear()

    def images():
        for key, image, label in samples:
            if tuple(label.shape) != tuple(image.shape[-2:]):
                raise DataError(f"sample {key!r}: label is {tuple(label.shape)} but image is "
                                f"{tuple(image.shape[-2:])}; expected equal H x W")
            yield (key, image, label), image

    for (key, image, label), scores in batched_dense_scores(patch_fn, images(), class_emb, short_side, window,
                                                             stride, batch_size, resize=resize, long_side=long_side):
        target = label.to(scores.device, non_blocking=True)
        for matrix, level in zip(matrices, levels):
            matrix.update(predict(scores, level), target)
        keys.append(key)
        dominant = dominant_class(label, num_classes, with_background, ignore_index)
        if dominant is not None:
            dominants.append(dominant)
            centres.append(_center_window(image, window))
            if len(centres) == batch_size:
                classify_centres()
    classify_centres()
    try:
        counts = matrices[0].image_counts(keys)  # the one read of the device's counts, which checks the labels
    except ValueError as err:
        raise DataError(f"sample {err}") from None
    correct = int((torch.cat(predicted).cpu() == torch.tensor(dominants)).sum()) if dominants else 0
    return {
        "images": len(keys),
        "miou": [{"threshold": level, "miou": matrix.miou()} for level, matrix in zip(levels, matrices)],
        "classified": len(dominants),
        "dominant_class_top1": correct / len(dominants) if dominants else None,
        "counts": counts,
        "chance_miou": chance_miou(matrices[0].matrix),
    }


def classification_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """open_clip's evaluation transform of a uint8 3 x H x W image: Resize(size, bicubic) of the short side,
    then CenterCrop(size); uint8 3 x size x size."""
    resized = resize(image, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return center_crop(resized, [size, size])


@torch.no_grad()
def evaluate_classification(
    samples: Iterable[tuple[str, torch.Tensor, torch.Tensor]],
    global_fn: Callable[[torch.Tensor], torch.Tensor],
    class_emb: torch.Tensor,
    *,
    image_size: int,
    batch_size: int = 64,
    ks: Sequence[int] = (1, 5),
) -> dict:
    """Zero-shot top-k accuracy over `samples`: (key, uint8 3 x H x W image, class index).

    Each image's `classification_crop` goes through `global_fn` (B x 3 x image_size x image_size floats in
    [0, 1] -> B x D) `batch_size` at a time; an image counts at k when its class is among the k highest logits
    100·f·W (f and the rows of `class_emb` L2-normalised). Returns {"images", "top<k>" for each k}.
    """
    classes = F.normalize(class_emb.float(), dim=-1)
    if max(ks) > classes.shape[0]:
        raise ValueError(f"top-{max(ks)} needs at least {max(ks)} classes, got {classes.shape[0]}")
    samples, hits, images = iter(samples), None, 0
    while batch := list(itertools.islice(samples, batch_size)):
        crops = torch.stack([classification_crop(image, image_size) for _, image, _ in batch])
        features = F.normalize(global_fn(crops.float() / 255).float(), dim=-1)
        best = (100 * features @ classes.to(features.device).T).topk(max(ks), dim=-1).indices
        correct = best == torch.stack([label for _, _, label in batch]).to(best.device)[:, None]
        counts = torch.stack([correct[:, :k].any(-1).sum() for k in ks])
        hits, images = counts if hits is None else hits + counts, images + len(batch)
    if not images:
        raise DataError("no images to classify")
    return {"images": images, **{f"top{k}": int(n) / images for k, n in zip(ks, hits.tolist())}}
