"""The encoders of both study files, built with random weights: params-paper.yaml's (the paper's 20 and the SimZSS
tower's 2) and params-vfm2025.yaml's new ones (today's VFMs, 11).

Each encoder is built at its native size exactly as fine-tuning builds it, resized to crop 512
at patch 16 and patch 8, and run on one image. To keep CI fast the forward keeps only the
blocks that differ in kind (the first block; for SAM also the first global-attention block):
patch embedding, position embedding, RoPE, windows, relative positions, final norm and prefix
stripping all run, and the token count and width do not depend on depth. Every encoder also runs
at full depth on PyTorch's meta device (today's VFMs at crop 1024 too).
"""
from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.layers import QuickGELU
from timm.models import get_pretrained_cfg
from timm.models.eva import Eva
from timm.models.vision_transformer_sam import VisionTransformerSAM

from pipeline.config import load_params
from pipeline.errors import ResizeError
from pipeline.networks import encoder as encoder_module
from pipeline.networks.encoder import Encoder
from pipeline.networks.tower import build_tower, normalized_tokens
from pipeline.networks.weights import save_state_dict

ROOT = Path(__file__).resolve().parents[1]
PAPER = load_params(ROOT / "params-paper.yaml")
VFM2025 = load_params(ROOT / "params-vfm2025.yaml")
ZOO = [(model, size) for model in PAPER.encoders for size in PAPER.sizes]
# The table, written out rather than read from the file under test (dinov2_reg is the paper file's tower).
TODAY = {
    ("dinov3", "base"): "vit_base_patch16_dinov3.lvd1689m", ("dinov3", "large"): "vit_large_patch16_dinov3.lvd1689m",
    ("siglip2", "base"): "vit_base_patch16_siglip_512.v2_webli",
    ("siglip2", "large"): "vit_large_patch16_siglip_384.v2_webli",
    ("pe_core", "base"): "vit_pe_core_base_patch16_224.fb", ("pe_core", "large"): "vit_pe_core_large_patch14_336.fb",
    ("c_radio", "base"): "vit_base_patch16_radio_v3.c_radio",
    ("c_radio", "large"): "vit_large_patch16_radio_v3.c_radio",
    ("tipsv2", "base"): "vit_base_patch14_reg1_tipsv2.webli",
    ("tipsv2", "large"): "vit_large_patch14_reg1_tipsv2.webli",
    ("dinov2_reg", "base"): "vit_base_patch14_reg4_dinov2.lvd142m",
    ("dinov2_reg", "large"): "vit_large_patch14_reg4_dinov2.lvd142m",
    ("aimv2", "large"): "aimv2_large_patch14_224.apple_pt",
}
NEW = [key for key in TODAY if key[0] not in PAPER.model_cfg]  # dinov2_reg is tested as the paper file's
NEW_MODELS = list(dict.fromkeys(model for model, _ in NEW))
ALL = ZOO + NEW
WIDTH = {"base": 768, "large": 1024}
PREFIX = {"siglip": 0, "sam": 0, "dinov2_reg": 5,  # every other model of the paper keeps one CLS token
          "dinov3": 5, "siglip2": 0, "pe_core": 1, "c_radio": 8, "tipsv2": 2, "aimv2": 0}
CROP = 512


def variant(model_id: str, size: str):
    """The variant as params-vfm2025.yaml configures it (the paper's ids identically, see below)."""
    return VFM2025.model_cfg[model_id].variants[size]


def test_the_zoo_is_the_papers_twenty_plus_the_simzss_tower():
    assert len(ZOO) == 22
    assert set(PAPER.encoders) == {
        "eva02_clip", "eva02", "dinov2", "beit3", "siglip", "dfn_clip", "deit3_in21k", "deit3_in1k", "mae", "sam",
        "dinov2_reg"}
    assert set(PAPER.encoders) - set(PAPER.models) == {"dinov2_reg"}  # the tower is not fine-tuned
    assert all(PAPER.variant(m, s).pretrain_tokens for m, s in ZOO)


