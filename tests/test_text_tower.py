import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.networks.text_tower import AlignedText, TextTower, TextTowerCfg, tokenize

TINY = TextTowerCfg(width=32, layers=2, heads=2)
EMBED_DIM = 24


@pytest.fixture(scope="module")
def tower() -> TextTower:
    torch.manual_seed(0)
    return TextTower(TINY, EMBED_DIM).eval()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return tokenize(["a photo of a cat", "two tennis rackets on a red fire hydrant"])


def test_tokenize_is_clip_sot_bpe_eot_zero_padded():
    ids = tokenize(["a cat", "word " * 100])
    assert ids.shape == (2, 77) and ids.dtype == torch.long
    assert ids[0, :4].tolist() == [49406, 320, 2368, 49407]  # SOT, "a", "cat", EOT
    assert (ids[0, 4:] == 0).all()
    assert ids[1, 0] == 49406 and ids[1, -1] == 49407 and (ids[1] != 0).all()


def test_shapes_and_global_is_the_projected_eot_token(tower, tokens):
    global_emb, token_emb = tower(tokens)
    assert global_emb.shape == (2, EMBED_DIM) and token_emb.shape == (2, 77, EMBED_DIM)
    eot = tokens.argmax(dim=1)
    assert torch.allclose(global_emb, token_emb[torch.arange(2), eot], atol=1e-6)
    pooled, _ = tower.transformer(tokens)
    assert torch.equal(global_emb, pooled)


def test_projection_is_bias_free_and_applied_to_every_token(tower, tokens):
    captured = {}
    handle = tower.transformer.ln_final.register_forward_hook(lambda m, i, out: captured.update(out=out))
    _, token_emb = tower(tokens)
    handle.remove()
    projection = tower.transformer.text_projection
    assert isinstance(projection, torch.nn.Parameter) and projection.shape == (TINY.width, EMBED_DIM)
    expected = torch.einsum("blw,wd->bld", captured["out"], projection)
    assert torch.allclose(token_emb, expected, atol=1e-6)


def test_attention_is_causal(tower, tokens):
    changed = tokens.clone()
    changed[:, 3] = 1000
    _, before = tower(tokens)
    _, after = tower(changed)
    assert torch.equal(before[:, :3], after[:, :3])
    assert not torch.allclose(before[:, 3], after[:, 3])


def test_encode_is_the_normalised_global(tower, tokens):
    encoded = tower.encode(tokens)
    assert torch.allclose(encoded.norm(dim=-1), torch.ones(2))
    assert torch.allclose(encoded, F.normalize(tower(tokens)[0], dim=-1))


def test_default_config_is_the_authors_text_tower():
    with torch.device("meta"):
        tower = TextTower(TextTowerCfg(), 768)
    w = 512
    per_block = 12 * w * w + 13 * w  # qkv + out proj + 4x MLP (weights, biases) + two LayerNorms
    expected = 49408 * w + 77 * w + 12 * per_block + 2 * w + w * 768
    assert sum(p.numel() for p in tower.parameters()) == expected == 63_559_168
    assert tower.transformer.attn_mask.shape == (77, 77)


def test_cfg_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TINY.width = 8


def test_logit_scale_init_and_clamp(tower):
    aligned = AlignedText(tower)
    assert aligned.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    aligned.clamp_logit_scale()
    assert aligned.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    parameter = aligned.logit_scale
    with torch.no_grad():
        aligned.logit_scale.fill_(7.0)
    aligned.clamp_logit_scale()
    assert aligned.logit_scale is parameter and aligned.logit_scale.requires_grad
    assert aligned.logit_scale.item() == pytest.approx(math.log(100))
    aligned.clamp_logit_scale(max_scale=50)
    assert aligned.logit_scale.item() == pytest.approx(math.log(50))
    assert {name for name, _ in aligned.named_parameters()} >= {"logit_scale", "text.transformer.text_projection"}
