"""BEiT-3 weights for a timm ViT with Magneto sub-LN.

The benchmark runs BEiT-3 as a timm ``vit_{base,large}_patch16_224`` built with
``num_classes=0`` and :data:`SUB_LN_KWARGS`, which gives every block BEiT-3's
sub-LN: ``attn.norm`` (LayerNorm before the attention output projection) and
``mlp.norm`` (LayerNorm after GELU, before ``fc2``). timm builds both with its
blocks' eps 1e-6; :func:`set_sub_ln_eps` gives them the authors' 1e-5 (they are
``nn.LayerNorm`` defaults in the authors' code, and torchscale's eps).

Two source layouts are accepted, detected from the keys:

* the official microsoft/unilm ``beit3_*_patch16_224.pth`` (torchscale multiway
  encoder, keys under ``beit3.``): the vision expert ``.A.`` is kept, the
  language expert ``.B.``, the text embedding, the mask token, the text
  position table and every key outside ``beit3.`` (MLM/MIM/task heads) are
  dropped, q/k/v are fused into ``attn.qkv`` and the 2-row torchscale offset is
  cut from the position table;
* the benchmark authors' converted ``*.pth.timm`` (timm-native keys except
  ``attn.proj.0`` = sub-LN and ``attn.proj.1`` = projection).

Unknown or incomplete keys raise :class:`CheckpointError` naming them.
"""
from __future__ import annotations

import re
from pathlib import Path

import timm
import torch

from pipeline.errors import CheckpointError, PipelineError
from pipeline.networks.weights import key_listing, load_state_dict_file, load_strict, save_state_dict

SUB_LN_KWARGS = {"scale_attn_norm": True, "scale_mlp_norm": True}
SUB_LN_EPS = 1e-5
TIMM_NAMES = {"base": "vit_base_patch16_224", "large": "vit_large_patch16_224"}
OFFICIAL_PREFIX = "beit3."
POS_TABLE = "encoder.embed_positions.A.weight"
POS_OFFSET = 2  # torchscale's PositionalEmbedding starts counting at padding_idx + 1 = 2
DEFAULT_IMG_SIZE = 224

_PARAM = r"(?P<param>weight|bias)"
_EXPERT = r"(?P<expert>[AB])"
_LAYER = r"encoder\.layers\.(?P<layer>\d+)\."

# Official keys (after stripping ``beit3.``) -> target template; None drops the key.
# Templates are formatted with the regex groups; keys of the language expert B are dropped.
_OFFICIAL_RULES: list[tuple[re.Pattern, str | None]] = [
    (re.compile(r"text_embed\.weight"), None),
    (re.compile(r"vision_embed\.mask_token"), None),
    (re.compile(r"vision_embed\.cls_token"), "cls_token"),
    (re.compile(rf"vision_embed\.proj\.{_PARAM}"), "patch_embed.proj.{param}"),
    (re.compile(r"encoder\.embed_positions\.B\.weight"), None),
    (re.compile(rf"encoder\.layer_norm\.{_EXPERT}\.{_PARAM}"), "norm.{param}"),
    (re.compile(rf"{_LAYER}self_attn_layer_norm\.{_EXPERT}\.{_PARAM}"), "blocks.{layer}.norm1.{param}"),
    (re.compile(rf"{_LAYER}self_attn\.inner_attn_ln\.{_EXPERT}\.{_PARAM}"), "blocks.{layer}.attn.norm.{param}"),
    (re.compile(rf"{_LAYER}self_attn\.out_proj\.{_EXPERT}\.{_PARAM}"), "blocks.{layer}.attn.proj.{param}"),
    (re.compile(rf"{_LAYER}final_layer_norm\.{_EXPERT}\.{_PARAM}"), "blocks.{layer}.norm2.{param}"),
    (re.compile(rf"{_LAYER}ffn\.{_EXPERT}\.(?P<fc>fc1|fc2)\.{_PARAM}"), "blocks.{layer}.mlp.{fc}.{param}"),
    (re.compile(rf"{_LAYER}ffn\.{_EXPERT}\.ffn_layernorm\.{_PARAM}"), "blocks.{layer}.mlp.norm.{param}"),
]
_QKV = re.compile(rf"{_LAYER}self_attn\.(?P<part>[qkv])_proj\.{_EXPERT}\.{_PARAM}")