def test_vfm2025_is_the_papers_protocol_on_the_papers_ten_and_todays_vfms():
    assert {(m, s): variant(m, s).timm_name for m, s in TODAY} == TODAY
    assert set(VFM2025.models) == {*PAPER.models, "dinov3", "siglip2", "pe_core", "c_radio", "tipsv2", "dinov2_reg"}
    assert {"dinov3", "dinov2_reg"} <= set(VFM2025.towers) and set(VFM2025.encoders) == set(VFM2025.models)
    assert {m: VFM2025.model_cfg[m] for m in PAPER.model_cfg} == PAPER.model_cfg
    assert list(VFM2025.model_cfg["aimv2"].variants) == ["large"] and "aimv2" not in VFM2025.encoders
    for key in ("setting_cfg", "settings", "seeds", "data_cfg", "decoder_cfg", "finetune", "align", "zeroshot",
                "concepts", "text_tower", "method_cfg"):
        assert getattr(VFM2025, key) == getattr(PAPER, key), key
    assert VFM2025.setup == PAPER.setup
    pretrained = set(timm.list_models(pretrained=True))
    assert all(name in pretrained for name in TODAY.values())


def kept_blocks(model: torch.nn.Module) -> list[int]:
    keep = [0]
    if isinstance(model, VisionTransformerSAM):
        keep.append(next(i for i, block in enumerate(model.blocks) if block.window_size == 0))
    return keep


def run_encoder(model_id: str, size: str, encoder: Encoder, crop: int = CROP, device: str = "cpu") -> None:
    grid = crop // encoder.model.patch_embed.patch_size[0]
    assert encoder.grid_size == (grid, grid)
    assert encoder.embed_dim == WIDTH[size]
    assert encoder.num_prefix_tokens == PREFIX.get(model_id, 1)
    _check_family(model_id, encoder.model, grid)
    with torch.no_grad():
        tokens = encoder(torch.rand(1, 3, crop, crop, device=device))
    assert tokens.shape == (1, grid * grid, WIDTH[size])
    assert device == "meta" or torch.isfinite(tokens).all()


def check_prefix_stripped(model_id: str, encoder: Encoder) -> None:
    """forward_features puts the prefix tokens (CLS, registers) first; the encoder drops exactly those."""
    x = torch.rand(1, 3, CROP, CROP)
    with torch.no_grad():
        features = encoder.model.forward_features(encoder.normalize(x))
        tokens = encoder(x)
    if features.ndim == 3:  # SAM's are an NCHW map
        prefix = PREFIX.get(model_id, 1)
        assert features.shape[1] == prefix + encoder.grid_size[0] * encoder.grid_size[1]
        torch.testing.assert_close(tokens, features[:, prefix:], rtol=0, atol=0)


def check_with_random_weights(model_id: str, size: str, monkeypatch) -> None:
    """Build once natively with random weights, then resize a copy to patch 16 and to patch 8."""
    v = variant(model_id, size)
    native = encoder_module.create_native_model(v.timm_name, False, v.timm_kwargs)
    monkeypatch.setattr(encoder_module, "create_native_model", lambda *args: copy.deepcopy(native))
    for patch in (16, 8):
        encoder = Encoder(v.timm_name, CROP, patch, timm_kwargs=v.timm_kwargs)
        assert encoder.mean.flatten().tolist() == pytest.approx(get_pretrained_cfg(v.timm_name).mean)
        assert encoder.std.flatten().tolist() == pytest.approx(get_pretrained_cfg(v.timm_name).std)
        blocks = encoder.model.blocks
        encoder.model.blocks = torch.nn.Sequential(*[blocks[i] for i in kept_blocks(encoder.model)])
        run_encoder(model_id, size, encoder)
        if patch == 16:
            check_prefix_stripped(model_id, encoder)


@pytest.mark.parametrize("model_id", [m for m, s in ALL if s == "base"])
def test_base_encoders_run_with_random_weights(model_id, monkeypatch):
    check_with_random_weights(model_id, "base", monkeypatch)


