"""params.yaml as typed, validated objects (frozen pydantic dataclasses: `dataclasses.asdict` works on them).

Everything is checked when the file is loaded, before any compute: each error names the full key and what it allows
(the allowed values or keys, the closest one to a typo). A *setting* is a named set of overrides of the base setup;
`Params.run()` resolves one (model, setting, seed) into everything a fine-tuning run needs.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml
from pydantic import (AfterValidator, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat, StrictInt,
                      StrictStr, TypeAdapter, ValidationError, model_validator, with_config)
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from typing_extensions import TypedDict, is_typeddict

from pipeline.datasets.choices import ConceptBackend, ConceptSource
from pipeline.datasets.concept_bank import ConceptBank
from pipeline.datasets.sources import SOURCES
from pipeline.datasets.specs import CLASSIFICATION_SPLITS, IMAGENET, SPECS, VIEWS, get_view, has_background
from pipeline.errors import ConfigError
from pipeline.evaluation.choices import ZeroshotResize
from pipeline.networks.choices import Decoder, FinetuneNormalization, GlobalToken, Normalization
from pipeline.networks.text_tower_cfg import TextTowerCfg
from pipeline.training.choices import (TOY_PRETRAININGS, ConceptQuery, ConceptTarget, FeatureCache, Precision,
                                       Pretraining)

# Scalars are strict: YAML's 1.0 is no int, true no 1, and '1e-4' (YAML 1.1 reads 1e-4 as a string) no float.
PositiveInt = Annotated[StrictInt, Field(gt=0)]
PositiveFloat = Annotated[StrictFloat, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
Fraction = Annotated[StrictFloat, Field(gt=0, lt=1)]
Size = Literal["base", "large"]  # the variants a model_cfg entry may have
SIZES = get_args(Size)
TauVariant = Literal["b", "c"]   # scipy.stats.kendalltau's
Dataset = Literal[tuple(SPECS) + tuple(CLASSIFICATION_SPLITS)]
Source = Literal[tuple(SOURCES)]
Benchmark = Literal[tuple(SPECS) + tuple(VIEWS)]
ID_PATTERN = re.compile(r"^[a-z0-9_]+$")
T = TypeVar("T")


def _id(name: str) -> str:
    if not ID_PATTERN.match(name):
        raise ValueError(f"{name!r} is not a valid id (use [a-z0-9_]: it appears in stage names and paths)")
    return name


def _unique(items: tuple) -> tuple:
    if len(set(items)) != len(items):
        raise ValueError(f"duplicate entries in {list(items)}")
    return items


def _url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"expected an http(s) URL, got {url!r}")
    return url


def _scale_range(high: float = math.inf):
    """[low, high] with 0 < low <= high (<= `high`)."""
    def check(pair: tuple[float, float]) -> tuple[float, float]:
        if not 0 < pair[0] <= pair[1] <= high:
            bound = f" <= {high}" if high < math.inf else ""
            raise ValueError(f"expected [low, high] with 0 < low <= high{bound}, got {list(pair)}")
        return pair
    return Annotated[tuple[StrictFloat, StrictFloat], AfterValidator(check)]


Id = Annotated[StrictStr, AfterValidator(_id)]
Unique = Annotated[tuple[T, ...], AfterValidator(_unique)]
Url = Annotated[StrictStr, AfterValidator(_url)]
section = dataclass(frozen=True, config=ConfigDict(extra="forbid"))


@section
class _Section:
    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, data: Any) -> Any:
        """`key:` left empty in YAML (None) is the key left out: its default, or missing."""
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


@section
class Setup(_Section):
    """The keys a setting may override (the paper's benchmark settings)."""

    decoder: Decoder
    size: Size
    patch_size: StrictInt
    freeze_encoder: StrictBool
    dataset: StrictStr
    eval_dataset: StrictStr
    normalization: FinetuneNormalization


SETUP_KEYS = tuple(f.name for f in dataclasses.fields(Setup))
Overrides = Annotated[  # a setting's: some keys of Setup; `name:` left empty overrides none
    with_config(ConfigDict(extra="forbid"))(TypedDict("Overrides", get_type_hints(Setup, include_extras=True),
                                                      total=False)),
    BeforeValidator(lambda overrides: {} if overrides is None else overrides)]


@section
class Variant(_Section):
    """One size of a model: the timm model, its construction switches and where its weights come from.

    `pretrain_tokens` is the number of tokens per image in the model's (last) pretraining
    stage (paper Table 2), shown next to the fine-tuning grid by the zoo listing.
    """

    timm_name: StrictStr
    timm_kwargs: dict = dataclasses.field(default_factory=dict)
    pretrained: StrictBool = False
    checkpoint: StrictStr | None = None
    pretrain_tokens: PositiveInt | None = None

    @property
    def toy_input(self) -> tuple[int, int]:
        """(image size, patch size) a toy is pretrained at: its timm kwargs, else timm's ViT defaults."""
        return self.timm_kwargs.get("img_size", 224), self.timm_kwargs.get("patch_size", 16)

    @property
    def native_patch_size(self) -> int:
        """The model's own patch size: its timm kwargs, else the timm name (`..._patch14_...`), else 16."""
        match = re.search(r"patch(\d+)", self.timm_name)
        return self.timm_kwargs.get("patch_size") or (int(match.group(1)) if match else 16)


@section
class ModelCfg(_Section):
    """`compile: false` keeps torch.compile off for this model whatever finetune.compile says (EVA-02)."""

    pretraining: Pretraining
    compile: StrictBool = True
    base: Variant | None = None
    large: Variant | None = None

    @property
    def variants(self) -> dict[str, Variant]:
        return {size: variant for size in SIZES if (variant := getattr(self, size)) is not None}


@section
class DataCfg(_Section):
    crop: PositiveInt
    steps: PositiveInt


@section
class PrepareCfg(_Section):
    shard_size: PositiveInt
    workers: StrictInt


@with_config(ConfigDict(extra="forbid"))
class GenerateCfg(TypedDict):
    """The miniature generator's `seed` and `counts` (per dataset and split; the generator checks the splits)."""

    seed: StrictInt
    counts: dict


@section
class DownloadCfg(_Section):
    cache_dir: StrictStr                 # where archives are downloaded (and resumed) before being linked in
    retries: NonNegativeInt
    backoff_s: Annotated[StrictFloat, Field(ge=0)]
    timeout_s: PositiveFloat
    mirrors: dict[StrictStr, Url] = dataclasses.field(default_factory=dict)  # file name -> URL used instead


@section
class ClipCfg(_Section):
    """pretrain.clip: the toy CLIP's joint embedding and its text tower, trained from scratch with the image tower."""

    embed_dim: PositiveInt
    text_width: PositiveInt
    text_layers: PositiveInt
    text_heads: PositiveInt


@section
class DinoCfg(_Section):
    """pretrain.dino: the toy DINO's head, views and teacher (Caron et al. 2021)."""

    out_dim: PositiveInt         # prototypes of the weight-normalised last layer
    hidden_dim: PositiveInt      # of the head's 3-layer MLP
    bottleneck_dim: PositiveInt
    global_scale: _scale_range(high=1)
    local_crops: NonNegativeInt
    local_size: PositiveInt
    local_scale: _scale_range(high=1)
    student_temp: PositiveFloat
    teacher_temp: PositiveFloat
    center_momentum: Fraction
    teacher_momentum: Fraction   # at the first step; cosine to 1 at the last


@section
class PretrainCfg(_Section):
    """The toy pretrainings' shared training keys, then each family's own (`clip` and `dino` only where needed)."""

    dataset: StrictStr
    steps: PositiveInt
    batch_size: PositiveInt
    lr: PositiveFloat
    weight_decay: StrictFloat
    mask_ratio: Fraction
    presence_cell: PositiveInt
    workers: StrictInt
    seed: StrictInt
    clip: ClipCfg | None = None
    dino: DinoCfg | None = None


# The sections of `pretrain` that one toy pretraining reads, named after it (another family's pretrain@ reads none).
PRETRAIN_FAMILY_SECTIONS = tuple(f.name for f in dataclasses.fields(PretrainCfg) if f.name in TOY_PRETRAININGS)


@section
class FinetuneCfg(_Section):
    batch_size: PositiveInt
    micro_batch_size: PositiveInt
    lr: PositiveFloat
    encoder_lr_multiplier: StrictFloat
    weight_decay: StrictFloat
    poly_power: StrictFloat
    scale_range: _scale_range()
    precision: Precision
    compile: StrictBool
    workers: StrictInt
    eval_batch_size: PositiveInt  # windows per forward in evaluation (of consecutive images)
    log_every: PositiveInt
    val_every: Annotated[NonNegativeInt, Field(description="0 = none")]  # optimizer steps between validations
    preview_images: Annotated[NonNegativeInt, Field(description="0 = none")]  # validation images in the figure

    def accumulation(self, world_size: int = 1) -> int:
        return accumulation("finetune", self.batch_size, self.micro_batch_size, world_size)


@section
class Mask2FormerCfg(_Section):
    """Single-scale Mask2Former: architecture, then matcher/loss (reference §3)."""

    hidden_dim: PositiveInt
    num_queries: PositiveInt
    num_blocks: PositiveInt
    num_heads: PositiveInt
    ffn_dim: PositiveInt
    num_points: PositiveInt
    oversample_ratio: Annotated[StrictFloat, Field(ge=1)]
    importance_ratio: Annotated[StrictFloat, Field(ge=0, le=1)]
    class_weight: StrictFloat
    mask_weight: StrictFloat
    dice_weight: StrictFloat
    no_object_weight: StrictFloat

    def __post_init__(self) -> None:
        if self.hidden_dim % self.num_heads:
            raise ConfigError(f"decoder_cfg.mask2former.hidden_dim ({self.hidden_dim}) must be a multiple of "
                              f"num_heads ({self.num_heads})")

    @property
    def decoder_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in ("hidden_dim", "num_queries", "num_blocks", "num_heads", "ffn_dim")}

    @property
    def loss_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in (
            "class_weight", "mask_weight", "dice_weight", "no_object_weight", "num_points", "oversample_ratio",
            "importance_ratio")}


