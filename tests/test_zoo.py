"""The paper's 20 encoders and the SimZSS tower's 2 as params-paper.yaml configures them, built with random weights.

Each encoder is built at its native size exactly as fine-tuning builds it, resized to crop 512
at patch 16 and patch 8, and run on one image. To keep CI fast the forward keeps only the
blocks that differ in kind (the first block; for SAM also the first global-attention block):
patch embedding, position embedding, RoPE, windows, relative positions, final norm and prefix
stripping all run, and the token count and width do not depend on depth.
"""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.layers import QuickGELU
from timm.models.eva import Eva
from timm.models.vision_transformer_sam import VisionTransformerSAM

from pipeline.config import load_params
from pipeline.errors import ResizeError
from pipeline.networks import encoder as encoder_module
from pipeline.networks.encoder import Encoder

ROOT = Path(__file__).resolve().parents[1]
PAPER = load_params(ROOT / "params-paper.yaml")
ZOO = [(model, size) for model in PAPER.encoders for size in PAPER.sizes]
WIDTH = {"base": 768, "large": 1024}
PREFIX = {"siglip": 0, "sam": 0, "dinov2_reg": 5}  # every other model keeps one CLS token
CROP = 512


def test_the_zoo_is_the_papers_twenty_plus_the_simzss_tower():
    assert len(ZOO) == 22
    assert set(PAPER.encoders) == {
        "eva02_clip", "eva02", "dinov2", "beit3", "siglip", "dfn_clip", "deit3_in21k", "deit3_in1k", "mae", "sam",
        "dinov2_reg"}
    assert set(PAPER.encoders) - set(PAPER.models) == {"dinov2_reg"}  # the tower is not fine-tuned
    assert all(PAPER.variant(m, s).pretrain_tokens for m, s in ZOO)


def kept_blocks(model: torch.nn.Module) -> list[int]:
    keep = [0]
    if isinstance(model, VisionTransformerSAM):
        keep.append(next(i for i, block in enumerate(model.blocks) if block.window_size == 0))
    return keep


def run_encoder(model_id: str, size: str, patch: int, encoder: Encoder, device: str = "cpu") -> None:
    grid = CROP // patch
    assert encoder.grid_size == (grid, grid)
    assert encoder.embed_dim == WIDTH[size]
    assert encoder.num_prefix_tokens == PREFIX.get(model_id, 1)
    _check_family(model_id, encoder.model, grid)
    with torch.no_grad():
        tokens = encoder(torch.rand(1, 3, CROP, CROP, device=device))
    assert tokens.shape == (1, grid * grid, WIDTH[size])
    assert device == "meta" or torch.isfinite(tokens).all()


def check_with_random_weights(model_id: str, size: str, monkeypatch) -> None:
    """Build once natively with random weights, then resize a copy to patch 16 and to patch 8."""
    variant = PAPER.variant(model_id, size)
    native = encoder_module.create_native_model(variant.timm_name, False, variant.timm_kwargs)
    monkeypatch.setattr(encoder_module, "create_native_model", lambda *args: copy.deepcopy(native))
    for patch in (16, 8):
        encoder = Encoder(variant.timm_name, CROP, patch, timm_kwargs=variant.timm_kwargs)
        blocks = encoder.model.blocks
        encoder.model.blocks = torch.nn.Sequential(*[blocks[i] for i in kept_blocks(encoder.model)])
        run_encoder(model_id, size, patch, encoder)


@pytest.mark.parametrize("model_id", PAPER.encoders)
def test_base_encoders_run_with_random_weights(model_id, monkeypatch):
    check_with_random_weights(model_id, "base", monkeypatch)


# One ViT-L runs in the default suite (SAM: windows, global blocks and rel-pos tables); the rest are
# `slow` (about 6 s each here) and run with `pytest -m slow`. All 22 run at full depth on meta below.
@pytest.mark.parametrize(
    "model_id", [m if m == "sam" else pytest.param(m, marks=pytest.mark.slow) for m in PAPER.encoders])