# One ViT-L runs in the default suite (SAM: windows, global blocks and rel-pos tables); the rest are
# `slow` (about 6 s each here) and run with `pytest -m slow`. All run at full depth on meta below.
@pytest.mark.parametrize(
    "model_id", [m if m == "sam" else pytest.param(m, marks=pytest.mark.slow) for m, s in ALL if s == "large"])
def test_large_encoders_run_with_random_weights(model_id, monkeypatch):
    check_with_random_weights(model_id, "large", monkeypatch)


@pytest.mark.parametrize("model_id, size, crop, patch", [
    (*encoder, *grid) for encoder in ALL for grid in [(512, 16), (512, 8)] + [(1024, 16)] * (encoder in NEW)])
def test_every_encoder_runs_at_full_depth_on_meta(model_id, size, crop, patch):
    """Shapes through every block, without the cost of initialising 300M weights. Today's VFMs also run at crop
    1024, and their parameters are those of timm's own model built at the new size (so the zoo's counts are
    timm's)."""
    v = variant(model_id, size)
    with torch.device("meta"):
        encoder = Encoder(v.timm_name, crop, patch, timm_kwargs=v.timm_kwargs)
        reference = timm.create_model(v.timm_name, num_classes=0, img_size=crop, patch_size=patch,
                                      **v.timm_kwargs) if (model_id, size) in NEW else None
    run_encoder(model_id, size, encoder, crop, device="meta")
    if reference is not None:
        assert ({k: t.shape for k, t in encoder.model.state_dict().items()}
                == {k: t.shape for k, t in reference.state_dict().items()})


def _check_family(model_id: str, model: torch.nn.Module, grid: int) -> None:
    pos = getattr(model, "pos_embed", None)
    if model_id.startswith("deit3") or model_id in ("dinov2_reg", "c_radio", "tipsv2"):  # no CLS/register rows
        assert model.no_embed_class and pos.shape[1] == grid * grid
    elif model_id == "sam":
        assert pos.shape[1:3] == (grid, grid)
    elif model_id == "dinov3":  # RoPE only
        assert pos is None
    elif model_id in ("siglip", "siglip2", "aimv2"):  # no prefix tokens
        assert pos.shape[1] == grid * grid
    elif pos is not None:
        assert pos.shape[1] == 1 + grid * grid
    if isinstance(model, Eva):
        assert list(model.rope.feat_shape) == [grid, grid]
    if model_id in NEW_MODELS:  # forward_features ends with the final norm; C-RADIO has none (nor has RADIO's code)
        assert isinstance(model.fc_norm, torch.nn.Identity)
        assert isinstance(model.norm, torch.nn.Identity) == (model_id == "c_radio")
    if model_id == "beit3":
        block = model.blocks[0]
        assert isinstance(block.attn.norm, torch.nn.LayerNorm) and isinstance(block.mlp.norm, torch.nn.LayerNorm)
    if model_id == "dfn_clip" and model.embed_dim == 1024:
        assert isinstance(model.blocks[0].mlp.act, QuickGELU)


# ---- SAM ------------------------------------------------------------------------------------------------------

SAM_TINY = dict(embed_dim=32, depth=4, num_heads=2, global_attn_indexes=(1, 3), neck_chans=16)


@pytest.mark.parametrize("img_size, patch, window, table", [(512, 16, 7, 13), (1024, 16, 14, 27), (512, 8, 14, 27)])
def test_sam_window_arithmetic_and_rel_pos_tables(img_size, patch, window, table):
    """14 x grid / 64: 7 at 512/p16, 14 at 1024/p16 and 512/p8; tables have 2 x size - 1 rows."""
    with torch.device("meta"):
        encoder = Encoder("samvit_base_patch16", img_size, patch, timm_kwargs=SAM_TINY)
    grid = img_size // patch
    blocks = encoder.model.blocks
    assert [b.window_size for b in blocks] == [window, 0, window, 0]
    assert blocks[0].attn.rel_pos_h.shape[0] == blocks[0].attn.rel_pos_w.shape[0] == table
    assert blocks[1].attn.rel_pos_h.shape[0] == 2 * grid - 1
    assert isinstance(encoder.model.neck, torch.nn.Identity) and encoder.embed_dim == 32


