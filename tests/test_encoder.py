import huggingface_hub.errors
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_patch_embed
from timm.models import get_pretrained_cfg

from pipeline.errors import CheckpointError
from pipeline.networks import encoder as encoder_module
from pipeline.networks.encoder import IMAGENET_MEAN, IMAGENET_STD, Encoder
from pipeline.networks.weights import save_state_dict

TINY = dict(embed_dim=32, depth=2, num_heads=2)
VIT = "vit_tiny_patch16_224"


def native(name=VIT, **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=0, **{**TINY, **kwargs})


def checkpoint_of(model, tmp_path, name="native.safetensors"):
    path = tmp_path / name
    save_state_dict(model, path)
    return path


def bicubic_grid(rows: torch.Tensor, old: int, new: int) -> torch.Tensor:
    """Independent reference: N x D rows on an old x old grid, resized to new x new."""
    grid = rows.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", antialias=True, align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)


@pytest.mark.parametrize("patch_size, grid", [(16, 8), (8, 16)])
def test_output_is_patch_tokens_without_prefix(patch_size, grid):
    encoder = Encoder(VIT, 128, patch_size, timm_kwargs=TINY)
    x = torch.rand(2, 3, 128, 128)
    tokens = encoder(x)
    assert encoder.grid_size == (grid, grid) and encoder.embed_dim == 32 and encoder.num_prefix_tokens == 1
    assert tokens.shape == (2, grid * grid, 32)
    full = encoder.model.forward_features((x - encoder.mean) / encoder.std)
    assert full.shape[1] == grid * grid + 1
    torch.testing.assert_close(tokens, full[:, 1:])
    with pytest.raises(AssertionError):  # the input size is strict
        encoder(torch.rand(1, 3, 144, 144))


def test_patch_size_must_divide_img_size():
    with pytest.raises(ValueError, match=r"img_size 100 .*patch_size 16"):
        Encoder(VIT, 100, 16, timm_kwargs=TINY)


def test_cls_pos_embed_row_kept_and_grid_resampled(tmp_path):
    model = native()
    encoder = Encoder(VIT, 128, 16, checkpoint=checkpoint_of(model, tmp_path), timm_kwargs=TINY)
    old, new = model.pos_embed.detach(), encoder.model.pos_embed.detach()
    assert new.shape == (1, 1 + 64, 32)
    torch.testing.assert_close(new[:, :1], old[:, :1], rtol=0, atol=0)
    torch.testing.assert_close(new[:, 1:], bicubic_grid(old[0, 1:], 14, 8))


def test_no_embed_class_resamples_every_row(tmp_path):
    model = native("deit3_base_patch16_384", img_size=224)
    assert model.no_embed_class and model.pos_embed.shape[1] == 196
    encoder = Encoder("deit3_base_patch16_384", 128, 16, checkpoint=checkpoint_of(model, tmp_path),
                      timm_kwargs={**TINY, "img_size": 224})
    torch.testing.assert_close(encoder.model.pos_embed.detach(), bicubic_grid(model.pos_embed.detach()[0], 14, 8))
    assert encoder.num_prefix_tokens == 1
    assert encoder(torch.rand(1, 3, 128, 128)).shape == (1, 64, 32)


def test_no_class_token_has_no_prefix(tmp_path):
    kwargs = {**TINY, "class_token": False, "global_pool": "avg"}
    model = native(**kwargs)
    encoder = Encoder(VIT, 128, 16, checkpoint=checkpoint_of(model, tmp_path), timm_kwargs=kwargs)
    assert encoder.num_prefix_tokens == 0
    torch.testing.assert_close(encoder.model.pos_embed.detach(), bicubic_grid(model.pos_embed.detach()[0], 14, 8))
    assert encoder(torch.rand(1, 3, 128, 128)).shape == (1, 64, 32)


def test_nhwc_pos_embed_and_nchw_features_are_flattened(tmp_path):
    kwargs = {**TINY, "img_size": 64, "window_size": 2, "global_attn_indexes": (1,), "neck_chans": 0}
    model = native("samvit_base_patch16", **kwargs)
    encoder = Encoder("samvit_base_patch16", 64, 8, checkpoint=checkpoint_of(model, tmp_path), timm_kwargs=kwargs)
    old = model.pos_embed.detach()
    expected = F.interpolate(old.permute(0, 3, 1, 2), size=(8, 8), mode="bicubic", antialias=True).permute(0, 2, 3, 1)
    torch.testing.assert_close(encoder.model.pos_embed.detach(), expected)
    x = torch.rand(2, 3, 64, 64)
    tokens = encoder(x)
    features = encoder.model.forward_features((x - encoder.mean) / encoder.std)
    assert features.shape == (2, 32, 8, 8) and tokens.shape == (2, 64, 32)
    torch.testing.assert_close(tokens[:, 8 * 3 + 5], features[:, :, 3, 5])


