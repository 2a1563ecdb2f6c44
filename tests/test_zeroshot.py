import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from pipeline.datasets.specs import DataError
from pipeline.evaluation.zeroshot import (
    class_embeddings, classify, dense_scores, dominant_class, evaluate_benchmark, predict, slide_windows)


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
    assert result["miou"][0]["miou"] == pytest.approx((2 / 3 + 3 / 5 + 2 / 3) / 3)
    assert result["miou"][1]["miou"] == pytest.approx((2 / 5 + 1 / 2 + 2 / 3) / 3)
    # dominant classes: "one" -> label 1 (embedding 0), "two" -> label 2 (embedding 1),
    # "void" skipped; centre crops [[A, A], [B, D]] -> 0 (right), [[C, B], [D, A]] -> 0 (wrong)
    assert result["classified"] == 2 and result["top1"] == 0.5
    assert [tuple(x.shape) for x in mean_colour.inputs] == [(1, 3, 2, 2)] * 2
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
    assert result["top1"] == 1.0


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
    assert result["images"] == 0 and result["classified"] == 0 and result["top1"] is None
