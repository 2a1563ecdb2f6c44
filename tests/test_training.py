import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.training.criteria import build_criterion, segmentation_loss
from pipeline.training.mask_classification import Mask2FormerLoss, targets_from_labels
from pipeline.training.optim import build_optimizer, build_schedule, count_trainable
from pipeline.training.precision import resolve_precision
from pipeline.training.toy_objectives.mim import patchify
from pipeline.training.toy_objectives.supervised import presence_targets


def test_segmentation_loss_is_mean_ce_over_labelled_pixels_of_upsampled_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 4)
    target = torch.randint(0, 5, (2, 16, 16))
    target[0, :8] = 255
    up = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    log_probs = up.log_softmax(1)
    valid = target != 255
    picked = log_probs.permute(0, 2, 3, 1)[valid].gather(1, target[valid][:, None]).squeeze(1)
    assert segmentation_loss(logits, target, 255).item() == pytest.approx(-picked.mean().item(), rel=1e-5)


def test_segmentation_loss_without_labelled_pixels_is_zero_not_nan():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 8, 8), 255), 255)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_optimizer_groups_learning_rates_and_decay_on_every_parameter():
    encoder, decoder = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), nn.Linear(4, 2)
    optimizer = build_optimizer(encoder, decoder, lr=1e-4, encoder_lr_multiplier=0.1, weight_decay=0.05)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["decoder"]["lr"] == pytest.approx(1e-4) and groups["encoder"]["lr"] == pytest.approx(1e-5)
    assert all(g["weight_decay"] == 0.05 for g in optimizer.param_groups)
    counted = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert counted == sum(p.numel() for p in [*encoder.parameters(), *decoder.parameters()])


def test_poly_schedule_decays_to_zero_over_optimizer_steps():
    encoder, decoder = nn.Linear(2, 2), nn.Linear(2, 2)
    optimizer = build_optimizer(encoder, decoder, lr=1.0, encoder_lr_multiplier=0.1, weight_decay=0.0)
    schedule = build_schedule(optimizer, steps=10, power=0.9)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen == pytest.approx([(1 - k / 10) ** 0.9 for k in range(10)])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.0)


def test_count_trainable_ignores_frozen_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    assert count_trainable(model) == 4 * 2 + 2


def test_precision_resolution():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", torch.device("cpu"))


def test_presence_targets_per_cell_match_a_direct_count():
    torch.manual_seed(0)
    labels = torch.randint(0, 6, (3, 8, 12))
    labels[0, :4, :4] = 255
    labels[1] = 255
    targets = presence_targets(labels, num_classes=6, ignore_index=255, cell=4)
    assert targets.shape == (3, 6, 2, 3)
    for b in range(3):
        for r in range(2):
            for c in range(3):
                block = labels[b, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4]
                expected = [float((block == k).any()) for k in range(6)]
                assert targets[b, :, r, c].tolist() == expected
    whole = presence_targets(labels, num_classes=6, ignore_index=255, cell=8)
    assert whole.shape == (3, 6, 1, 1) and whole[1].sum() == 0


def test_patchify_matches_token_order_of_a_patch_embedding():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 8, 12)
    patches = patchify(images, 4)
    assert patches.shape == (2, 6, 48)
    # Patch (row 1, col 2) is token 1 * 3 + 2, pixels in (y, x, channel) order.
    expected = images[1, :, 4:8, 8:12].permute(1, 2, 0).reshape(-1)
    assert torch.equal(patches[1, 5], expected)


def tiny_encoder():
    from pipeline.networks.encoder import Encoder

    return Encoder("vit_small_patch16_224", 32, 16, timm_kwargs={"img_size": 32, "embed_dim": 16, "depth": 1, "num_heads": 2})


def test_masked_image_objective_regresses_only_masked_patches():
    from pipeline.training.toy_objectives.mim import MaskedImageObjective

    torch.manual_seed(0)
    objective = MaskedImageObjective(tiny_encoder(), mask_ratio=0.5)
    images = torch.rand(2, 3, 32, 32)
    loss = objective(images, None, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and objective.mask_token.grad.abs().sum() > 0
    other = objective(images, None, torch.Generator().manual_seed(1))
    assert not torch.isclose(loss, other)


def test_supervised_objective_targets_regions_of_the_crop():
    from pipeline.training.toy_objectives.supervised import SupervisedObjective

    objective = SupervisedObjective(tiny_encoder(), num_classes=5, ignore_index=255, cell=16)
    labels = torch.full((2, 32, 32), 255)
    labels[:, :16, :16] = 3
    loss = objective(torch.rand(2, 3, 32, 32), labels, torch.Generator())
    loss.backward()
    assert torch.isfinite(loss)
    assert objective.seen.tolist() == [False, False, False, True, False]
    assert objective.head.weight.grad[[0, 1, 2, 4]].abs().sum() == 0


def test_criteria_wrap_each_decoders_loss(raw_params):
    from pipeline.config import parse_params
    from pipeline.networks.mask2former import Mask2FormerDecoder

    cfg = parse_params(raw_params).mask2former
    labels = torch.randint(0, 3, (2, 32, 32))
    labels[0, :4] = 255
    logits = torch.randn(2, 3, 4, 4)
    linear = build_criterion("linear", 3, 255, cfg, torch.device("cpu"))
    assert linear(logits, labels) == (segmentation_loss(logits, labels, 255), {})

    decoder = Mask2FormerDecoder(8, 3, (4, 4), hidden_dim=16, num_queries=5, num_blocks=cfg.num_blocks,
                                 num_heads=2, ffn_dim=32)
    predictions = decoder(torch.randn(2, 16, 8))
    torch.manual_seed(0)
    loss, terms = build_criterion("mask2former", 3, 255, cfg, torch.device("cpu"))(predictions, labels)
    torch.manual_seed(0)
    expected, all_terms = Mask2FormerLoss(3, **cfg.loss_kwargs)(predictions, targets_from_labels(labels, 255))
    torch.testing.assert_close(loss, expected)
    assert terms == {name: all_terms[f"layer{cfg.num_blocks}/{name}"].item() for name in ("ce", "bce", "dice")}
    with pytest.raises(ValueError, match="no training loss for decoder 'unet'"):
        build_criterion("unet", 3, 255, cfg, torch.device("cpu"))


def test_all_ignore_micro_batch_gives_zero_linear_loss_and_zero_gradients():
    # The crop is redrawn at most max_crop_tries times, so a micro-batch can hold no labelled pixel at all.
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    linear = build_criterion("linear", 3, 255, None, torch.device("cpu"))  # reads no Mask2Former params
    loss, terms = linear(logits, torch.full((2, 32, 32), 255))
    loss.backward()
    assert loss.item() == 0.0 and terms == {}
    assert torch.equal(logits.grad, torch.zeros_like(logits))
