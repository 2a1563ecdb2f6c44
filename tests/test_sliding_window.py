import math

import pytest
import torch

from pipeline.evaluation.sliding_window import (predict, predictions, resize_short_side, sliding_window_logits,
                                               window_starts)
from pipeline.evaluation.windows import batched, upsample_logits
from pipeline.networks.segmenter import build_segmenter


def test_reference_examples():
    assert window_starts(683, 512) == [0, 171]
    assert window_starts(2048, 1024) == [0, 1024]
    assert window_starts(512, 512) == [0]


@pytest.mark.parametrize("crop", [512, 1024, 518])
def test_windows_cover_the_length_with_even_overlap(crop):
    for length in range(crop, 6 * crop, 7):
        starts = window_starts(length, crop)
        n = math.ceil(length / crop)
        assert len(starts) == n and starts[0] == 0 and starts[-1] + crop == length
        assert all(0 <= b - a <= crop for a, b in zip(starts, starts[1:]))
        if n > 1 and crop != 518:  # the reference's float formula, where it does not truncate
            assert starts == [int(j * (crop - (n * crop - length) / (n - 1))) for j in range(n)]


def test_exact_arithmetic_where_float_truncation_would_leave_a_gap():
    assert window_starts(4107, 518)[-1] == 4107 - 518


def test_resize_short_side():
    image = torch.randint(0, 256, (3, 256, 342), dtype=torch.uint8)
    assert resize_short_side(image, 512).shape == (3, 512, 684)
    assert resize_short_side(image.transpose(1, 2), 512).shape == (3, 684, 512)
    assert resize_short_side(image, 512).dtype == torch.uint8
    assert torch.equal(resize_short_side(image, 256), image)


def window_index_model(x):
    """Channel 0 copies the red input (0..255), shifted by 1000 per window index."""
    index = torch.arange(x.shape[0], dtype=torch.float32).view(-1, 1, 1, 1)
    return torch.cat([x[:, :1] * 255 + 1000 * index, -index.expand(-1, 1, *x.shape[-2:])], dim=1)


@pytest.mark.parametrize("portrait", [False, True])
def test_overlap_is_averaged(portrait):
    image = torch.randint(0, 256, (3, 64, 86), dtype=torch.uint8)
    if portrait:
        image = image.transpose(1, 2)
    scores = sliding_window_logits(window_index_model, image, crop=64, num_classes=2)
    assert scores.shape == (2, *image.shape[-2:]) and scores.dtype == torch.float32
    position = torch.arange(86, dtype=torch.float32)
    windows = torch.where(position < 22, 0.0, torch.where(position < 64, 0.5, 1.0))  # windows at 0 and 22
    expected = image[0].float() + 1000 * (windows.view(-1, 1) if portrait else windows)
    torch.testing.assert_close(scores[0], expected)
    torch.testing.assert_close(scores[1], -(windows.view(-1, 1) if portrait else windows).expand_as(scores[1]))


def test_disjoint_windows_at_native_cityscapes_size():
    image = torch.zeros(3, 1024, 2048, dtype=torch.uint8)
    scores = sliding_window_logits(window_index_model, image, crop=1024, num_classes=2)
    assert torch.all(scores[0, :, :1024] == 0) and torch.all(scores[0, :, 1024:] == 1000)


def test_small_image_is_upscaled_and_mapped_back():
    image = torch.randint(0, 256, (3, 32, 43), dtype=torch.uint8)
    scores = sliding_window_logits(window_index_model, image, crop=64, num_classes=2)
    assert scores.shape == (2, 32, 43)
    assert torch.all(scores[1, :, :10] == 0) and torch.all(scores[1, :, -10:] == -1)
    assert torch.all(scores[1, :, 1:] <= scores[1, :, :-1])


def test_image_of_crop_size_equals_a_direct_forward():
    torch.manual_seed(0)
    model = build_segmenter("linear", 5, timm_name="vit_tiny_patch16_224", img_size=64, patch_size=16,
                            timm_kwargs=dict(embed_dim=32, depth=2, num_heads=2)).eval()
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    scores = sliding_window_logits(model, image, crop=64, num_classes=5)
    with torch.no_grad():
        direct = upsample_logits(model(image[None].float() / 255), (64, 64))[0]
    torch.testing.assert_close(scores, direct)
    labels = predict(model, image, crop=64, num_classes=5)
    assert labels.dtype == torch.int64 and torch.equal(labels, direct.argmax(0))


def test_wrong_number_of_classes_is_reported():
    with pytest.raises(ValueError, match="3"):
        sliding_window_logits(window_index_model, torch.zeros(3, 64, 64, dtype=torch.uint8), crop=64, num_classes=3)


def test_batched_fills_each_forward_across_jobs_and_hands_outputs_back_in_order():
    sizes = [2, 3, 1, 5, 2]
    jobs = [(f"job{i}", torch.arange(n) + 10 * i) for i, n in enumerate(sizes)]
    calls = []

    def forward(x):
        calls.append(x.tolist())
        return -x

    out = list(batched(jobs, forward, 4))
    assert [len(c) for c in calls] == [4, 4, 4, 1]
    assert [job for job, _ in out] == [job for job, _ in jobs]
    assert all(torch.equal(y, -x) for (_, y), (_, x) in zip(out, jobs))
    with pytest.raises(ValueError, match="2 outputs for 3 inputs"):
        list(batched([("a", torch.zeros(3))], lambda x: x[:2], 4))


def test_predictions_of_several_images_equal_predict_at_any_batch_size():
    torch.manual_seed(0)
    model = build_segmenter("linear", 5, timm_name="vit_tiny_patch16_224", img_size=64, patch_size=16,
                            timm_kwargs=dict(embed_dim=32, depth=2, num_heads=2)).eval()
    g = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 256, size, dtype=torch.uint8, generator=g)
              for size in [(3, 64, 150), (3, 90, 64), (3, 40, 50), (3, 64, 64), (3, 70, 300)]]
    expected = [predict(model, image, 64, 5) for image in images]
    for batch_size in (1, 3, 16):
        seen = []

        def spy(x):
            seen.append(x.shape[0])
            return model(x)

        got = list(predictions(spy, enumerate(images), crop=64, num_classes=5, batch_size=batch_size))
        assert [i for i, _ in got] == list(range(len(images)))
        assert all(torch.equal(p, e) for (_, p), e in zip(got, expected))
        assert sum(seen) == 3 + 2 + 2 + 1 + 5 and all(n == batch_size for n in seen[:-1])
