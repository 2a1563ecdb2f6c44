import numpy as np
import pytest
import torch

from pipeline.evaluation.miou import ConfusionMatrix

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


def test_rejects_labels_outside_the_classes():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="target"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))
    assert cm.matrix.sum() == 0
