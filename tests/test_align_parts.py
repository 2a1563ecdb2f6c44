import math

import pytest
import torch
from torchvision.io import encode_jpeg

from pipeline.datasets.caption_augment import full_view, random_resized_crop, random_resized_crop_box
from pipeline.config import parse_params
from pipeline.datasets.caption_shards import CaptionSample
from pipeline.training.align import CaptionView, MicroBatch, build_trainer, param_groups, train_step, warmup_cosine
from pipeline.training.feature_cache import DiskFeatureCache, FeatureCache


def test_crop_boxes_follow_scale_and_ratio():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(512, 512, (0.9, 1.0), g)
        assert 0 <= top <= 512 - h and 0 <= left <= 512 - w
        assert 0.9 * 512 * 512 * 0.98 <= h * w <= 512 * 512
        assert 3 / 4 * 0.97 <= w / h <= 4 / 3 * 1.03


def test_crop_falls_back_to_the_center_when_no_draw_fits():
    g = torch.Generator().manual_seed(0)
    top, left, h, w = random_resized_crop_box(10, 100, (1.0, 1.0), g)  # a 10:1 image cannot hold ratio <= 4/3 at 100 %
    assert (h, w) == (10, 13) and (top, left) == (0, (100 - 13) // 2)


def test_views_have_the_training_size():
    image = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    assert random_resized_crop(image, 16, (0.9, 1.0), torch.Generator().manual_seed(1)).shape == (3, 16, 16)
    view = full_view(image, 16)
    assert view.dtype == torch.uint8 and torch.equal(view, full_view(image, 16))


def test_warmup_then_cosine_like_open_clip():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    schedule = warmup_cosine(opt, steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * e / 8)) for e in range(8)]
    assert lrs == pytest.approx(expected)


def test_weight_decay_exclusions():
    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)
            self.ln_final = torch.nn.LayerNorm(4)
            self.token_embedding = torch.nn.Embedding(10, 4)
            self.logit_scale = torch.nn.Parameter(torch.ones(()))

    model = Toy()
    no_decay, decay = param_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["proj.weight", "token_embedding.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["ln_final.bias", "ln_final.weight",
                                                                "logit_scale", "proj.bias"]
    assert (no_decay["weight_decay"], decay["weight_decay"]) == (0.0, 0.2)


def _compute_counter():
    calls = []

    def compute(images):
        calls.append(len(images))
        flat = images.float().flatten(1)
        return flat[:, :4], flat[:, :8].reshape(len(images), 2, 4)

    return calls, compute


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_feature_cache_computes_each_image_once(tmp_path, kind):
    cache = FeatureCache() if kind == "memory" else DiskFeatureCache(tmp_path, torch.device("cpu"))
    calls, compute = _compute_counter()
    images = torch.arange(3 * 8, dtype=torch.uint8).reshape(3, 8)
    first = cache.features(["a", "b", "c"], images, compute)
    second = cache.features(["c", "a", "d"], images[[2, 0, 1]], compute)
    assert calls == [3, 1] and (cache.hits, cache.misses) == (2, 4)
    assert torch.equal(second[0][0], first[0][2]) and torch.equal(second[1][1], first[1][0])
    if kind == "disk":  # a new process finds the files
        again = DiskFeatureCache(tmp_path, torch.device("cpu"))
        assert torch.equal(again.features(["b"], images[:1], compute)[0][0], first[0][1]) and calls == [3, 1]


def test_cached_view_decodes_only_images_not_handed_out_in_an_earlier_batch():
    """The feature cache holds an image's features once its batch was read: later visits skip the decode."""
    jpeg = encode_jpeg(torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8)).numpy().tobytes()
    view = CaptionView(16, (0.9, 1.0), cached=True, batch_size=2)
    empty = torch.zeros(1, dtype=torch.int64)
    # batches of 2: [a a] [a b] [c a] [b c]; a skipped image is not a JPEG, so decoding it would raise
    expected = [("a", True), ("a", True), ("a", False), ("b", True), ("c", True), ("a", False), ("b", False),
                ("c", False)]
    for key, real in expected:
        sample = CaptionSample(f"{key}_0", key, jpeg if real else b"not a jpeg", empty, empty, empty)
        image, *_, image_key, is_real = view(sample, torch.Generator())
        assert image.shape == (3, 16, 16) and (image_key, is_real) == (key, real)
        assert torch.equal(image, full_view(sample.image, 16) if real else torch.zeros_like(image))


def test_feature_cache_refuses_a_blank_image_it_lacks():
    cache = FeatureCache()
    _, compute = _compute_counter()
    with pytest.raises(RuntimeError, match=r"no features for \['b'\]"):
        cache.features(["a", "b"], torch.zeros(2, 8, dtype=torch.uint8), compute, real=[True, False])


@pytest.mark.parametrize("concept_weight", [0.0, 0.05], ids=["lit", "simzss"])
@pytest.mark.parametrize("micro_batches", [2, 4])
def test_gradcache_accumulation_takes_the_same_step_as_the_whole_batch(raw_params, concept_weight, micro_batches):
    """A contrastive loss over micro-batches is not the batch's loss; the accumulation gives the batch's gradient."""
    params = parse_params(raw_params)
    g = torch.Generator().manual_seed(0)
    batch, dim = 8, 16
    image = torch.nn.functional.normalize(torch.randn(batch, dim, generator=g), dim=-1)
    patches = torch.nn.functional.normalize(torch.randn(batch, 9, dim, generator=g), dim=-1)
    tokens = torch.randint(1, 400, (batch, 77), generator=g)
    concepts, spans = torch.full((batch, 32), -1), torch.zeros(batch, 32, 16, dtype=torch.long)
    concepts[:, 0], spans[:, 0, 0], spans[:, 0, 1] = torch.arange(batch) % 3, 2, 3
    concepts[::2, 1], spans[::2, 1, 0] = 4, 5

    def gradient(parts: int) -> tuple[float, torch.Tensor]:
        torch.manual_seed(1)
        trainer = build_trainer(params.align, params.text_tower, dim, "fp32", torch.device("cpu"))
        before = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=1.0)  # the step is the gradient
        trainer.schedule = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda step: 1.0)
        size = batch // parts
        pieces = [MicroBatch(image[i:i + size], patches[i:i + size], tokens[i:i + size], concepts[i:i + size],
                             spans[i:i + size]) for i in range(0, batch, size)]
        terms = train_step(trainer, pieces, params.align, concept_weight, "fp32", "test")
        return terms["loss"], before - torch.cat([p.detach().flatten() for p in trainer.model.parameters()])

    whole_loss, whole = gradient(1)
    loss, accumulated = gradient(micro_batches)
    assert loss == pytest.approx(whole_loss, rel=1e-6)
    assert whole.norm() > 0.1
    assert (accumulated - whole).norm() / whole.norm() < 1e-5  # measured 5e-7: float sums in another order
