import pytest
import torch
import torchvision.transforms.v2.functional as F

from pipeline.datasets.augment import TrainAugment, adjust_hue


LABEL_VALUES = (1, 9, 130)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _random_pair(seed, h, w):
    g = _gen(seed)
    image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
    values = torch.tensor(LABEL_VALUES, dtype=torch.uint8)
    label = values[torch.randint(0, len(LABEL_VALUES), (h, w), generator=g)]
    return image, label


@pytest.mark.parametrize("h,w", [(20, 30), (64, 64), (90, 200), (300, 70)])
def test_shapes_dtypes_and_label_values(h, w):
    aug = TrainAugment(crop=48)
    for seed in range(4):
        image, label = _random_pair(seed, h, w)
        out_image, out_label = aug(image, label, _gen(seed))
        assert out_image.shape == (3, 48, 48) and out_image.dtype == torch.uint8
        assert out_label.shape == (48, 48) and out_label.dtype == torch.int64
        # nearest resampling and ignore padding only: no new label values
        assert set(out_label.unique().tolist()) <= {*LABEL_VALUES, 255}


def test_scale_one_fits_the_whole_image_inside_the_crop_and_pads_with_ignore():
    # 40x100 image, crop 50: scale 1 means the long side becomes 50 -> 20x50, then padded.
    image = torch.full((3, 40, 100), 200, dtype=torch.uint8)
    label = torch.ones(40, 100, dtype=torch.uint8)
    label[:, 50:] = 2
    aug = TrainAugment(crop=50, scale_range=(1.0, 1.0))
    for seed in range(5):
        out_image, out_label = aug(image, label, _gen(seed))
        assert (out_label[20:] == 255).all() and (out_image[:, 20:] == 0).all()
        assert (out_image[:, :20] > 0).all()
        top = out_label[:20]
        assert (top == 1).sum() == 25 * 20 and (top == 2).sum() == 25 * 20


def test_scale_range_multiplies_the_fit_inside_ratio():
    # crop 30, 40x100 at scale 2: r = min(30/40, 30/100) * 2 = 0.6 -> 24x60, padded to 30 rows.
    # (A short-side convention would give r = 1.5 and no padding.)
    label = torch.zeros(40, 100, dtype=torch.uint8)
    aug = TrainAugment(crop=30, scale_range=(2.0, 2.0))
    for seed in range(5):
        image, _ = _random_pair(seed, 40, 100)
        _, out_label = aug(image, label, _gen(seed))
        assert (out_label[:24] == 0).all() and (out_label[24:] == 255).all()


def test_crop_is_redrawn_until_it_holds_a_labelled_pixel():
    # 64x256 at scale 1 of crop 64 keeps its size; only a 16-wide band is labelled.
    image = torch.zeros(3, 64, 256, dtype=torch.uint8)
    label = torch.full((64, 256), 255, dtype=torch.uint8)
    label[:, 200:216] = 3
    retry, once = TrainAugment(64, (4.0, 4.0), max_crop_tries=30), TrainAugment(64, (4.0, 4.0), max_crop_tries=1)
    assert all((retry(image, label, _gen(s))[1] == 3).any() for s in range(20))
    assert not all((once(image, label, _gen(s))[1] == 3).any() for s in range(20))


def test_all_ignore_label_still_returns_a_crop():
    image, _ = _random_pair(0, 30, 30)
    out_image, out_label = TrainAugment(16)(image, torch.full((30, 30), 255, dtype=torch.uint8), _gen(0))
    assert out_image.shape == (3, 16, 16) and (out_label == 255).all()


def test_reproducible_from_the_generator():
    image, label = _random_pair(7, 60, 90)
    aug = TrainAugment(32)
    a, b = aug(image, label, _gen(3)), aug(image, label, _gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    outputs = {aug(image, label, _gen(s))[0].float().sum().item() for s in range(8)}
    assert len(outputs) > 4


def test_colour_jitter_changes_colours_but_not_geometry():
    # a constant image at scale 1 with a square crop: only colour jitter can change it
    image = torch.full((3, 32, 32), 100, dtype=torch.uint8)
    image[0] = 180
    label = torch.ones(32, 32, dtype=torch.uint8)
    aug = TrainAugment(32, (1.0, 1.0))
    outs = [aug(image, label, _gen(s))[0] for s in range(16)]
    assert all((o == o[:, :1, :1]).all() for o in outs)  # still constant per channel
    assert len({tuple(o[:, 0, 0].tolist()) for o in outs}) > 4


def every_kind_of_pixel() -> torch.Tensor:
    """3 x 1 x N uint8: a grid of colours, and every colour with two equal channels (greys, and the ties that
    decide torchvision's hue formula)."""
    levels = torch.tensor([0, 1, 2, 3, 127, 128, 129, 252, 253, 254, 255, *range(5, 250, 6)])
    grid = torch.cartesian_prod(levels, levels, levels)
    a, b = torch.cartesian_prod(torch.arange(256), torch.arange(256)).T
    ties = torch.cat([torch.stack(c, 1) for c in ((a, a, b), (a, b, a), (b, a, a))])
    return torch.cat([grid, ties]).T.reshape(3, 1, -1).to(torch.uint8)


@pytest.mark.parametrize("factor", [-18 / 360, 18 / 360, -0.5, 0.5, 0.0, -1e-8, 0.0123, 1 / 6])
def test_hue_is_torchvisions_bit_for_bit(factor):
    pixels = every_kind_of_pixel()
    assert torch.equal(adjust_hue(pixels, factor), F.adjust_hue(pixels, factor))


def test_hue_is_torchvisions_on_random_images():
    g = _gen(0)
    for h, w in [(97, 131), (1, 1), (300, 7)]:
        planar = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        interleaved = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g).permute(2, 0, 1)  # as decoded
        for image in (planar, interleaved):
            factor = float(torch.empty(()).uniform_(-0.5, 0.5, generator=g))
            assert torch.equal(adjust_hue(image, factor), F.adjust_hue(image, factor))


@pytest.mark.slow
def test_hue_is_torchvisions_on_every_colour():
    colours = torch.arange(1 << 24, dtype=torch.int32)
    rgb = torch.stack([colours >> 16, colours >> 8 & 255, colours & 255]).to(torch.uint8)
    for factor in (-18 / 360, 18 / 360, 0.0077):
        for part in rgb.split(1 << 20, dim=1):
            image = part.reshape(3, 1024, 1024)
            assert torch.equal(adjust_hue(image, factor), F.adjust_hue(image, factor))
