import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from pipeline.config import parse_params
from pipeline.errors import ConfigError, DataError
from pipeline.evaluation.sliding_window import resize_short_side
from pipeline.evaluation.zeroshot import (
    class_embeddings, classify, dense_scores, dominant_class, evaluate_benchmark, mmseg_size, predict,
    protocol_long_side, resize_for_zeroshot, resize_mmseg, slide_windows)
from tests.conftest import REPO


# ---------------------------------------------------------------- slide_windows

def test_slide_windows_hand_computed():
    assert slide_windows(448, 1000, 448, 224) == [(0, 448, x, x + 448) for x in (0, 224, 448, 552)]
    assert slide_windows(1000, 448, 448, 224) == [(y, y + 448, 0, 448) for y in (0, 224, 448, 552)]
    assert slide_windows(448, 448, 448, 224) == [(0, 448, 0, 448)]
    assert slide_windows(448, 672, 448, 224) == [(0, 448, 0, 448), (0, 448, 224, 672)]
    # rows outer, columns inner, as mmseg's loops
    assert slide_windows(500, 500, 448, 224) == [
        (0, 448, 0, 448), (0, 448, 52, 500), (52, 500, 0, 448), (52, 500, 52, 500)]


def test_slide_windows_smaller_than_window_clips_to_the_image():
    assert slide_windows(300, 500, 448, 224) == [(0, 300, 0, 448), (0, 300, 52, 500)]
    assert slide_windows(10, 12, 448, 224) == [(0, 10, 0, 12)]


@pytest.mark.parametrize("window,stride", [(32, 16), (32, 12), (14, 5), (7, 7)])
def test_slide_windows_cover_every_pixel_with_full_windows(window, stride):
    for height in range(window, 4 * window, 3):
        width = height + 3 * stride + 1
        boxes = slide_windows(height, width, window, stride)
        covered = torch.zeros(height, width, dtype=torch.int64)
        for y0, y1, x0, x1 in boxes:
            assert y1 - y0 == window and x1 - x0 == window
            covered[y0:y1, x0:x1] += 1
        assert covered.min() >= 1
        rows = math.ceil(max(height - window, 0) / stride) + 1
        cols = math.ceil(max(width - window, 0) / stride) + 1
        assert len(boxes) == rows * cols
        assert boxes[-1][1] == height and boxes[-1][3] == width


def test_slide_windows_rejects_bad_sizes():
    with pytest.raises(ValueError, match="stride"):
        slide_windows(10, 10, 4, 0)


# ---------------------------------------------------------------- test-time resize (TCL / mmcv imrescale)

# (H, W, short_side, long_side) -> (H', W'), worked out by hand from mmcv's rescale_size:
# scale = min(long_side / max(H, W), short_side / min(H, W)), side' = int(side * scale + 0.5).
MMSEG_SIZES = [
    ((375, 500, 448, 2048), (448, 597)),    # VOC: 448/375; 500 * 1.19467 = 597.33
    ((333, 500, 448, 2048), (448, 673)),    # 500 * 448/333 = 672.67
    ((480, 640, 448, 2048), (448, 597)),    # 640 * 0.93333 = 597.33
    ((256, 342, 448, 2048), (448, 599)),    # x1.75: 598.5 rounds half up (Python's round gives 598)
    ((1024, 2048, 448, 2048), (448, 896)),  # Cityscapes: x0.4375
    ((448, 2048, 448, 2048), (448, 2048)),  # exactly at the scale: unchanged
    ((10, 20, 448, 2048), (448, 896)),      # upscale x44.8
    ((500, 2300, 448, 2048), (445, 2048)),  # ratio 4.6 > 2048/448: cap, x0.890435, 445.22 -> 445
    ((512, 2560, 448, 2048), (410, 2048)),  # ratio 5: cap, x0.8, 409.6 -> 410
    ((100, 1000, 448, 2048), (205, 2048)),  # ratio 10: cap, an upscale x2.048, 204.8 -> 205
    ((3000, 400, 448, 2048), (2048, 273)),  # tall, ratio 7.5: cap, 400 * 0.682667 = 273.07
    ((100, 1000, 96, 439), (44, 439)),      # the miniature: cap 439, x0.439, 43.9 -> 44
    ((20, 30, 96, 439), (96, 144)),         # the miniature, no cap: x4.8
]


