from fractions import Fraction

import numpy as np
import pytest
import torch

from pipeline.evaluation.miou import ConfusionMatrix, chance_miou

IGNORE = 255


def numpy_ious(preds, targets, num_classes):
    """Per-class IoU by set counting over all non-ignored pixels, NaN where the union is empty."""
    pred = np.concatenate([p.ravel() for p in preds])
    target = np.concatenate([t.ravel() for t in targets])
    valid = target != IGNORE
    ious = []
    for c in range(num_classes):
        inter = np.sum((pred == c) & (target == c) & valid)
        union = np.sum(((pred == c) | (target == c)) & valid)
        ious.append(inter / union if union else np.nan)
    return np.array(ious), np.sum((pred == target) & valid) / np.sum(valid)


def random_maps(rng, shape, num_classes, present):
    target = rng.choice(present, size=shape)
    target[rng.random(shape) < 0.2] = IGNORE
    pred = np.where(rng.random(shape) < 0.6, target, rng.choice(present, size=shape))
    pred[target == IGNORE] = rng.integers(0, num_classes, size=int(np.sum(target == IGNORE)))
    return pred, target


def test_matches_numpy_on_random_maps_with_ignore_and_absent_classes():
    rng = np.random.default_rng(0)
    num_classes = 12
    present = [0, 1, 2, 3, 5, 6, 8, 9, 10]  # 4, 7 and 11 never occur outside ignored pixels
    maps = [random_maps(rng, (2, 37, 53), num_classes, present) for _ in range(3)]
    cm = ConfusionMatrix(num_classes, ignore_index=IGNORE)
    for pred, target in maps:
        cm.update(torch.from_numpy(pred), torch.from_numpy(target).to(torch.uint8))

    expected_iou, expected_acc = numpy_ious(*zip(*maps), num_classes)
    np.testing.assert_allclose(cm.iou().numpy(), expected_iou, equal_nan=True)
    assert np.isnan(expected_iou[[4, 7, 11]]).all()
    assert cm.miou() == pytest.approx(np.nanmean(expected_iou))
    assert cm.miou(absent_as_zero=True) == pytest.approx(np.nan_to_num(expected_iou).mean())
    assert cm.pixel_accuracy() == pytest.approx(expected_acc)

    expected_matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for pred, target in maps:
        for p, t in zip(pred.ravel(), target.ravel()):
            if t != IGNORE:
                expected_matrix[t, p] += 1
    assert cm.matrix.dtype == torch.int64
    np.testing.assert_array_equal(cm.matrix.numpy(), expected_matrix)


def test_hand_computed_example():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, IGNORE]))
    iou = cm.iou()
    assert iou[:2].tolist() == [0.5, 0.5] and torch.isnan(iou[2])
    assert cm.miou() == 0.5
    assert cm.miou(absent_as_zero=True) == pytest.approx(1 / 3)
    assert cm.pixel_accuracy() == pytest.approx(2 / 3)


def test_labels_outside_the_classes_are_reported_when_read():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, IGNORE]))
    cm.update(torch.tensor([0, 7]), torch.tensor([0, IGNORE]))  # an ignored pixel's prediction is not checked
    assert cm.matrix.sum() == 2
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 3, -1]))
    with pytest.raises(ValueError, match=r"update 2: target labels .* 2 target and 0 predicted pixels"):
        cm.miou()
    with pytest.raises(ValueError, match="update 2"):  # and on every later read
        cm.update(torch.tensor([0]), torch.tensor([0]))
        cm.matrix
    with pytest.raises(ValueError, match=r"'c': target labels"):
        cm.image_counts(["a", "b", "c", "d"])
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([3]), torch.tensor([2]))
    with pytest.raises(ValueError, match="0 target and 1 predicted"):
        cm.pixel_accuracy()
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(3).update(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))


def test_pixel_accuracy_is_exact_in_float64_beyond_float32_counts():
    # 2**25 + 3 labelled pixels, 2**24 + 1 of them right: float32 cannot hold either count.
    cm = ConfusionMatrix(2)
    cm.matrix[0, 0], cm.matrix[1, 1], cm.matrix[0, 1] = 2**24 + 1, 0, 2**24 + 2
    exact = float(Fraction(2**24 + 1, 2**25 + 3))
    assert cm.pixel_accuracy() == exact
    assert cm.pixel_accuracy() == cm.iou()[0].item() == exact  # class 0's IoU has the same two counts


def test_per_image_counts_are_set_counts_that_sum_to_the_matrix_and_give_its_miou_exactly():
    rng = np.random.default_rng(1)
    num_classes = 12
    present = [0, 1, 2, 3, 5, 6, 8, 9, 10]
    maps = [random_maps(rng, (31 + i, 17 * (i + 1)), num_classes, present) for i in range(5)]
    cm = ConfusionMatrix(num_classes, ignore_index=IGNORE)
    for pred, target in maps:
        cm.update(torch.from_numpy(pred), torch.from_numpy(target).to(torch.uint8))
    counts = cm.image_counts(f"img{i}" for i in range(5))
    assert list(counts.keys) == [f"img{i}" for i in range(5)]
    for row, (pred, target) in enumerate(maps):
        valid = target != IGNORE
        for c in range(num_classes):
            assert counts.intersection[row, c] == np.sum((pred == c) & (target == c) & valid)
            assert counts.union[row, c] == np.sum(((pred == c) | (target == c)) & valid)
    matrix = cm.matrix.numpy()
    np.testing.assert_array_equal(counts.intersection.sum(0), np.diag(matrix))
    np.testing.assert_array_equal(counts.union.sum(0), matrix.sum(0) + matrix.sum(1) - np.diag(matrix))
    assert counts.miou() == cm.miou()  # exactly: the headline is the bootstrap's rule on the same integer sums
    expected_iou, _ = numpy_ious(*zip(*maps), num_classes)
    assert cm.miou() == pytest.approx(np.nanmean(expected_iou), rel=1e-15)
    with pytest.raises(ValueError, match="4 keys for 5 updates"):
        cm.image_counts(["a", "b", "c", "d"])
    assert ConfusionMatrix(3).image_counts([]).union.shape == (0, 3)


def test_chance_miou_by_hand():
    """Targets 3 px of class 0 and 1 px of class 1, K = 2: expected confusion [[1.5, 1.5], [0.5, 0.5]],
    IoUs 1.5 / 3.5 and 0.5 / 2.5."""
    matrix = torch.tensor([[2, 1], [1, 0]])  # the predictions do not matter, only the targets' row sums
    assert chance_miou(matrix) == pytest.approx((1.5 / 3.5 + 0.5 / 2.5) / 2, abs=1e-12)


def test_chance_miou_matches_random_guessing():
    """Against uniformly random predictions on a million pixels of skewed classes, one absent."""
    g = torch.Generator().manual_seed(0)
    k = 6
    target = torch.multinomial(torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03, 0.0]), 1_000_000, True, generator=g)
    guessed = ConfusionMatrix(k)
    guessed.update(torch.randint(0, k, target.shape, generator=g), target)
    assert chance_miou(guessed.matrix) == pytest.approx(guessed.miou(), abs=2e-3)