# Target (timm) keys a converted BEiT-3 state dict may hold.
_TARGET = re.compile(
    r"cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|attn\.qkv|attn\.norm|attn\.proj|norm2|mlp\.fc1|mlp\.norm|mlp\.fc2)\.(weight|bias)"
)
_AUTHORS_RENAMES = [
    (re.compile(r"^(blocks\.\d+\.attn)\.proj\.0\."), r"\1.norm."),
    (re.compile(r"^(blocks\.\d+\.attn)\.proj\.1\."), r"\1.proj."),
]


def detect_format(state_dict: dict[str, torch.Tensor]) -> str:
    """``"official"`` (keys under ``beit3.``) or ``"timm"`` (the authors' ``.pth.timm`` or already converted)."""
    if any(k.startswith(OFFICIAL_PREFIX) for k in state_dict):
        return "official"
    if any(k.startswith("blocks.") for k in state_dict):
        return "timm"
    raise CheckpointError(
        "unrecognised BEiT-3 checkpoint layout: expected keys under 'beit3.' (official microsoft/unilm "
        f"checkpoint) or 'blocks.' (timm / authors' .pth.timm); first keys: {key_listing(list(state_dict)[:5])}"
    )


def convert_beit3_state_dict(
    state_dict: dict[str, torch.Tensor], *, img_size: int = DEFAULT_IMG_SIZE
) -> dict[str, torch.Tensor]:
    """Map an official BEiT-3 or an authors' ``.pth.timm`` state dict to timm ViT + sub-LN keys.

    `img_size` is only used to check the official vision position table, which must
    have 2 (offset) + 1 (CLS) + (img_size / patch)^2 rows.
    """
    if detect_format(state_dict) == "official":
        return _convert_official(state_dict, img_size)
    return _convert_authors_timm(state_dict)


def _convert_official(state_dict: dict[str, torch.Tensor], img_size: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, tuple[str, torch.Tensor]]] = {}  # (layer, param) -> part -> (key, tensor)
    layers: set[str] = set()
    unknown: list[str] = []
    pos_table: torch.Tensor | None = None
    for key, value in state_dict.items():
        if not key.startswith(OFFICIAL_PREFIX):
            continue  # MLM/MIM/task heads
        name = key[len(OFFICIAL_PREFIX):]
        if name == POS_TABLE:
            pos_table = value
            continue
        match = _QKV.fullmatch(name)
        if match:
            layers.add(match["layer"])
            if match["expert"] == "A":
                qkv.setdefault((match["layer"], match["param"]), {})[match["part"]] = (key, value)
            continue
        for pattern, template in _OFFICIAL_RULES:
            match = pattern.fullmatch(name)
            if match:
                if "layer" in match.groupdict():
                    layers.add(match["layer"])
                if template is not None and match.groupdict().get("expert", "A") == "A":
                    out[template.format(**match.groupdict())] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"unrecognised keys in BEiT-3 checkpoint ({len(unknown)}): {key_listing(sorted(unknown))}")

    missing = []
    for layer in sorted(layers, key=int):
        for param in ("weight", "bias"):
            parts = qkv.get((layer, param), {})
            absent = [p for p in "qkv" if p not in parts]
            missing += [f"{OFFICIAL_PREFIX}encoder.layers.{layer}.self_attn.{p}_proj.A.{param}" for p in absent]
            if not absent:
                out[f"blocks.{layer}.attn.qkv.{param}"] = torch.cat([parts[p][1] for p in "qkv"], dim=0)
    if missing:
        raise CheckpointError(f"BEiT-3 checkpoint lacks q/k/v projections ({len(missing)}): {key_listing(missing)}")

    if pos_table is None:
        raise CheckpointError(f"BEiT-3 checkpoint has no vision position table {OFFICIAL_PREFIX}{POS_TABLE}")
    out["pos_embed"] = _vision_pos_embed(pos_table, out.get("patch_embed.proj.weight"), img_size)
    return out


