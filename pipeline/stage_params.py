"""The params each run of a matrix stage reads, resolved, and the files in params.resolved/ that DVC tracks for it.

DVC can depend on a params key it can name, not on one it would have to compute: finetune@<model>-<setting>-<seed>
reads the `data_cfg` entry of its setting's dataset and the `decoder_cfg` entry of its setting's decoder, and a
setting may override both. So the `validate` stage writes each run's params, resolved, to
params.resolved/<stage>/<run>.json, and the run depends on that file instead of on params keys. The stage takes its
config from the same function that fills the file, so the file holds everything the run reads, except what
changes no result: logging cadence (`log_every`), the seed of a fine-tuning (it is in the stage's name) and the
`checkpoint` section.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.atomic import write_text
from pipeline.config import (PRETRAIN_FAMILY_SECTIONS, AlignCfg, FinetuneCfg, Mask2FormerCfg, MethodCfg, Params,
                             PretrainCfg, Run, Variant, ZeroshotCfg)
from pipeline.networks.text_tower_cfg import TextTowerCfg
from pipeline.training.choices import TOY_PRETRAININGS

RESOLVED = Path("params.resolved")
NOT_RESULTS = {"log_every"}  # section keys that only set how often a run logs


@dataclass(frozen=True)
class PretrainParams:
    pretraining: str
    variant: Variant
    normalization: str
    toy: PretrainCfg | None  # the toy pretraining's settings (other families' sections None); None for hub and file


@dataclass(frozen=True)
class FinetuneParams:
    run: Run
    finetune: FinetuneCfg
    mask2former: Mask2FormerCfg | None  # None unless the setting's decoder is mask2former


@dataclass(frozen=True)
class AlignParams:
    variant: Variant
    align: AlignCfg
    text_tower: TextTowerCfg
    method: MethodCfg


@dataclass(frozen=True)
class ZeroshotParams:
    variant: Variant
    zeroshot: ZeroshotCfg
    text_tower: TextTowerCfg
    align_size: str
    align_normalization: str
    global_token: str
    image_size: int | None  # ImageNet classification's crop (align.image_size); None when zeroshot.imagenet is off


def pretrain(params: Params, model: str, size: str) -> PretrainParams:
    """A toy pretraining reads the shared keys of `pretrain` and its own family's section, not the others'."""
    variant = params.variant(model, size)  # checks the ids
    pretraining = params.model_cfg[model].pretraining
    toy = None
    if pretraining in TOY_PRETRAININGS:
        toy = dataclasses.replace(params.pretrain, **{name: None for name in PRETRAIN_FAMILY_SECTIONS
                                                      if name != pretraining})
    return PretrainParams(pretraining, variant, params.setup.normalization, toy)


def finetune(params: Params, model: str, setting: str, seed: int) -> FinetuneParams:
    run = params.run(model, setting, seed)
    return FinetuneParams(run, params.finetune,
                          params.mask2former if run.setup.decoder == "mask2former" else None)


def align(params: Params, tower: str, method: str) -> AlignParams:
    return AlignParams(params.tower_variant(tower), params.align, params.text_tower, params.method(method))


def zeroshot(params: Params, tower: str, method: str) -> ZeroshotParams:
    params.method(method)  # checks the id
    a = params.align
    return ZeroshotParams(params.tower_variant(tower), params.zeroshot, params.text_tower, a.size, a.normalization,
                          a.global_token, a.image_size if params.zeroshot.imagenet else None)


def runs(params: Params) -> dict[str, object]:
    """Every matrix run's resolved params, by the file that holds them (relative to params.resolved/)."""
    found: dict[str, object] = {}
    for model in params.encoders:
        for size in params.sizes:
            found[f"pretrain/{model}-{size}.json"] = pretrain(params, model, size)
    for model in params.models:
        for setting in params.settings:
            found[f"finetune/{model}-{setting}.json"] = finetune(params, model, setting, params.seeds[0])
    for tower in params.towers:
        for method in params.methods:
            found[f"align/{tower}-{method}.json"] = align(params, tower, method)
            found[f"zeroshot/{tower}-{method}.json"] = zeroshot(params, tower, method)
    return found


def as_json(resolved: object) -> str:
    """The file's text: every field, without the NOT_RESULTS keys and a fine-tuning's seed and name, keys sorted."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            value = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k not in NOT_RESULTS}
        return list(map(plain, value)) if isinstance(value, (list, tuple)) else value

    data = plain(resolved)
    if isinstance(resolved, FinetuneParams):
        data["run"].pop("seed")
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def write_all(params: Params, root: Path = RESOLVED) -> int:
    """Write every run's file, leaving files whose text is unchanged alone, and delete the files of runs no longer
    in the matrix. Returns the number of files written."""
    wanted = {name: as_json(resolved) for name, resolved in runs(params).items()}
    written = 0
    for name, text in wanted.items():
        path = root / name
        if not path.is_file() or path.read_text() != text:
            write_text(path, text)
            written += 1
    for path in root.rglob("*.json") if root.is_dir() else ():
        if path.relative_to(root).as_posix() not in wanted:
            path.unlink()
    return written
