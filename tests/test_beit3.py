"""BEiT-3 checkpoint conversion: official torchscale multiway layout and the authors' .pth.timm -> timm ViT + sub-LN."""
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from pipeline.errors import CheckpointError
from pipeline.networks.beit3 import (
    SUB_LN_KWARGS, build_beit3_model, convert_beit3_checkpoint, convert_beit3_state_dict,
)
from pipeline.networks.encoder import Encoder
from pipeline.networks.weights import load_state_dict_file, load_strict
from pipeline.tools import convert_beit3 as cli

REPO = Path(__file__).resolve().parents[1]
TINY = {"embed_dim": 64, "depth": 1, "num_heads": 4, "img_size": 32}  # on top of vit_base_patch16_224
# The authors' model: timm blocks (norm1, norm2, final norm: eps 1e-6) with sub-LNs built as nn.LayerNorm (1e-5).
BLOCK_LN_EPS, SUB_LN_EPS = 1e-6, 1e-5


def official_state_dict(dim: int, depth: int, img_size: int, patch: int = 16, seed: int = 0):
    """A synthetic checkpoint in the official BEiT-3 layout and the timm state dict it must become.

    The expected dict is written out here key by key from the vision expert A, independently of the converter.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.3):
        return torch.randn(*shape, generator=gen) * scale

    hidden, rows = 4 * dim, 2 + 1 + (img_size // patch) ** 2
    src = {
        "beit3.text_embed.weight": rand(10, dim),
        "beit3.vision_embed.mask_token": rand(1, 1, dim),
        "beit3.vision_embed.cls_token": rand(1, 1, dim),
        "beit3.vision_embed.proj.weight": rand(dim, 3, patch, patch),
        "beit3.vision_embed.proj.bias": rand(dim),
        "beit3.encoder.embed_positions.A.weight": rand(rows, dim),
        "beit3.encoder.embed_positions.B.weight": rand(rows + 5, dim),
        "mlm_head.weight": rand(10, dim),
    }
    expected = {
        "cls_token": src["beit3.vision_embed.cls_token"],
        "pos_embed": src["beit3.encoder.embed_positions.A.weight"][2:].unsqueeze(0),
        "patch_embed.proj.weight": src["beit3.vision_embed.proj.weight"],
        "patch_embed.proj.bias": src["beit3.vision_embed.proj.bias"],
    }

    def add(src_name: str, dst_name: str | None, shape: dict[str, tuple]):
        for param, s in shape.items():
            a, b = rand(*s), rand(*s)
            if param == "weight" and len(s) == 1:  # LayerNorm gains around 1
                a, b = a + 1, b + 1
            src[f"beit3.{src_name.format(E='A')}.{param}"] = a
            src[f"beit3.{src_name.format(E='B')}.{param}"] = b
            if dst_name is not None:
                expected[f"{dst_name}.{param}"] = a

    ln = {"weight": (dim,), "bias": (dim,)}
    for i in range(depth):
        pre = f"encoder.layers.{i}"
        add(f"{pre}.self_attn_layer_norm.{{E}}", f"blocks.{i}.norm1", ln)
        for part in "qkv":
            add(f"{pre}.self_attn.{part}_proj.{{E}}", None, {"weight": (dim, dim), "bias": (dim,)})
        add(f"{pre}.self_attn.inner_attn_ln.{{E}}", f"blocks.{i}.attn.norm", ln)
        add(f"{pre}.self_attn.out_proj.{{E}}", f"blocks.{i}.attn.proj", {"weight": (dim, dim), "bias": (dim,)})
        add(f"{pre}.final_layer_norm.{{E}}", f"blocks.{i}.norm2", ln)
        add(f"{pre}.ffn.{{E}}.fc1", f"blocks.{i}.mlp.fc1", {"weight": (hidden, dim), "bias": (hidden,)})
        add(f"{pre}.ffn.{{E}}.ffn_layernorm", f"blocks.{i}.mlp.norm", {"weight": (hidden,), "bias": (hidden,)})
        add(f"{pre}.ffn.{{E}}.fc2", f"blocks.{i}.mlp.fc2", {"weight": (dim, hidden), "bias": (dim,)})
        for param in ("weight", "bias"):
            expected[f"blocks.{i}.attn.qkv.{param}"] = torch.cat(
                [src[f"beit3.{pre}.self_attn.{p}_proj.A.{param}"] for p in "qkv"]
            )
    add("encoder.layer_norm.{E}", "norm", ln)
    return src, expected


def tiny_model():
    return build_beit3_model("vit_base_patch16_224", **TINY).eval()


def assert_state_equal(actual: dict, expected: dict):
    assert sorted(actual) == sorted(expected)
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


def test_official_vit_b_checkpoint_converts_and_loads_strictly(tmp_path):
    src, expected = official_state_dict(dim=768, depth=12, img_size=224)
    torch.save({"model": src}, tmp_path / "beit3_base_patch16_224.pth")
    dst = tmp_path / "out" / "beit3_base.safetensors"

    summary = convert_beit3_checkpoint(tmp_path / "beit3_base_patch16_224.pth", dst, "vit_base_patch16_224")

    assert summary["timm_name"] == "vit_base_patch16_224" and summary["source_format"] == "official"
    assert summary["num_tensors"] == len(expected) == 4 + 12 * 16 + 2
    converted = load_state_dict_file(dst)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, **SUB_LN_KWARGS)
    load_strict(model, converted, str(dst))
    assert_state_equal(model.state_dict(), expected)
    assert converted["pos_embed"].shape == (1, 197, 768)
    assert torch.equal(converted["pos_embed"][0], src["beit3.encoder.embed_positions.A.weight"][2:])
    assert torch.equal(converted["cls_token"], src["beit3.vision_embed.cls_token"])
    assert summary["num_params"] == sum(p.numel() for p in model.parameters())
    assert sorted(p.name for p in dst.parent.iterdir()) == ["beit3_base.safetensors"]


def torchscale_block(src: dict, x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """One BEiT-3 (torchscale multiway, vision expert) encoder layer, written out from the original keys, with
    the authors' LayerNorm eps (their sub-LNs are nn.LayerNorm, their other norms timm's)."""

    def w(name):
        return src[f"beit3.encoder.layers.0.{name}.weight"], src[f"beit3.encoder.layers.0.{name}.bias"]

    def ln(h, name):
        eps = SUB_LN_EPS if name in ("self_attn.inner_attn_ln.A", "ffn.A.ffn_layernorm") else BLOCK_LN_EPS
        return F.layer_norm(h, h.shape[-1:], *w(name), eps=eps)

    def split(t):  # B N D -> B H N dh
        return t.view(b, n, num_heads, -1).transpose(1, 2)

    b, n, d = x.shape
    h = ln(x, "self_attn_layer_norm.A")
    q, k, v = (split(F.linear(h, *w(f"self_attn.{p}_proj.A"))) for p in "qkv")
    attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // num_heads), dim=-1)
    merged = (attn @ v).transpose(1, 2).reshape(b, n, d)
    x = x + F.linear(ln(merged, "self_attn.inner_attn_ln.A"), *w("self_attn.out_proj.A"))
    h2 = ln(x, "final_layer_norm.A")
    f = F.linear(ln(F.gelu(F.linear(h2, *w("ffn.A.fc1"))), "ffn.A.ffn_layernorm"), *w("ffn.A.fc2"))
    return x + f


def converted_block_output(src: dict, x: torch.Tensor) -> torch.Tensor:
    model = tiny_model()
    load_strict(model, convert_beit3_state_dict(src, img_size=TINY["img_size"]), "synthetic")
    with torch.no_grad():
        return model.blocks[0](x)


def test_converted_block_matches_torchscale_layer_and_qkv_order_matters():
    src, _ = official_state_dict(dim=64, depth=1, img_size=32, seed=1)
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(2))
    expected = torchscale_block(src, x, num_heads=TINY["num_heads"])
    torch.testing.assert_close(converted_block_output(src, x), expected, rtol=1e-5, atol=1e-5)

    swapped = dict(src)
    for param in ("weight", "bias"):
        q, k = (f"beit3.encoder.layers.0.self_attn.{p}_proj.A.{param}" for p in "qk")
        swapped[q], swapped[k] = src[k], src[q]
    difference = (converted_block_output(swapped, x) - expected).abs().max()
    assert difference > 1e-2, "swapping q and k in the source must change the block output"


def test_encoder_from_params_gives_sub_lns_the_authors_eps_and_other_norms_timms():
    encoder = Encoder("vit_base_patch16_224", img_size=32, patch_size=16, timm_kwargs={**SUB_LN_KWARGS, **TINY})
    block = encoder.model.blocks[0]
    assert (block.attn.norm.eps, block.mlp.norm.eps) == (SUB_LN_EPS, SUB_LN_EPS)
    assert (block.norm1.eps, block.norm2.eps, encoder.model.norm.eps) == (BLOCK_LN_EPS,) * 3
    plain = Encoder("vit_base_patch16_224", img_size=32, patch_size=16, timm_kwargs=TINY).model.blocks[0]
    assert isinstance(plain.attn.norm, torch.nn.Identity) and isinstance(plain.mlp.norm, torch.nn.Identity)


def test_authors_pth_timm_layout_converts_to_target_keys(tmp_path):
    _, expected = official_state_dict(dim=64, depth=1, img_size=32, seed=3)
    authors = {}
    for key, value in expected.items():
        key = re.sub(r"\.attn\.proj\.", ".attn.proj.1.", key)
        key = re.sub(r"\.attn\.norm\.", ".attn.proj.0.", key)
        authors[key] = value
    assert "blocks.0.attn.proj.0.weight" in authors and "blocks.0.attn.proj.1.weight" in authors
    assert "blocks.0.mlp.norm.weight" in authors
    assert_state_equal(convert_beit3_state_dict(authors), expected)

    torch.save(authors, tmp_path / "beit3_base_patch16_224.pth.timm")
    dst = tmp_path / "b.safetensors"
    summary = convert_beit3_checkpoint(tmp_path / "beit3_base_patch16_224.pth.timm", dst, "vit_base_patch16_224",
                                       model_kwargs=TINY)
    assert summary["source_format"] == "timm"
    assert_state_equal(load_state_dict_file(dst), expected)


def test_missing_v_proj_is_named():
    src, _ = official_state_dict(dim=64, depth=2, img_size=32)
    del src["beit3.encoder.layers.1.self_attn.v_proj.A.weight"]
    with pytest.raises(CheckpointError, match=re.escape("beit3.encoder.layers.1.self_attn.v_proj.A.weight")):
        convert_beit3_state_dict(src, img_size=32)


@pytest.mark.parametrize("key", ["beit3.encoder.layers.0.self_attn.mystery.A.weight", "beit3.logit_scale"])
def test_unknown_key_is_named(key):
    src, _ = official_state_dict(dim=64, depth=1, img_size=32)
    src[key] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=re.escape(key)):
        convert_beit3_state_dict(src, img_size=32)


def test_unknown_key_in_timm_layout_is_named():
    _, expected = official_state_dict(dim=64, depth=1, img_size=32)
    expected["head.weight"] = torch.zeros(3, 64)
    with pytest.raises(CheckpointError, match=re.escape("head.weight")):
        convert_beit3_state_dict(expected)


def test_wrong_position_table_says_what_was_expected():
    src, _ = official_state_dict(dim=64, depth=1, img_size=32)
    table = "beit3.encoder.embed_positions.A.weight"
    src[table] = src[table][2:]  # offset rows already removed: 5 instead of 2 + 1 + 2*2 = 7
    with pytest.raises(CheckpointError, match=r"embed_positions\.A\.weight has shape \(5, 64\); expected 7 rows"):
        convert_beit3_state_dict(src, img_size=32)


def test_model_mismatch_lists_unexpected_keys_and_writes_nothing(tmp_path):
    src, _ = official_state_dict(dim=64, depth=2, img_size=32)
    torch.save({"model": src}, tmp_path / "two_layers.pth")
    dst = tmp_path / "w.safetensors"
    with pytest.raises(CheckpointError, match=r"unexpected keys \(16\): blocks\.1\."):
        convert_beit3_checkpoint(tmp_path / "two_layers.pth", dst, "vit_base_patch16_224", model_kwargs=TINY)
    assert not dst.exists()


def test_cli_converts(tmp_path, capsys):
    src, expected = official_state_dict(dim=192, depth=12, img_size=224)
    torch.save({"model": src}, tmp_path / "beit3_tiny.pth")
    dst = tmp_path / "beit3_tiny.safetensors"
    cli.main([str(tmp_path / "beit3_tiny.pth"), str(dst), "--size", "base", "--timm-name", "vit_tiny_patch16_224"])
    assert "vit_tiny_patch16_224" in capsys.readouterr().out
    assert_state_equal(load_state_dict_file(dst), expected)


def test_cli_missing_file_exits_1(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.tools.convert_beit3", str(tmp_path / "nope.pth"),
         str(tmp_path / "out.safetensors"), "--size", "base"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "nope.pth" in result.stderr
    assert not (tmp_path / "out.safetensors").exists()