def _vision_pos_embed(table: torch.Tensor, proj_weight: torch.Tensor | None, img_size: int) -> torch.Tensor:
    patch = proj_weight.shape[-1] if proj_weight is not None and proj_weight.dim() == 4 else 16
    expected = POS_OFFSET + 1 + (img_size // patch) ** 2
    if table.dim() != 2 or table.shape[0] != expected:
        raise CheckpointError(
            f"{OFFICIAL_PREFIX}{POS_TABLE} has shape {tuple(table.shape)}; expected {expected} rows = "
            f"{POS_OFFSET} (torchscale offset) + 1 (CLS) + ({img_size}/{patch})^2 patches"
        )
    return table[POS_OFFSET:].unsqueeze(0).clone()


def _convert_authors_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        target = key
        for pattern, replacement in _AUTHORS_RENAMES:
            target = pattern.sub(replacement, target)
        if not _TARGET.fullmatch(target):
            unknown.append(key)
        elif target in out:
            raise CheckpointError(f"BEiT-3 checkpoint maps two keys onto {target} (one is {key})")
        else:
            out[target] = value
    if unknown:
        raise CheckpointError(f"unrecognised keys in BEiT-3 timm checkpoint ({len(unknown)}): {key_listing(sorted(unknown))}")
    return out


def build_beit3_model(timm_name: str, **model_kwargs) -> torch.nn.Module:
    """The benchmark's BEiT-3 encoder, randomly initialised: timm `timm_name` with sub-LN and no head."""
    if not timm.is_model(timm_name):
        raise PipelineError(f"unknown timm model {timm_name!r}; expected e.g. {', '.join(TIMM_NAMES.values())}")
    return set_sub_ln_eps(timm.create_model(timm_name, pretrained=False, num_classes=0, **SUB_LN_KWARGS,
                                            **model_kwargs))


def uses_sub_ln(timm_kwargs: dict) -> bool:
    return any(timm_kwargs.get(key) for key in SUB_LN_KWARGS)


def set_sub_ln_eps(model: torch.nn.Module) -> torch.nn.Module:
    """Give every block's sub-LNs (``attn.norm``, ``mlp.norm``) eps :data:`SUB_LN_EPS`; norm1/norm2 keep timm's."""
    for block in model.blocks:
        for norm in (block.attn.norm, block.mlp.norm):
            if isinstance(norm, torch.nn.LayerNorm):
                norm.eps = SUB_LN_EPS
    return model


def convert_beit3_checkpoint(
    src: str | Path, dst: str | Path, timm_name: str, *, model_kwargs: dict | None = None
) -> dict:
    """Convert `src` (official ``.pth`` or authors' ``.pth.timm``) to a ``.safetensors`` at `dst`.

    The converted weights are loaded strictly into ``timm_name`` (``num_classes=0``,
    :data:`SUB_LN_KWARGS`, plus `model_kwargs`) before anything is written; the file
    is written atomically. Returns a summary: timm_name, source format, tensors, params.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise PipelineError(f"converted weights are written as safetensors; give a .safetensors path, not {dst}")
    source = load_state_dict_file(src)
    fmt = detect_format(source)
    model = build_beit3_model(timm_name, **(model_kwargs or {}))
    img_size = model.patch_embed.img_size
    img_size = img_size[0] if isinstance(img_size, (tuple, list)) else img_size
    converted = convert_beit3_state_dict(source, img_size=int(img_size))
    load_strict(model, converted, str(src))
    state = model.state_dict()
    save_state_dict(state, dst)
    return {
        "timm_name": timm_name,
        "source_format": fmt,
        "num_tensors": len(state),
        "num_params": sum(v.numel() for v in state.values()),
        "dst": str(dst),
    }