def test_sam_rel_pos_tables_are_linearly_resized():
    torch.manual_seed(0)
    native = timm.create_model("samvit_base_patch16", num_classes=0, img_size=256, **SAM_TINY)
    torch.nn.init.normal_(native.blocks[0].attn.rel_pos_h)  # timm initialises the tables to zero
    old = native.blocks[0].attn.rel_pos_h.detach().clone()  # window 14: 2 x 14 - 1 = 27 rows
    model = copy.deepcopy(native)
    encoder_module.resize_model(model, 256, 32)  # grid 16 -> 8
    resized = model.blocks[0].attn.rel_pos_h.detach()
    assert model.blocks[0].window_size == 7 and resized.shape == (13, 16)
    # independent: linear interpolation (align_corners=False) of each channel from 27 to 13 samples
    positions = (torch.arange(13) + 0.5) * 27 / 13 - 0.5
    lo = positions.floor().clamp(0, 26).long()
    hi = (lo + 1).clamp(max=26)
    frac = (positions - lo).clamp(0, 1)[:, None]
    torch.testing.assert_close(resized, old[lo] * (1 - frac) + old[hi] * frac)


def test_sam_non_integer_window_is_an_error():
    with pytest.raises(ResizeError, match=r"window size 14 .* 6\.5625.* multiple of 32"):
        with torch.device("meta"):
            Encoder("samvit_base_patch16", 480, 16, timm_kwargs=SAM_TINY)


# ---- RoPE: EVA-02, Perception Encoder, DINOv3 (timm's Eva) --------------------------------------------------


TINY = dict(embed_dim=64, depth=1, num_heads=2)


@pytest.mark.parametrize("model_id, size", [(m, s) for m in ("eva02_clip", "eva02", "pe_core", "dinov3")
                                            for s in ("base", "large")])
def test_rope_equals_a_model_built_at_the_new_grid(model_id, size):
    """The authors build a second timm model at the new size and copy its `.rope`; this must agree. PE also keeps
    its absolute position embedding (CLS row first) next to the RoPE; DINOv3 has none."""
    v = variant(model_id, size)
    kwargs = {**v.timm_kwargs, **TINY}
    encoder = Encoder(v.timm_name, 160, 8, timm_kwargs=kwargs)
    reference = timm.create_model(v.timm_name, num_classes=0, img_size=160, patch_size=8, **kwargs)
    native = timm.create_model(v.timm_name, num_classes=0, **kwargs)
    assert list(encoder.model.rope.feat_shape) == [20, 20]
    torch.testing.assert_close(encoder.model.rope.get_embed(), reference.rope.get_embed(), rtol=0, atol=0)
    assert native.rope.get_embed().shape[0] != 400  # the native grid differs, so the rebuild mattered
    assert (encoder.model.pos_embed is None) == (model_id == "dinov3")
    if model_id == "pe_core":
        assert encoder.model.pos_embed.shape == (1, 1 + 400, 64)
    with torch.no_grad():
        assert encoder(torch.rand(1, 3, 160, 160)).shape == (1, 400, 64)


def test_dinov3_rope_at_a_fixed_size_is_its_per_input_rope():
    """DINOv3's own code builds the RoPE for each input's grid (timm: dynamic_img_size, its default); the fixed
    size the protocol needs (`dynamic_img_size: false`) gives the same embedding."""
    v = variant("dinov3", "base")
    assert v.timm_kwargs == {"dynamic_img_size": False}
    encoder = Encoder(v.timm_name, 160, 8, timm_kwargs={**v.timm_kwargs, **TINY})
    dynamic = timm.create_model(v.timm_name, num_classes=0, **TINY)
    torch.testing.assert_close(encoder.model.rope.get_embed(), dynamic.rope.get_embed(shape=[20, 20]), rtol=0, atol=0)
    with pytest.raises(ResizeError, match=r"dynamic_img_size.*timm_kwargs: \{dynamic_img_size: false\}"):
        Encoder(v.timm_name, 160, 8, timm_kwargs=TINY)