@section
class DecoderCfg(_Section):
    mask2former: Mask2FormerCfg  # the linear head has no options


@section
class ConceptsCfg(_Section):
    """The `concepts` stage: caption concepts (spaCy) into WebDataset shards (SimZSS notes §1).

    It reads `<data_root>/<source>`, which is its DVC dependency. `source` img2dataset reads the img2dataset shards
    `shards` names, the folder `<data_root>/img2dataset` or a brace pattern of files in it (`_validate_caption_source`),
    instead of COCO Captions; `split` and `shard_size` are COCO's only (the output is shard for shard).
    """

    source: ConceptSource
    bank: ConceptBank
    backend: ConceptBackend
    spacy_model: StrictStr
    split: Literal["train", "val"]
    image_size: PositiveInt
    shard_size: PositiveInt
    max_concepts: PositiveInt
    max_concept_tokens: PositiveInt
    shards: StrictStr | None = None

    def __post_init__(self) -> None:
        if self.source == "img2dataset" and not (self.shards or "").strip():
            raise ConfigError("concepts.shards must name the img2dataset shards when concepts.source is img2dataset: "
                              "a folder of .tar shards or a brace pattern such as "
                              "data/raw/img2dataset/{00000..00099}.tar")
        if self.source == "coco_captions" and self.shards is not None:
            raise ConfigError(f"concepts.shards ({self.shards!r}) is read only with concepts.source: img2dataset; "
                              "leave it empty for coco_captions")