@pytest.mark.parametrize("shape, expected", MMSEG_SIZES, ids=[str(s) for s, _ in MMSEG_SIZES])
def test_mmseg_sizes_follow_mmcv_imrescale(shape, expected):
    height, width, short_side, long_side = shape
    assert mmseg_size(height, width, short_side, long_side) == expected
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    assert tuple(resize_mmseg(image, short_side, long_side).shape) == (3, *expected)
    assert tuple(resize_for_zeroshot(image, short_side, "mmseg", long_side).shape) == (3, *expected)


def test_the_default_cap_keeps_tcl_ratio():
    assert protocol_long_side(448) == 2048 and protocol_long_side(96) == 439
    image = torch.zeros(3, 100, 1000, dtype=torch.uint8)
    assert resize_for_zeroshot(image, 448).shape == (3, 205, 2048)
    assert resize_for_zeroshot(image, 96).shape == (3, 44, 439)


def test_the_antialias_resize_is_the_earlier_one():
    image = torch.randint(0, 256, (3, 100, 1000), dtype=torch.uint8)
    old = resize_short_side(image, 448)
    assert old.shape == (3, 448, 4480)  # no cap
    assert torch.equal(resize_for_zeroshot(image, 448, "antialias"), old)
    assert torch.equal(resize_for_zeroshot(image, 448, "antialias", 2048), old)
    assert resize_for_zeroshot(torch.zeros(3, 256, 342, dtype=torch.uint8), 448, "antialias").shape == (3, 448, 598)
    with pytest.raises(ValueError, match="resize must be one of"):
        resize_for_zeroshot(image, 448, "bicubic")


def cv2_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """C x H x W float64 resize written from cv2's INTER_LINEAR rule: source coordinate
    (d + 0.5) * in / out - 0.5, clamped to [0, in - 1], linear weights between its two neighbours."""
    def taps(out_size, in_size):
        src = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
        src = np.clip(src, 0, in_size - 1)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, src - low

    y0, y1, fy = taps(height, image.shape[1])
    x0, x1, fx = taps(width, image.shape[2])
    rows = image[:, y0] * (1 - fy)[:, None] + image[:, y1] * fy[:, None]
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


@pytest.mark.parametrize("shape, short_side, long_side", [
    ((37, 53), 20, 2048),    # downscale by 1.85
    ((23, 31), 64, 2048),    # upscale by 2.78
    ((12, 100), 16, 73),     # capped: 73 / 100
    ((64, 48), 11, 2048),    # downscale by 4.36
])
def test_mmseg_resize_is_bilinear_without_antialias(shape, short_side, long_side):
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, *shape, generator=generator) * 255
    size = mmseg_size(*shape, short_side, long_side)
    expected = torch.from_numpy(cv2_linear(image.double().numpy(), *size))
    got = resize_mmseg(image, short_side, long_side)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, atol=5e-3, rtol=0)  # float32 vs float64
    as_uint8 = resize_mmseg(image.round().to(torch.uint8), short_side, long_side)
    assert as_uint8.dtype == torch.uint8
    rounded = torch.from_numpy(cv2_linear(image.round().double().numpy(), *size)).round()
    assert (as_uint8.double() - rounded).abs().max() <= 1  # cv2's fixed point is within one grey level too


def test_a_downscaled_checkerboard_keeps_its_contrast():
    # x1/3 without antialias samples source pixels 3i + 1 exactly; an antialiased resize averages them to grey
    y, x = torch.meshgrid(torch.arange(60), torch.arange(90), indexing="ij")
    board = (((y + x) % 2) * 255).to(torch.uint8).expand(3, -1, -1)
    resized = resize_for_zeroshot(board, 20)
    assert resized.shape == (3, 20, 30)
    assert torch.equal(resized, board[:, 1::3, 1::3])
    assert set(resized.unique().tolist()) == {0, 255}
    smoothed = resize_for_zeroshot(board, 20, "antialias")
    assert smoothed.shape == (3, 20, 30) and (smoothed.float() - 127.5).abs().max() < 60


def test_an_image_at_the_scale_is_returned_unchanged():
    image = torch.randint(0, 256, (3, 448, 600), dtype=torch.uint8)
    assert torch.equal(resize_for_zeroshot(image, 448, "mmseg", 2048), image)