def smooth_image(size: int) -> torch.Tensor:
    torch.manual_seed(1)
    return F.interpolate(torch.rand(2, 3, 28, 28), size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def test_flexivit_patch_embed_matches_on_downsampled_input(tmp_path):
    model = native()
    with torch.no_grad():  # pretrained kernels are smooth; a random one would only test the pseudo-inverse's limits
        model.patch_embed.proj.weight.copy_(F.interpolate(torch.randn(32, 3, 4, 4), size=16, mode="bicubic"))
    path = checkpoint_of(model, tmp_path)
    p16 = Encoder(VIT, 224, 16, checkpoint=path, timm_kwargs=TINY)
    p8 = Encoder(VIT, 112, 8, checkpoint=path, timm_kwargs=TINY)
    assert p8.model.patch_embed.proj.kernel_size == (8, 8) and p8.model.patch_embed.proj.stride == (8, 8)
    expected_weight = resample_patch_embed(model.patch_embed.proj.weight, [8, 8])
    torch.testing.assert_close(p8.model.patch_embed.proj.weight, expected_weight)

    x = smooth_image(224)
    x_small = F.interpolate(x, size=112, mode="bicubic", antialias=True, align_corners=False)
    with torch.no_grad():
        reference = p16.model.patch_embed((x - p16.mean) / p16.std)
        resampled = p8.model.patch_embed((x_small - p8.mean) / p8.std)
        naive_weight = F.interpolate(model.patch_embed.proj.weight, size=8, mode="bilinear", antialias=True)
        naive = F.conv2d((x_small - p8.mean) / p8.std, naive_weight, model.patch_embed.proj.bias, stride=8)
    naive = naive.flatten(2).transpose(1, 2)

    def relative_error(tokens):
        return float((tokens - reference).norm() / reference.norm())

    assert resampled.shape == reference.shape == (2, 196, 32)
    assert relative_error(resampled) < 0.05
    assert relative_error(naive) > 0.5
    with torch.no_grad():  # same 14 x 14 grid, so the whole encoder agrees closely too
        assert float((p8(x_small) - p16(x)).norm() / p16(x).norm()) < 0.05


def test_normalization_timm_vs_imagenet():
    name = "vit_base_patch16_clip_224"
    clip = get_pretrained_cfg(name)
    assert tuple(clip.mean) != IMAGENET_MEAN
    timm_norm = Encoder(name, 64, 16, timm_kwargs=TINY)
    imagenet_norm = Encoder(name, 64, 16, timm_kwargs=TINY, normalization="imagenet")
    assert timm_norm.mean.flatten().tolist() == pytest.approx(clip.mean)
    assert timm_norm.std.flatten().tolist() == pytest.approx(clip.std)
    assert imagenet_norm.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    assert imagenet_norm.std.flatten().tolist() == pytest.approx(IMAGENET_STD)
    assert "mean" not in timm_norm.state_dict()

    imagenet_norm.load_state_dict(timm_norm.state_dict())
    x = torch.rand(1, 3, 64, 64)
    mean, std = torch.tensor(clip.mean).view(1, 3, 1, 1), torch.tensor(clip.std).view(1, 3, 1, 1)
    torch.testing.assert_close(timm_norm(x), timm_norm.model.forward_features((x - mean) / std)[:, 1:])
    assert not torch.allclose(timm_norm(x), imagenet_norm(x))
    clip_norm = Encoder(name, 64, 16, timm_kwargs=TINY, normalization="clip")  # SimZSS's towers: OpenAI CLIP stats
    assert clip_norm.mean.flatten().tolist() == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    with pytest.raises(ValueError, match="normalization"):
        Encoder(name, 64, 16, timm_kwargs=TINY, normalization="openai")


def test_checkpoint_is_loaded_strictly(tmp_path):
    model = native()
    encoder = Encoder(VIT, 224, 16, checkpoint=checkpoint_of(model, tmp_path), timm_kwargs=TINY)
    torch.testing.assert_close(encoder.model.blocks[1].mlp.fc2.weight, model.blocks[1].mlp.fc2.weight)
    shallow = checkpoint_of(native(depth=1), tmp_path, "shallow.safetensors")
    with pytest.raises(CheckpointError, match=r"shallow\.safetensors[\s\S]*missing keys .*blocks\.1\."):
        Encoder(VIT, 224, 16, checkpoint=shallow, timm_kwargs=TINY)


def offline_create_model(monkeypatch):
    real = timm.create_model

    def create_model(name, pretrained=False, **kwargs):
        if pretrained:
            raise huggingface_hub.errors.LocalEntryNotFoundError("no connection")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(encoder_module.timm, "create_model", create_model)


def test_failed_download_says_how_to_use_a_local_checkpoint(monkeypatch):
    offline_create_model(monkeypatch)
    with pytest.raises(CheckpointError) as info:
        Encoder("vit_base_patch16_clip_224.dfn2b", 224, 16, pretrained=True, timm_kwargs=TINY)
    message = str(info.value)
    assert "vit_base_patch16_clip_224.dfn2b" in message
    assert "timm/vit_base_patch16_clip_224.dfn2b" in message  # the Hugging Face Hub source
    assert "pretraining: file" in message and "checkpoint:" in message and "no connection" in message


def test_local_checkpoint_replaces_the_download(monkeypatch, tmp_path):
    path = checkpoint_of(native(), tmp_path)
    offline_create_model(monkeypatch)
    encoder = Encoder(VIT, 224, 16, pretrained=True, checkpoint=path, timm_kwargs=TINY)
    assert encoder(torch.rand(1, 3, 224, 224)).shape == (1, 196, 32)


def test_set_frozen():
    encoder = Encoder(VIT, 64, 16, timm_kwargs=TINY)
    encoder.set_frozen(True)
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.set_frozen(False)
    assert all(p.requires_grad for p in encoder.parameters())