def test_large_encoders_run_with_random_weights(model_id, monkeypatch):
    check_with_random_weights(model_id, "large", monkeypatch)


@pytest.mark.parametrize("model_id, size", ZOO)
@pytest.mark.parametrize("patch", [16, 8])
def test_every_encoder_runs_at_full_depth_on_meta(model_id, size, patch):
    """Shapes through every block, without the cost of initialising 300M weights."""
    variant = PAPER.variant(model_id, size)
    with torch.device("meta"):
        encoder = Encoder(variant.timm_name, CROP, patch, timm_kwargs=variant.timm_kwargs)
    run_encoder(model_id, size, patch, encoder, device="meta")


def _check_family(model_id: str, model: torch.nn.Module, grid: int) -> None:
    pos = getattr(model, "pos_embed", None)
    if model_id.startswith("deit3") or model_id == "dinov2_reg":  # no_embed_class: no CLS/register rows
        assert model.no_embed_class and pos.shape[1] == grid * grid
    elif model_id == "sam":
        assert pos.shape[1:3] == (grid, grid)
    elif model_id == "siglip":
        assert pos.shape[1] == grid * grid
    elif pos is not None:
        assert pos.shape[1] == 1 + grid * grid
    if isinstance(model, Eva):
        assert list(model.rope.feat_shape) == [grid, grid]
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


# ---- EVA-02 ---------------------------------------------------------------------------------------------------


EVA_TINY = dict(embed_dim=64, depth=1, num_heads=2)


@pytest.mark.parametrize("name", ["eva02_base_patch14_224", "eva02_base_patch16_clip_224"])
def test_eva02_rope_equals_a_model_built_at_the_new_grid(name):
    """The authors build a second timm model at the new size and copy its `.rope`; this must agree."""
    encoder = Encoder(name, 160, 8, timm_kwargs=EVA_TINY)
    reference = timm.create_model(name, num_classes=0, img_size=160, patch_size=8, **EVA_TINY)
    native = timm.create_model(name, num_classes=0, **EVA_TINY)
    assert list(encoder.model.rope.feat_shape) == [20, 20]
    torch.testing.assert_close(encoder.model.rope.get_embed(), reference.rope.get_embed())
    assert native.rope.get_embed().shape[0] != 400  # the native grid differs, so the rebuild mattered
    with torch.no_grad():
        assert encoder(torch.rand(1, 3, 160, 160)).shape == (1, 400, 64)


def test_eva02_mim_has_no_final_norm_but_clip_does():
    """timm's EVA-02 MIM pools by average, moving the final LN into fc_norm (reference §1)."""
    mim = Encoder("eva02_base_patch14_224.mim_in22k", 112, 16, timm_kwargs=EVA_TINY).model
    clip = Encoder("eva02_base_patch16_clip_224.merged2b", 112, 16, timm_kwargs=EVA_TINY).model
    assert isinstance(mim.norm, torch.nn.Identity) and not isinstance(clip.norm, torch.nn.Identity)


# ---- The zoo listing ------------------------------------------------------------------------------------------


def test_zoo_listing_covers_every_encoder_with_its_grid():
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.tools.zoo", "--params", "params-paper.yaml", "--patch-size", "8"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == 22
    for model_id, size in ZOO:
        row = next(r for r in rows if r.startswith(f"| {model_id} | {size} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == f"`{PAPER.variant(model_id, size).timm_name}`"
        assert cells[5] == str(WIDTH[size]) and cells[7] == "64x64" and cells[8] == "4096"
        assert 86 < float(cells[4]) < 96 if size == "base" else 300 < float(cells[4]) < 320


def test_the_readme_zoo_table_is_the_zoo_listing():
    out = subprocess.run([sys.executable, "-m", "pipeline.tools.zoo", "--params", "params-paper.yaml"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The model zoo"):readme.index("Per family")]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table == [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 22


def test_zoo_listing_names_an_unknown_model():
    result = subprocess.run([sys.executable, "-m", "pipeline.tools.zoo", "--models", "nope"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1 and "error: --models: unknown model 'nope'" in result.stderr