@section
class AlignCfg(_Section):
    size: Size
    image_size: PositiveInt
    crop_scale: _scale_range(high=1)
    normalization: Normalization
    batch_size: PositiveInt
    micro_batch_size: PositiveInt
    samples_per_epoch: PositiveInt
    epochs: PositiveInt
    lr: PositiveFloat
    betas: tuple[StrictFloat, StrictFloat]
    eps: PositiveFloat
    weight_decay: StrictFloat
    warmup: Annotated[StrictFloat, Field(ge=0, lt=1, description="a fraction of the steps")]
    logit_scale_init: PositiveFloat
    logit_scale_max: PositiveFloat
    concept_temperature: PositiveFloat
    concept_scale: PositiveFloat
    concept_target: ConceptTarget
    concept_query: ConceptQuery
    global_token: GlobalToken
    feature_cache: FeatureCache
    cache_dir: StrictStr
    precision: Precision
    workers: StrictInt
    shuffle_buffer: StrictInt
    log_every: PositiveInt
    seed: StrictInt

    @property
    def steps(self) -> int:
        return self.epochs * -(-self.samples_per_epoch // self.batch_size)

    def accumulation(self, world_size: int = 1) -> int:
        return accumulation("align", self.batch_size, self.micro_batch_size, world_size)

    @property
    def scaled_lr(self) -> float:
        """`lr` is per 256 samples, as the authors' main.py scales it."""
        return self.lr * self.batch_size / 256


def accumulation(section: str, batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Micro-batches per process and optimizer step, so that micro x accumulation x processes = batch_size."""
    per_step = micro_batch_size * world_size
    if batch_size % per_step:
        raise ConfigError(f"{section}.batch_size ({batch_size}) must be a multiple of {section}.micro_batch_size "
                          f"({micro_batch_size}) x {world_size} process(es)")
    return batch_size // per_step


@section
class CheckpointCfg(_Section):
    """Training checkpoints: not part of any stage's params (they do not change results)."""

    every: Annotated[NonNegativeInt, Field(description="0 = no checkpoints")]  # optimizer steps between checkpoints
    dir: StrictStr  # persistent folder outside DVC's outputs, one sub-folder per stage


@section
class MethodCfg(_Section):
    """simzss: global + concept loss; lit: concept_weight 0 (the LiT baseline)."""

    concept_weight: Annotated[StrictFloat, Field(ge=0)]


@section
class ZeroshotCfg(_Section):
    benchmarks: tuple[Benchmark, ...]
    short_side: PositiveInt
    resize: ZeroshotResize  # mmseg: TCL's mmcv imrescale (bilinear, no antialias, long side <= long_side) | antialias
    long_side: PositiveInt  # cap on the resized long side under `resize: mmseg`
    window: PositiveInt
    stride: PositiveInt
    background_threshold: dict[StrictStr, StrictFloat]
    threshold_sweep: tuple[StrictFloat, ...]
    batch_size: PositiveInt  # windows per forward (of consecutive images)
    workers: NonNegativeInt  # DataLoader workers decoding the validation images
    precision: Precision
    imagenet: StrictBool = False  # ImageNet-1k val zero-shot top-1/top-5 (prepare@imagenet) at align.image_size

    def __post_init__(self) -> None:
        if self.stride > self.window:
            raise ConfigError(f"zeroshot.stride ({self.stride}) must not exceed zeroshot.window ({self.window})")
        if self.long_side < self.short_side:
            raise ConfigError(f"zeroshot.long_side ({self.long_side}) must be at least "
                              f"zeroshot.short_side ({self.short_side})")
        for name in self.benchmarks:
            if has_background(name) and name not in self.background_threshold:
                raise ConfigError(f"zeroshot.background_threshold.{name}: missing; benchmark {name!r} has a "
                                  "background class, predicted where the best foreground score is below this threshold")
        extra = sorted(set(self.background_threshold) - set(self.benchmarks))
        if extra:
            raise ConfigError(f"zeroshot.background_threshold: {extra} not in zeroshot.benchmarks "
                              f"{list(self.benchmarks)}")


@section
class RankCfg(_Section):
    base_setting: StrictStr
    tau_variant: TauVariant
    resamples: PositiveInt  # bootstrap resamples of the validation images and seeds (pipeline.analysis.bootstrap)
    confidence: Fraction    # level of the percentile intervals
    bootstrap_seed: StrictInt


@dataclasses.dataclass(frozen=True)
class Run:
    """One fine-tuning run: finetune@<model>-<setting>-<seed>."""

    model: str
    setting: str
    seed: int
    setup: Setup
    variant: Variant
    crop: int
    steps: int
    compile: bool

    @property
    def name(self) -> str:
        return f"{self.model}-{self.setting}-{self.seed}"


@section
class Params(Setup):
    """params.yaml: the base setup (the inherited keys), the study's ids and each section."""

    models: Unique[StrictStr]
    settings: Unique[StrictStr]
    seeds: tuple[StrictInt, ...]
    datasets: Unique[Dataset]
    downloads: Unique[Source]
    sizes: Unique[Size]
    towers: Unique[StrictStr]
    encoders: Unique[StrictStr]  # model_cfg ids pretrain@<id>-<size> makes ready: every model and every tower
    methods: Unique[StrictStr]
    model_cfg: dict[Id, ModelCfg]
    setting_cfg: dict[Id, Overrides]
    data_root: StrictStr
    data_cfg: dict[StrictStr, DataCfg]
    decoder_cfg: DecoderCfg
    method_cfg: dict[Id, MethodCfg]
    generate: GenerateCfg
    download: DownloadCfg
    prepare: PrepareCfg
    pretrain: PretrainCfg
    finetune: FinetuneCfg
    checkpoint: CheckpointCfg
    rank: RankCfg
    concepts: ConceptsCfg
    text_tower: TextTowerCfg
    align: AlignCfg
    zeroshot: ZeroshotCfg

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def setup(self) -> Setup:
        return Setup(**{key: getattr(self, key) for key in SETUP_KEYS})

    @property
    def mask2former(self) -> Mask2FormerCfg:
        return self.decoder_cfg.mask2former

    def setup_for(self, setting: str) -> Setup:
        _check_choice(f"setting '{setting}'", setting, tuple(self.setting_cfg))
        return dataclasses.replace(self.setup, **self.setting_cfg[setting])

    def variant(self, model: str, size: str) -> Variant:
        """The `size` variant of an encoder (an id of `encoders`: a benchmark model or a SimZSS tower)."""
        _check_choice("model (an id of encoders)", model, self.encoders)
        _check_choice("size", size, self.sizes)
        return self.model_cfg[model].variants[size]

    def tower_variant(self, tower: str) -> Variant:
        """The variant (align.size) of a SimZSS tower."""
        _check_choice("tower", tower, self.towers)
        return self.model_cfg[tower].variants[self.align.size]

    def method(self, method: str) -> MethodCfg:
        _check_choice("method", method, self.methods)
        return self.method_cfg[method]

    def run(self, model: str, setting: str, seed: int) -> Run:
        _check_choice("model", model, self.models)
        _check_choice("setting", setting, self.settings)
        _check_choice("seed", seed, self.seeds)
        setup = self.setup_for(setting)
        data = self.data_cfg[setup.dataset]
        model_cfg = self.model_cfg[model]
        return Run(model, setting, seed, setup, model_cfg.variants[setup.size], data.crop, data.steps,
                   compile=self.finetune.compile and model_cfg.compile)


# ---------------------------------------------------------------------------------------------------------------
# Loading, and the checks that span keys (each key's own are its type's)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return parse_params(raw)


def parse_params(raw: dict) -> Params:
    try:
        return TypeAdapter(Params).validate_python(raw)
    except ValidationError as err:
        raise ConfigError(_message(err)) from None


def _validate(p: Params) -> None:
    for name, cfg in p.model_cfg.items():
        for size, variant in cfg.variants.items():
            if cfg.pretraining == "hub" and not variant.pretrained:
                raise ConfigError(f"model_cfg.{name}.{size}.pretrained must be true when "
                                  f"model_cfg.{name}.pretraining is 'hub'")
            if cfg.pretraining == "file" and not variant.checkpoint:
                raise ConfigError(f"model_cfg.{name}.{size}.checkpoint must name a local file when "
                                  f"model_cfg.{name}.pretraining is 'file'")
    for key, ids, per_id in (("models", p.models, "model_cfg"), ("settings", p.settings, "setting_cfg"),
                             ("encoders", p.encoders, "model_cfg"), ("towers", p.towers, "model_cfg"),
                             ("methods", p.methods, "method_cfg")):
        allowed = tuple(getattr(p, per_id))
        for i, name in enumerate(ids):
            if name not in allowed:
                raise ConfigError(f"{key}[{i}]: unknown value {name!r}{did_you_mean([name], allowed)}; allowed: "
                                  f"{list(allowed)}, the ids of {per_id} (a new id needs its {per_id}.{name} entry)")
    if not p.models or not p.settings or not p.seeds:
        raise ConfigError("models, settings and seeds must each list at least one entry")
    _check_choice("rank.base_setting", p.rank.base_setting, p.settings)
    _check_choice("pretrain.dataset", p.pretrain.dataset, _segmentation(p))
    for key, ids in (("models", p.models), ("towers", p.towers)):
        for i, name in enumerate(ids):
            if name not in p.encoders:
                raise ConfigError(f"{key}[{i}]: {name!r} is missing from encoders {list(p.encoders)}, the ids whose "
                                  "weights pretrain@<id>-<size> makes ready; add it there")
    for model in p.encoders:
        missing = [s for s in p.sizes if s not in p.model_cfg[model].variants]
        if missing:
            raise ConfigError(f"model_cfg.{model}: no variant for size(s) {missing} listed in sizes")
    _validate_setup(p, p.setup, "base setup")
    for setting in p.settings:
        _validate_setup(p, p.setup_for(setting), f"setting '{setting}' (setting_cfg.{setting} over the base setup)")
    p.finetune.accumulation()
    p.align.accumulation()
    _validate_pretrain(p)
    _validate_simzss(p)
    _validate_caption_source(p)


def _validate_caption_source(p: Params) -> None:
    """The concepts stage's DVC dependency is `<data_root>/<concepts.source>` (dvc.yaml): img2dataset shards must be
    that folder, or a brace pattern (or one file) directly in it, so that DVC sees a changed input shard. A path
    elsewhere would be read but not tracked."""
    if p.concepts.source != "img2dataset":
        return
    folder = Path(p.data_root) / "img2dataset"
    shards = Path(p.concepts.shards.strip())
    if _same_path(shards, folder) or (_same_path(shards.parent, folder) and "{" not in str(shards.parent)):
        return
    raise ConfigError(f"concepts.shards ({p.concepts.shards!r}) must be the folder {folder}/ (data_root/img2dataset, "
                      f"the concepts stage's DVC dependency) or a brace pattern of the .tar files directly in it, such "
                      f"as {folder}/{{00000..00099}}.tar; mount a shard set kept elsewhere there")


def _same_path(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _validate_pretrain(p: Params) -> None:
    cell, pretrain = p.pretrain.presence_cell, p.pretrain
    for name in p.encoders:
        pretraining = p.model_cfg[name].pretraining
        if pretraining in PRETRAIN_FAMILY_SECTIONS and getattr(pretrain, pretraining) is None:
            raise ConfigError(f"pretrain.{pretraining}: missing; model_cfg.{name}.pretraining is {pretraining!r}")
        for size in p.sizes:
            img_size, patch = p.model_cfg[name].variants[size].toy_input
            if pretraining == "supervised" and (img_size % cell or cell % patch):
                raise ConfigError(f"pretrain.presence_cell ({cell}) must divide model_cfg.{name}.{size} img_size "
                                  f"({img_size}) and be a multiple of its patch size ({patch})")
            if pretraining == "dino" and (pretrain.dino.local_size % patch or pretrain.dino.local_size > img_size):
                raise ConfigError(f"pretrain.dino.local_size ({pretrain.dino.local_size}) must be a multiple of "
                                  f"model_cfg.{name}.{size}'s patch size ({patch}) and at most its img_size "
                                  f"({img_size})")
    if pretrain.clip and pretrain.clip.text_width % pretrain.clip.text_heads:
        raise ConfigError(f"pretrain.clip.text_width ({pretrain.clip.text_width}) must be a multiple of "
                          f"pretrain.clip.text_heads ({pretrain.clip.text_heads})")


def _segmentation(p: Params) -> list[str]:
    """The datasets of `datasets` with label maps: those a model can be trained or evaluated on."""
    return [name for name in p.datasets if name in SPECS]


def _validate_simzss(p: Params) -> None:
    _check_choice("align.size", p.align.size, p.sizes)
    if p.zeroshot.imagenet and IMAGENET not in p.datasets:
        raise ConfigError(f"zeroshot.imagenet: true scores ImageNet-1k val prepared by prepare@{IMAGENET}, but "
                          f"{IMAGENET!r} is not in datasets {list(p.datasets)}; add it there")
    for name in p.zeroshot.benchmarks:
        base = get_view(name).base if name in VIEWS else name
        if base not in p.datasets:
            raise ConfigError(f"zeroshot.benchmarks: {name!r} is scored on prepare@{base}, but {base!r} is not in "
                              f"datasets {list(p.datasets)}")
        if "val" not in SPECS[base].splits:
            raise ConfigError(f"zeroshot.benchmarks: {name!r} needs the validation split of {base!r}, which has none")
    if p.text_tower.width % p.text_tower.heads:
        raise ConfigError(f"text_tower.width ({p.text_tower.width}) must be a multiple of text_tower.heads "
                          f"({p.text_tower.heads})")
    for tower in p.towers:
        patch = p.model_cfg[tower].variants[p.align.size].native_patch_size
        for key, size in (("align.image_size", p.align.image_size), ("zeroshot.window", p.zeroshot.window)):
            if size % patch:
                raise ConfigError(f"{key} ({size}) must be a multiple of tower {tower!r}'s patch size ({patch}): "
                                  "towers keep their native patch size")


def _validate_setup(p: Params, s: Setup, where: str) -> None:
    _check_choice(f"size in {where}", s.size, p.sizes)
    _check_choice(f"dataset in {where}", s.dataset, _segmentation(p))
    _check_choice(f"eval_dataset in {where}", s.eval_dataset, _segmentation(p))
    for key, name in (("dataset", s.dataset), ("eval_dataset", s.eval_dataset)):
        if name not in p.data_cfg:
            raise ConfigError(f"{key} in {where}: '{name}' is trained or evaluated on, but data_cfg.{name} "
                              "(crop, steps) is missing")
    if "val" not in SPECS[s.eval_dataset].splits:
        raise ConfigError(
            f"eval_dataset in {where}: '{s.eval_dataset}' has no validation split "
            f"(datasets with one: {[n for n in p.datasets if 'val' in SPECS[n].splits]})"
        )
    if SPECS[s.dataset].classes != SPECS[s.eval_dataset].classes:
        raise ConfigError(f"{where}: dataset '{s.dataset}' and eval_dataset '{s.eval_dataset}' have different classes")
    crop, eval_crop = p.data_cfg[s.dataset].crop, p.data_cfg[s.eval_dataset].crop
    if crop != eval_crop:
        raise ConfigError(
            f"{where}: data_cfg.{s.dataset}.crop ({crop}) and data_cfg.{s.eval_dataset}.crop ({eval_crop}) "
            "must match: the model is evaluated at the crop it was trained with"
        )
    if s.patch_size <= 0 or crop % s.patch_size:
        divisors = [d for d in range(1, crop + 1) if crop % d == 0 and d <= 32]
        raise ConfigError(
            f"patch_size in {where}: {s.patch_size} does not divide the crop {crop} (data_cfg.{s.dataset}.crop); "
            f"allowed: {divisors}"
        )


def _check_choice(key: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: unknown value {value!r}{did_you_mean([value], allowed)}; "
                          f"allowed: {list(allowed)}")


def did_you_mean(names, allowed) -> str:
    """` (did you mean 'decoder'?)`: the closest allowed name to each unknown one that has a close one, or ''."""
    pairs = [(name, match[0]) for name in names
             if (match := difflib.get_close_matches(str(name), [str(a) for a in allowed], n=1))]
    if len(pairs) == 1 and len(names) == 1:
        return f" (did you mean {pairs[0][1]!r}?)"
    return f" (did you mean {', '.join(f'{m!r} for {n!r}' for n, m in pairs)}?)" if pairs else ""


# ---------------------------------------------------------------------------------------------------------------
# pydantic's errors as one line naming the full key and what it allows


_EXPECTED = {"int_type": "int", "float_type": "float", "bool_type": "bool", "string_type": "str", "dict_type": "dict",
             "dataclass_type": "dict", "tuple_type": "list"}
_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _message(err: ValidationError) -> str:
    """The first error; unknown keys come first (a typo also leaves the key it misspells missing)."""
    errors = sorted(err.errors(), key=lambda e: e["type"] not in ("unexpected_keyword_argument", "extra_forbidden"))
    loc, kind, value = errors[0]["loc"], errors[0]["type"], errors[0]["input"]
    key = _key(loc)
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        names = sorted((e["loc"][-1] for e in errors if e["type"] == kind and e["loc"][:-1] == loc[:-1]), key=str)
        allowed = list(get_type_hints(_bare(_type_at(loc[:-1]))))
        where = f"{_key(loc[:-1])}: unknown key(s)" if loc[:-1] else "unknown top-level key(s)"
        return f"{where} {names}{did_you_mean(names, allowed)}; allowed: {allowed}"
    if kind == "value_error":  # a ConfigError is a whole message, a ValueError one about the value at `key`
        error = errors[0]["ctx"]["error"]
        return str(error) if isinstance(error, ConfigError) or not key else f"{key}: {error}"
    if kind == "too_long" or kind == "missing" and isinstance(loc[-1], int):  # a list of fixed length
        tuple_loc = loc if kind == "too_long" else loc[:-1]
        items = ", ".join(_bare(item).__name__ for item in get_args(_bare(_type_at(tuple_loc))))
        return f"{_key(tuple_loc)}: expected [{items}], got {value!r}"
    if kind == "missing":
        return f"{key}: missing"
    if kind == "literal_error":
        allowed = get_args(_bare(_type_at(loc)))
        return f"{key}: unknown value {value!r}{did_you_mean([value], allowed)}; allowed: {list(allowed)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{key} must be {_bounds(_type_at(loc))}, got {value!r}"
    if kind in _EXPECTED:
        hint = " (write floats as 1.0e-4: YAML 1.1 reads 1e-4 as a string)" if kind == "float_type" and isinstance(
            value, str) else ""
        return f"{key}: expected {_EXPECTED[kind]}, got {value!r}{hint}"
    return f"{key}: {errors[0]['msg']}, got {value!r}"


def _key(loc: tuple) -> str:
    """('models', 1) -> 'models[1]', ('finetune', 'lr') -> 'finetune.lr' (a dict key's own errors are its entry's)."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else "" if part == "[key]" else f".{part}" if key else part
    return key


def _type_at(loc: tuple) -> Any:
    """The annotation the value at `loc` of params.yaml is validated against."""
    annotation = Params
    for part in loc:
        annotation = _bare(annotation)
        if dataclasses.is_dataclass(annotation) or is_typeddict(annotation):
            annotation = get_type_hints(annotation, include_extras=True)[part]
        else:  # dict[str, X] -> X; tuple[X, ...] -> X (the fixed-length tuples hold one type)
            annotation = get_args(annotation)[-1 if get_origin(annotation) is dict else 0]
    return annotation


def _required(annotation: Any) -> Any:
    """`annotation` without `| None`."""
    return get_args(annotation)[0] if type(None) in get_args(annotation) else annotation


def _bare(annotation: Any) -> Any:
    """`annotation` without `| None` and its Annotated metadata."""
    annotation = _required(annotation)
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def _bounds(annotation: Any) -> str:
    """'positive', '>= 0', 'in [0, 1)' ...: the bounds of a number's Field, and its description."""
    fields = [m for m in get_args(_required(annotation))[1:] if isinstance(m, FieldInfo)]
    bounds = {name: getattr(m, name) for f in fields for m in f.metadata for name in _BOUNDS if hasattr(m, name)}
    if bounds == {"gt": 0}:
        text = "positive"
    elif len(bounds) == 2:
        low, high = ("ge" if "ge" in bounds else "gt"), ("le" if "le" in bounds else "lt")
        text = f"in {'[' if low == 'ge' else '('}{bounds[low]}, {bounds[high]}{']' if high == 'le' else ')'}"
    else:
        text = " ".join(f"{_BOUNDS[name]} {value}" for name, value in bounds.items())
    notes = [f.description for f in fields if f.description]
    return text + "".join(f" ({note})" for note in notes)