def test_params_default_to_the_protocol_resize(raw_params):
    cfg = parse_params(raw_params).zeroshot
    assert (cfg.resize, cfg.long_side) == ("mmseg", protocol_long_side(cfg.short_side))
    paper = parse_params(yaml.safe_load((REPO / "params-paper.yaml").read_text())).zeroshot
    assert (paper.resize, paper.short_side, paper.long_side) == ("mmseg", 448, 2048)
    raw_params["zeroshot"]["resize"] = "antialias"
    assert parse_params(raw_params).zeroshot.resize == "antialias"


@pytest.mark.parametrize("edit, fragment", [
    ({"resize": "bicubic"}, "zeroshot.resize: unknown value 'bicubic'"),
    ({"long_side": 0}, "zeroshot.long_side must be positive"),
    ({"long_side": 50}, "zeroshot.long_side (50) must be at least zeroshot.short_side (96)"),
    ({"long_side": 439.5}, "zeroshot.long_side: expected int"),
])
def test_bad_resize_params_name_the_key(raw_params, edit, fragment):
    raw_params["zeroshot"].update(short_side=96, **edit)
    with pytest.raises(ConfigError) as err:
        parse_params(raw_params)
    assert fragment in str(err.value)


def test_missing_resize_params_are_reported(raw_params):
    del raw_params["zeroshot"]["resize"]
    with pytest.raises(ConfigError, match="zeroshot.resize: missing"):
        parse_params(raw_params)


# ---------------------------------------------------------------- dense_scores

def channel_patches(patch: int):
    """Fake patch_fn: each patch x patch cell -> one-hot of its dominant colour channel (D = 3)."""
    def patch_fn(x):
        means = F.avg_pool2d(x, patch)                       # B x 3 x h x w
        return F.one_hot(means.argmax(1), 3).float()         # B x h x w x 3
    return patch_fn


def pixel_colours(x):
    """Fake patch_fn: every pixel is a patch whose token is its L2-normalised RGB colour."""
    return F.normalize(x.permute(0, 2, 3, 1), dim=-1)


@pytest.mark.parametrize("portrait", [False, True])
def test_dense_scores_recover_coloured_regions(portrait):
    classes = torch.zeros(64, 128, dtype=torch.int64)
    classes[:, 40:88] = 1
    classes[:, 88:] = 2
    image = (F.one_hot(classes, 3).permute(2, 0, 1) * 255).to(torch.uint8)
    if portrait:
        image, classes = image.transpose(1, 2), classes.T
    # downscaled by 2 to 32 x 64, windows at 0, 16, 32 of 8 x 8 patches of 4 pixels
    scores = dense_scores(channel_patches(4), image, torch.eye(3), short_side=32, window=32, stride=16)
    assert scores.shape == (3, *image.shape[-2:]) and scores.dtype == torch.float32
    assert torch.equal(scores.argmax(0), classes)


class WindowConstants:
    """Fake patch_fn giving the i-th window it sees the cosine score values[i] everywhere."""

    def __init__(self, values):
        self.values, self.seen, self.batches = values, 0, []

    def __call__(self, x):
        self.batches.append(x.shape[0])
        angles = torch.tensor(self.values[self.seen:self.seen + x.shape[0]]).acos()
        self.seen += x.shape[0]
        token = torch.stack([angles.cos(), angles.sin()], -1)
        return token.view(-1, 1, 1, 2).expand(-1, 2, 2, 2)


def test_dense_scores_average_overlapping_windows():
    image = torch.zeros(3, 16, 44, dtype=torch.uint8)
    # windows [0,16) [8,24) [16,32) [24,40) [28,44) along x
    values = [0.1, 0.2, 0.4, 0.8, 0.5]
    fake = WindowConstants(values)
    scores = dense_scores(fake, image, torch.tensor([[3.0, 0.0]]), short_side=16, window=16, stride=8,
                          batch_size=3)
    assert fake.batches == [3, 2]
    cover = {range(0, 8): [0], range(8, 16): [0, 1], range(16, 24): [1, 2], range(24, 28): [2, 3],
             range(28, 32): [2, 3, 4], range(32, 40): [3, 4], range(40, 44): [4]}
    expected = torch.empty(44)
    for columns, windows in cover.items():
        expected[columns.start:columns.stop] = sum(values[w] for w in windows) / len(windows)
    torch.testing.assert_close(scores, expected.expand(1, 16, 44))


