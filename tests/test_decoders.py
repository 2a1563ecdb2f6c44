import pytest
import torch

from pipeline.networks.decoders import DECODERS, LinearDecoder
from pipeline.evaluation.windows import upsample_logits
from pipeline.networks.segmenter import Segmenter, build_segmenter

TINY = dict(embed_dim=32, depth=2, num_heads=2)


def test_linear_decoder_is_the_same_linear_map_on_every_token():
    torch.manual_seed(0)
    decoder = LinearDecoder(embed_dim=8, num_classes=5, grid_size=(2, 3))
    tokens = torch.randn(4, 6, 8)
    logits = decoder(tokens)
    assert logits.shape == (4, 5, 2, 3)
    weight, bias = decoder.head.weight, decoder.head.bias
    for n in range(6):  # token n sits at row n // 3, column n % 3
        torch.testing.assert_close(logits[:, :, n // 3, n % 3], tokens[:, n] @ weight.T + bias)
    assert [type(m).__name__ for m in decoder.modules()] == ["LinearDecoder", "Linear"]


def test_build_segmenter_gives_token_resolution_logits():
    segmenter = build_segmenter("linear", 7, timm_name="vit_tiny_patch16_224", img_size=64, patch_size=8,
                                timm_kwargs=TINY)
    assert isinstance(segmenter, Segmenter) and DECODERS["linear"] is LinearDecoder
    x = torch.rand(2, 3, 64, 64)
    logits = segmenter(x)
    assert logits.shape == (2, 7, 8, 8)
    torch.testing.assert_close(logits, segmenter.decoder(segmenter.encoder(x)))
    assert upsample_logits(logits, (64, 64)).shape == (2, 7, 64, 64)


def test_unknown_decoder_names_the_choices():
    with pytest.raises(ValueError, match=r"'mlp'.*'linear'"):
        build_segmenter("mlp", 7, timm_name="vit_tiny_patch16_224", img_size=64, patch_size=8)


def test_upsample_logits_is_bilinear_without_corner_alignment():
    logits = torch.tensor([[[[0.0, 1.0]]]])
    assert upsample_logits(logits, (1, 4)).flatten().tolist() == [0.0, 0.25, 0.75, 1.0]


M2F_TINY = dict(hidden_dim=16, num_queries=5, num_blocks=2, num_heads=2, ffn_dim=32)


def test_mask2former_segmenter_scores_at_input_size_from_one_forward(monkeypatch):
    segmenter = build_segmenter("mask2former", 4, decoder_kwargs=M2F_TINY, timm_name="vit_tiny_patch16_224",
                                img_size=64, patch_size=16, timm_kwargs=TINY)
    x = torch.rand(3, 3, 64, 64)
    predictions = segmenter(x)
    assert len(predictions) == 3 and predictions[-1].mask_logits.shape == (3, 5, 4, 4)
    calls = []
    forward = segmenter.encoder.forward
    monkeypatch.setattr(segmenter.encoder, "forward", lambda images: calls.append(1) or forward(images))
    scores = segmenter.scores(x)
    assert len(calls) == 1 and scores.shape == (3, 4, 64, 64)
    torch.testing.assert_close(scores, segmenter.decoder.semantic_scores(predictions[-1], (64, 64)))


def test_linear_segmenter_scores_are_its_logits():
    segmenter = build_segmenter("linear", 7, timm_name="vit_tiny_patch16_224", img_size=64, patch_size=8,
                                timm_kwargs=TINY)
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(segmenter.scores(x), segmenter(x))


def test_linear_logits_are_contiguous_and_the_loss_is_unchanged():
    """Issue: the head's channels-last strides made the loss copy the full-size logits. Contiguous low-resolution
    logits give the same loss (within float rounding) as the strided ones did, and so do their gradients."""
    from pipeline.training.criteria import segmentation_loss

    torch.manual_seed(0)
    decoder = LinearDecoder(24, 7, (6, 6))
    tokens = torch.randn(2, 36, 24, requires_grad=True)
    target = torch.randint(0, 7, (2, 96, 96))
    logits = decoder(tokens)
    assert logits.is_contiguous()
    strided = decoder.head(tokens).transpose(1, 2).reshape(2, 7, 6, 6)
    assert not strided.is_contiguous()
    loss, old = segmentation_loss(logits, target, 255), segmentation_loss(strided, target, 255)
    assert loss.item() == pytest.approx(old.item(), abs=1e-6)
    grad, old_grad = torch.autograd.grad(loss, tokens)[0], torch.autograd.grad(old, tokens)[0]
    torch.testing.assert_close(grad, old_grad, rtol=0, atol=1e-6)