def test_eva02_mim_has_no_final_norm_but_clip_does():
    """timm's EVA-02 MIM pools by average, moving the final LN into fc_norm (reference §1)."""
    mim = Encoder("eva02_base_patch14_224.mim_in22k", 112, 16, timm_kwargs=TINY).model
    clip = Encoder("eva02_base_patch16_clip_224.merged2b", 112, 16, timm_kwargs=TINY).model
    assert isinstance(mim.norm, torch.nn.Identity) and not isinstance(clip.norm, torch.nn.Identity)


# ---- SimZSS towers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tower", ["dinov3", "dinov2_reg"])
def test_towers_with_registers_run_at_their_native_patch_and_give_the_cls_token(tower, tmp_path):
    """A tower keeps its native patch size (16, 14) at SimZSS's image size; its global token is the CLS token
    (timm's row 0, before the 4 registers), and neither the global token nor the patches hold a register."""
    assert tower in VFM2025.towers
    v = VFM2025.tower_variant(tower)
    v = dataclasses.replace(v, timm_kwargs={**v.timm_kwargs, **TINY})
    weights = tmp_path / "tower.safetensors"
    save_state_dict(encoder_module.create_native_model(v.timm_name, False, v.timm_kwargs), weights)
    size = VFM2025.align.image_size
    encoder = build_tower(v, weights, size, VFM2025.align.normalization)
    patch = {"dinov3": 16, "dinov2_reg": 14}[tower]
    assert v.native_patch_size == patch and encoder.model.patch_embed.patch_size == (patch, patch)
    grid = size // patch
    assert encoder.grid_size == (grid, grid) and encoder.num_prefix_tokens == 5
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        features = encoder.model.forward_features(encoder.normalize(x))
        cls, patches = encoder.tokens(x)
    assert features.shape[1] == 1 + 4 + grid * grid
    torch.testing.assert_close(cls, features[:, 0])
    torch.testing.assert_close(patches, features[:, 5:])
    glob, normed = normalized_tokens(encoder, x, "fp32")
    torch.testing.assert_close(glob, torch.nn.functional.normalize(features[:, 0], dim=-1))
    assert normed.shape == (2, grid * grid, 64)


# ---- The zoo listing ------------------------------------------------------------------------------------------


def zoo_listing(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pipeline.tools.zoo", *args], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith("|")]


def test_zoo_listing_covers_every_encoder_with_its_grid():
    rows = [line for line in zoo_listing("--params", "params-paper.yaml", "--patch-size", "8") if "`" in line]
    assert len(rows) == 22
    for model_id, size in ZOO:
        row = next(r for r in rows if r.startswith(f"| {model_id} | {size} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == f"`{variant(model_id, size).timm_name}`"
        assert cells[5] == str(WIDTH[size]) and cells[7] == "64x64" and cells[8] == "4096"
        assert 86 < float(cells[4]) < 96 if size == "base" else 300 < float(cells[4]) < 320


@pytest.mark.parametrize("heading, args, rows", [
    ("## The model zoo", ["--params", "params-paper.yaml"], 22),
    ("### Today's VFMs", ["--params", "params-vfm2025.yaml", "--models", *dict.fromkeys(m for m, _ in TODAY)], 13),
])
def test_the_readme_zoo_tables_are_the_zoo_listings(heading, args, rows):
    readme = (ROOT / "README.md").read_text()
    start = readme.index(heading)
    section = readme[start:readme.index("Per family", start)]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table == zoo_listing(*args)
    assert len(table) == 2 + rows  # today's: AIMv2 has no ViT-B row
    for row in table[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[10] == str(PREFIX.get(cells[0], 1))


def test_zoo_listing_names_an_unknown_model():
    result = subprocess.run([sys.executable, "-m", "pipeline.tools.zoo", "--models", "nope"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1 and "error: --models: unknown model 'nope'" in result.stderr