def test_dense_scores_pad_an_image_smaller_than_the_window_and_crop_back():
    image = torch.randint(1, 256, (3, 10, 12), dtype=torch.uint8)
    seen = []

    def patch_fn(x):
        seen.append(tuple(x.shape))
        return pixel_colours(x)

    scores = dense_scores(patch_fn, image, torch.eye(3)[:2], short_side=10, window=16, stride=8)
    assert seen == [(1, 3, 16, 16)]
    expected = F.normalize(image.float(), dim=0)[:2]
    torch.testing.assert_close(scores, expected)


def test_dense_scores_resize_back_to_the_original_size():
    image = torch.randint(0, 256, (3, 30, 45), dtype=torch.uint8)
    scores = dense_scores(channel_patches(2), image, torch.eye(3), short_side=16, window=16, stride=8)
    assert scores.shape == (3, 30, 45)


class SeenCrops:
    """Fake patch_fn recording the uint8 crops it is given (pixel_colours tokens)."""

    def __init__(self):
        self.crops = []

    def __call__(self, x):
        self.crops.append((x * 255).round().to(torch.uint8))
        return pixel_colours(x)


@pytest.mark.parametrize("kwargs, size", [
    ({}, (9, 73)),                                     # default: mmseg, cap round(16 * 2048 / 448) = 73
    ({"resize": "mmseg", "long_side": 100}, (12, 100)),
    ({"resize": "mmseg", "long_side": 2048}, (16, 133)),
    ({"resize": "antialias"}, (16, 133)),              # the earlier resize: no cap, antialiased
])
def test_dense_scores_resize_as_configured(kwargs, size):
    image = torch.randint(0, 256, (3, 12, 100), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    spy = SeenCrops()
    scores = dense_scores(spy, image, torch.eye(3), short_side=16, window=160, stride=80, **kwargs)
    assert scores.shape == (3, 12, 100) and len(spy.crops) == 1
    crop = spy.crops[0][0]
    height, width = size
    expected = resize_for_zeroshot(image, 16, **kwargs)
    assert tuple(expected.shape[-2:]) == size
    assert torch.equal(crop[:, :height, :width], expected)
    assert not crop[:, height:].any() and not crop[:, :, width:].any()
    if kwargs.get("resize") != "antialias":
        assert torch.equal(expected, resize_mmseg(image, 16, kwargs.get("long_side", 73)))
    else:
        assert torch.equal(expected, resize_short_side(image, 16))


@pytest.mark.parametrize("resize", ["mmseg", "antialias"])
def test_evaluate_benchmark_passes_the_resize_on(resize):
    image = torch.randint(0, 256, (3, 30, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    label = torch.zeros(30, 20, dtype=torch.uint8)
    spy = SeenCrops()
    evaluate_benchmark([("s", image, label)], spy, lambda x: x.mean((2, 3)), torch.eye(3), num_classes=3,
                       with_background=False, thresholds=[], short_side=11, window=32, stride=16,
                       resize=resize, long_side=2048)
    expected = resize_for_zeroshot(image, 11, resize, 2048)
    height = 17 if resize == "mmseg" else 16  # 30 * 11 / 20 = 16.5: mmcv rounds half up, Python's round to even
    assert expected.shape == (3, height, 11)
    assert torch.equal(spy.crops[0][0, :, :height, :11], expected)
    assert not torch.equal(resize_mmseg(image, 11, 2048), resize_short_side(image, 11))
    with pytest.raises(ValueError, match="resize must be one of"):
        evaluate_benchmark([], spy, lambda x: x, torch.eye(3), num_classes=3, with_background=False,
                           thresholds=[], short_side=11, window=32, stride=16, resize="nearest")


def test_dense_scores_reject_a_bad_patch_fn():
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="patch_fn returned shape"):
        dense_scores(lambda x: torch.zeros(x.shape[0], 2, 2, 5), image, torch.eye(3), 16, 16, 8)


# ---------------------------------------------------------------- predict, classify

def test_predict_with_and_without_background_threshold():
    scores = torch.tensor([[[0.9, 0.2], [0.1, 0.30]],
                           [[0.1, 0.4], [0.2, 0.35]]])
    assert predict(scores).tolist() == [[0, 1], [1, 1]]
    assert predict(scores, 0.3).tolist() == [[1, 2], [0, 2]]
    assert predict(scores, 0.5).tolist() == [[1, 0], [0, 0]]
    assert predict(scores, 0.05).tolist() == [[1, 2], [2, 2]]


def test_classify_uses_cosine_similarity():
    class_emb = torch.tensor([[10.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    global_emb = torch.tensor([[0.6, 0.8], [3.0, 1.0], [-2.0, 0.1]])
    assert classify(global_emb, class_emb).tolist() == [1, 0, 2]


def test_dominant_class():
    label = torch.tensor([[0, 0, 0, 2], [2, 1, 255, 255]], dtype=torch.uint8)
    assert dominant_class(label, 3, with_background=True) == 1      # class 2 -> embedding 1
    assert dominant_class(label, 3, with_background=False) == 0
    assert dominant_class(torch.tensor([[1, 2]]), 3, with_background=True) == 0  # tie -> lower
    assert dominant_class(torch.tensor([[0, 255]]), 3, with_background=True) is None


# ---------------------------------------------------------------- class_embeddings

def fake_tokenize(texts):
    tokens = torch.zeros(len(texts), 77, dtype=torch.int64)
    for i, text in enumerate(texts):
        codes = list(text.encode())[:77]
        tokens[i, :len(codes)] = torch.tensor(codes)
    return tokens


PROJECTION = torch.randn(77, 6, generator=torch.Generator().manual_seed(0))


def fake_encode_text(tokens):
    return tokens.float() @ PROJECTION


def test_class_embeddings_match_a_loop_over_templates():
    names = ["cat", "traffic light", "sky"]
    templates = OPENAI_IMAGENET_TEMPLATES[:5]
    calls = []

    def encode(tokens):
        calls.append(tokens.shape[0])
        return fake_encode_text(tokens)

    got = class_embeddings(encode, fake_tokenize, names, templates, batch_size=4)
    assert calls == [4, 4, 4, 3]
    expected = []
    for name in names:
        per_template = [F.normalize(fake_encode_text(fake_tokenize([t(name)]))[0], dim=0) for t in templates]
        expected.append(F.normalize(torch.stack(per_template).mean(0), dim=0))
    torch.testing.assert_close(got, torch.stack(expected))


def test_class_embeddings_default_to_the_80_openai_imagenet_templates():
    prompts = []

    def tokenize(texts):
        prompts.extend(texts)
        return fake_tokenize(texts)

    got = class_embeddings(fake_encode_text, tokenize, ["cat", "dog"])
    assert len(prompts) == 160 and prompts[0] == "a bad photo of a cat." and "a photo of a dog." in prompts[80:]
    assert got.shape == (2, 6)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(2))


# ---------------------------------------------------------------- evaluate_benchmark

A, B, C, D = (255, 0, 0), (0, 255, 0), (255, 128, 0), (0, 0, 255)


def coloured(rows):
    return torch.tensor(rows, dtype=torch.uint8).permute(2, 0, 1).contiguous()


def labels(rows):
    return torch.tensor(rows, dtype=torch.uint8)


def mean_colour(x):
    """Fake global_fn: the crop's mean colour, and a record of what it was given."""
    mean_colour.inputs.append(x)
    return x.mean((2, 3))


TOY = [  # foreground scores: A (1, 0), B (0, 1), C (0.894, 0.449), D (0, 0)
    ("one", coloured([[A, A, C], [B, D, C]]), labels([[1, 1, 1], [2, 0, 255]])),
    ("two", coloured([[C, B], [D, A]]), labels([[2, 2], [0, 0]])),
    ("void", coloured([[D, D], [D, D]]), labels([[255, 255], [255, 255]])),
]


def test_evaluate_benchmark_with_background_matches_a_hand_computation():
    mean_colour.inputs = []
    result = evaluate_benchmark(TOY, pixel_colours, mean_colour, torch.eye(3)[:2], num_classes=3,
                                with_background=True, thresholds=[0.5, 0.95],
                                short_side=2, window=2, stride=1)
    # threshold 0.5: confusion rows target 0..2 = [2 1 0], [0 3 0], [0 1 2]
    #   IoU = 2/3, 3/5, 2/3; threshold 0.95: [2 1 0], [1 2 0], [1 0 2] -> IoU 2/5, 1/2, 2/3
    assert result["images"] == 3
    assert [r["threshold"] for r in result["miou"]] == [0.5, 0.95]
    counts = result["counts"]  # per image, at the configured (first) threshold
    assert list(counts.keys) == ["one", "two", "void"] and not counts.union[2].any()
    assert counts.intersection.sum(0).tolist() == [2, 3, 2] and counts.union.sum(0).tolist() == [3, 5, 3]
    assert counts.miou() == result["miou"][0]["miou"]
    assert result["miou"][0]["miou"] == pytest.approx((2 / 3 + 3 / 5 + 2 / 3) / 3)
    assert result["miou"][1]["miou"] == pytest.approx((2 / 5 + 1 / 2 + 2 / 3) / 3)
    # dominant classes: "one" -> label 1 (embedding 0), "two" -> label 2 (embedding 1),
    # "void" skipped; centre crops [[A, A], [B, D]] -> 0 (right), [[C, B], [D, A]] -> 0 (wrong)
    assert result["classified"] == 2 and result["dominant_class_top1"] == 0.5
    assert [tuple(x.shape) for x in mean_colour.inputs] == [(2, 3, 2, 2)]  # the two centre crops in one batch
    torch.testing.assert_close(mean_colour.inputs[0][0], coloured([[A, A], [B, D]]).float() / 255)


def test_evaluate_benchmark_without_background():
    samples = [("s", coloured([[A, B, C], [D, B, A]]), labels([[0, 1, 1], [2, 1, 0]]))]
    mean_colour.inputs = []
    result = evaluate_benchmark(samples, pixel_colours, mean_colour, torch.eye(3), num_classes=3,
                                with_background=False, thresholds=[], short_side=2, window=2, stride=1)
    # predictions = dominant channel: [[0, 1, 0], [2, 1, 0]]; IoU 2/3, 2/3, 1
    assert result["miou"] == [{"threshold": None, "miou": pytest.approx((2 / 3 + 2 / 3 + 1) / 3)}]
    assert result["images"] == 1 and result["classified"] == 1
    # dominant label 1; centre crop [[A, B], [D, B]] -> mean colour leans green -> class 1
    assert result["dominant_class_top1"] == 1.0


def test_evaluate_benchmark_batches_the_windows_of_several_images():
    g = torch.Generator().manual_seed(3)
    samples = [(f"s{i}", torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g),
                torch.randint(0, 3, (h, w), dtype=torch.uint8, generator=g))
               for i, (h, w) in enumerate([(20, 30), (16, 40), (30, 20), (16, 16)])]
    results = {}
    for batch_size in (1, 4, 64):
        calls = []

        def patch_fn(x):
            calls.append(x.shape[0])
            return pixel_colours(x)

        mean_colour.inputs = []
        results[batch_size] = evaluate_benchmark(samples, patch_fn, mean_colour, torch.eye(3), num_classes=3,
                                                 with_background=False, thresholds=[], short_side=16, window=16,
                                                 stride=8, batch_size=batch_size)
        assert sum(calls) == 2 + 4 + 2 + 1 and all(n == batch_size for n in calls[:-1])
        assert [x.shape[0] for x in mean_colour.inputs] == [min(batch_size, 4 - i) for i in range(0, 4, batch_size)]
    first = results[1]
    for result in results.values():
        assert result["miou"] == first["miou"] and result["dominant_class_top1"] == first["dominant_class_top1"]
        assert (result["counts"].intersection == first["counts"].intersection).all()
        assert (result["counts"].union == first["counts"].union).all()


def test_evaluate_benchmark_errors_name_the_sample():
    image = coloured([[A, B], [C, D]])
    common = dict(num_classes=3, with_background=True, thresholds=[0.5], short_side=2, window=2, stride=1)
    with pytest.raises(DataError, match="'bad'.*expected equal"):
        evaluate_benchmark([("bad", image, labels([[0, 1, 2]]))], pixel_colours, mean_colour,
                           torch.eye(3)[:2], **common)
    with pytest.raises(DataError, match="'wild'.*target labels"):
        evaluate_benchmark([("wild", image, labels([[0, 1], [7, 2]]))], pixel_colours, mean_colour,
                           torch.eye(3)[:2], **common)
    with pytest.raises(ValueError, match="num_classes=3"):
        evaluate_benchmark([], pixel_colours, mean_colour, torch.eye(3), **common)
    with pytest.raises(ValueError, match="threshold"):
        evaluate_benchmark([], pixel_colours, mean_colour, torch.eye(3)[:2], **{**common, "thresholds": []})


def test_evaluate_benchmark_empty_split():
    result = evaluate_benchmark([], pixel_colours, mean_colour, torch.eye(3), num_classes=3,
                                with_background=False, thresholds=[], short_side=2, window=2, stride=1)
    assert result["images"] == 0 and result["classified"] == 0 and result["dominant_class_top1"] is None
