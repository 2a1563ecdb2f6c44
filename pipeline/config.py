"""params.yaml as typed, validated objects.

Everything is checked when the file is loaded, before any compute: each error
names the offending key and, where there is a closed set, the allowed values.
A *setting* is a named set of overrides of the base setup; `Params.run()` resolves
one (model, setting, seed) into everything a fine-tuning run needs.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from pipeline.datasets.sources import SOURCES
from pipeline.datasets.specs import SPECS, VIEWS, benchmark_classes, get_view
from pipeline.errors import PipelineError

AVAILABLE_DECODERS = ("linear", "mask2former")
SIZES = ("base", "large")
NORMALIZATIONS = ("timm", "imagenet")
PRETRAININGS = ("random", "supervised", "mim", "hub", "file")
TOY_PRETRAININGS = ("random", "supervised", "mim")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
TAU_VARIANTS = ("b", "c")
CONCEPT_BACKENDS = ("bank_match", "noun_chunks")
CONCEPT_BANKS = ("authors", "benchmarks")  # pipeline.datasets.concept_bank.BANKS
ALIGN_NORMALIZATIONS = ("clip", "timm", "imagenet")
CONCEPT_TARGETS = ("label", "argmax")
CONCEPT_QUERIES = ("prototype", "instance")
FEATURE_CACHES = ("none", "memory", "disk")
GLOBAL_TOKENS = ("cls", "patch_mean")
ZEROSHOT_RESIZES = ("mmseg", "antialias")  # pipeline.evaluation.zeroshot.RESIZES
ID_PATTERN = re.compile(r"^[a-z0-9_]+$")


class ConfigError(PipelineError):
    """A params.yaml value is missing, of the wrong type or outside its allowed values."""


@dataclass(frozen=True)
class Setup:
    """The keys a setting may override (the paper's benchmark settings)."""

    decoder: str
    size: str
    patch_size: int
    freeze_encoder: bool
    dataset: str
    eval_dataset: str
    normalization: str


SETUP_KEYS = tuple(f.name for f in fields(Setup))


@dataclass(frozen=True)
class Variant:
    """One size of a model: the timm model, its construction switches and where its weights come from.

    `pretrain_tokens` is the number of tokens per image in the model's (last) pretraining
    stage (paper Table 2), shown next to the fine-tuning grid by the zoo listing.
    """

    timm_name: str
    timm_kwargs: dict = field(default_factory=dict)
    pretrained: bool = False
    checkpoint: str | None = None
    pretrain_tokens: int | None = None

    @property
    def toy_input(self) -> tuple[int, int]:
        """(image size, patch size) a toy is pretrained at: its timm kwargs, else timm's ViT defaults."""
        return self.timm_kwargs.get("img_size", 224), self.timm_kwargs.get("patch_size", 16)

    @property
    def native_patch_size(self) -> int:
        """The model's own patch size: its timm kwargs, else the timm name (`..._patch14_...`), else 16."""
        match = re.search(r"patch(\d+)", self.timm_name)
        return self.timm_kwargs.get("patch_size") or (int(match.group(1)) if match else 16)


@dataclass(frozen=True)
class ModelCfg:
    """`compile: false` keeps torch.compile off for this model whatever finetune.compile says (EVA-02)."""

    pretraining: str
    variants: dict[str, Variant]
    compile: bool = True


@dataclass(frozen=True)
class DataCfg:
    crop: int
    steps: int


@dataclass(frozen=True)
class PrepareCfg:
    shard_size: int
    workers: int


@dataclass(frozen=True)
class DownloadCfg:
    cache_dir: str                       # where archives are downloaded (and resumed) before being linked in
    retries: int
    backoff_s: float
    timeout_s: float
    mirrors: dict[str, str] = field(default_factory=dict)  # file name -> URL used instead of the official one


@dataclass(frozen=True)
class PretrainCfg:
    dataset: str
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    mask_ratio: float
    presence_cell: int
    workers: int
    seed: int


@dataclass(frozen=True)
class FinetuneCfg:
    batch_size: int
    micro_batch_size: int
    lr: float
    encoder_lr_multiplier: float
    weight_decay: float
    poly_power: float
    scale_range: tuple[float, float]
    precision: str
    compile: bool
    workers: int
    log_every: int
    val_every: int       # optimizer steps between validations on the evaluation split (0 = none)
    preview_images: int  # validation images (the first in key order) in each run's predictions figure

    def accumulation(self, world_size: int = 1) -> int:
        return accumulation("finetune", self.batch_size, self.micro_batch_size, world_size)


@dataclass(frozen=True)
class Mask2FormerCfg:
    """Single-scale Mask2Former: architecture, then matcher/loss (reference §3)."""

    hidden_dim: int
    num_queries: int
    num_blocks: int
    num_heads: int
    ffn_dim: int
    num_points: int
    oversample_ratio: float
    importance_ratio: float
    class_weight: float
    mask_weight: float
    dice_weight: float
    no_object_weight: float

    @property
    def decoder_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in ("hidden_dim", "num_queries", "num_blocks", "num_heads", "ffn_dim")}

    @property
    def loss_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in (
            "class_weight", "mask_weight", "dice_weight", "no_object_weight", "num_points", "oversample_ratio",
            "importance_ratio")}


@dataclass(frozen=True)
class ConceptsCfg:
    """The `concepts` stage: caption concepts (spaCy) into WebDataset shards (SimZSS notes §1)."""

    bank: str
    backend: str
    spacy_model: str
    split: str
    image_size: int
    shard_size: int
    max_concepts: int
    max_concept_tokens: int


@dataclass(frozen=True)
class TextCfg:
    """The random-init CLIP text transformer aligned to a frozen tower (SimZSS notes §2)."""

    width: int
    layers: int
    heads: int
    context_length: int


@dataclass(frozen=True)
class AlignCfg:
    size: str
    image_size: int
    crop_scale: tuple[float, float]
    normalization: str
    batch_size: int
    micro_batch_size: int
    samples_per_epoch: int
    epochs: int
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    warmup: float
    logit_scale_init: float
    logit_scale_max: float
    concept_temperature: float
    concept_scale: float
    concept_target: str
    concept_query: str
    global_token: str
    feature_cache: str
    cache_dir: str
    precision: str
    workers: int
    shuffle_buffer: int
    log_every: int
    seed: int

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


@dataclass(frozen=True)
class CheckpointCfg:
    """Training checkpoints: not part of any stage's params (they do not change results)."""

    every: int  # optimizer steps between checkpoints; 0 = none
    dir: str    # persistent folder outside DVC's outputs, one sub-folder per stage


@dataclass(frozen=True)
class MethodCfg:
    """simzss: global + concept loss; lit: concept_weight 0 (the LiT baseline)."""

    concept_weight: float


@dataclass(frozen=True)
class ZeroshotCfg:
    benchmarks: tuple[str, ...]
    short_side: int
    resize: str      # mmseg: TCL's mmcv imrescale (bilinear, no antialias, long side <= long_side) | antialias
    long_side: int   # cap on the resized long side under `resize: mmseg`
    window: int
    stride: int
    background_threshold: dict[str, float]
    threshold_sweep: tuple[float, ...]
    batch_size: int
    precision: str


@dataclass(frozen=True)
class RankCfg:
    base_setting: str
    tau_variant: str
    resamples: int       # bootstrap resamples of the validation images and seeds (pipeline.analysis.bootstrap)
    confidence: float    # level of the percentile intervals
    bootstrap_seed: int


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Params:
    setup: Setup
    models: tuple[str, ...]
    settings: tuple[str, ...]
    seeds: tuple[int, ...]
    datasets: tuple[str, ...]
    downloads: tuple[str, ...]
    sizes: tuple[str, ...]
    encoders: tuple[str, ...]  # model_cfg ids pretrain@<id>-<size> makes ready: every model and every tower
    model_cfg: dict[str, ModelCfg]
    setting_cfg: dict[str, dict]
    data_root: str
    data_cfg: dict[str, DataCfg]
    mask2former: Mask2FormerCfg
    generate: dict
    download: DownloadCfg
    prepare: PrepareCfg
    pretrain: PretrainCfg
    finetune: FinetuneCfg
    rank: RankCfg
    towers: tuple[str, ...]
    methods: tuple[str, ...]
    method_cfg: dict[str, MethodCfg]
    concepts: ConceptsCfg
    text_tower: TextCfg
    align: AlignCfg
    zeroshot: ZeroshotCfg
    checkpoint: CheckpointCfg

    def setup_for(self, setting: str) -> Setup:
        _check_choice(f"setting '{setting}'", setting, tuple(self.setting_cfg))
        return replace(self.setup, **self.setting_cfg[setting])

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
# Loading and validation


TOP_LEVEL = SETUP_KEYS + (
    "models", "settings", "seeds", "datasets", "downloads", "sizes", "encoders", "model_cfg", "setting_cfg",
    "data_root", "data_cfg", "decoder_cfg", "generate", "download", "prepare", "pretrain", "finetune", "rank",
    "towers", "methods", "method_cfg", "concepts", "text_tower", "align", "zeroshot", "checkpoint",
)


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
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {unknown}{did_you_mean(unknown, TOP_LEVEL)}; "
                          f"allowed: {list(TOP_LEVEL)}")
    setup = _parse_setup(raw, "")
    datasets = _id_list(raw, "datasets", allowed=tuple(SPECS))
    sizes = _id_list(raw, "sizes", allowed=SIZES)
    models_raw, data_raw = _get(raw, "model_cfg", dict), _get(raw, "data_cfg", dict)
    model_cfg = {
        name: _parse_model(_get(models_raw, name, dict, label=f"model_cfg.{name}"), f"model_cfg.{name}")
        for name in models_raw
    }
    setting_cfg = _parse_setting_cfg(_get(raw, "setting_cfg", dict))
    data_cfg = {
        name: _parse_data(_get(data_raw, name, dict, label=f"data_cfg.{name}"), f"data_cfg.{name}")
        for name in data_raw
    }
    params = Params(
        setup=setup,
        models=_id_list(raw, "models", allowed=tuple(model_cfg), per_id="model_cfg"),
        settings=_id_list(raw, "settings", allowed=tuple(setting_cfg), per_id="setting_cfg"),
        seeds=tuple(_get(raw, f"seeds[{i}]", int, value=s) for i, s in enumerate(_get(raw, "seeds", list))),
        datasets=datasets,
        downloads=_id_list(raw, "downloads", allowed=tuple(SOURCES)),
        sizes=sizes,
        encoders=_id_list(raw, "encoders", allowed=tuple(model_cfg), per_id="model_cfg"),
        model_cfg=model_cfg,
        setting_cfg=setting_cfg,
        data_root=_get(raw, "data_root", str),
        data_cfg=data_cfg,
        mask2former=_parse_mask2former(raw),
        generate=_parse_generate(raw),
        download=_parse_download(raw),
        prepare=_parse_section(PrepareCfg, raw, "prepare"),
        pretrain=_parse_section(PretrainCfg, raw, "pretrain"),
        finetune=_parse_finetune(raw),
        rank=_parse_section(RankCfg, raw, "rank"),
        **_parse_simzss(raw, models_raw),
        checkpoint=_parse_checkpoint(raw),
    )
    _validate(params)
    return params


def _validate(p: Params) -> None:
    if not p.models or not p.settings or not p.seeds:
        raise ConfigError("models, settings and seeds must each list at least one entry")
    _check_choice("rank.base_setting", p.rank.base_setting, p.settings)
    _check_choice("rank.tau_variant", p.rank.tau_variant, TAU_VARIANTS)
    if not 0 < p.rank.confidence < 1:
        raise ConfigError(f"rank.confidence must be in (0, 1), got {p.rank.confidence}")
    _check_choice("pretrain.dataset", p.pretrain.dataset, p.datasets)
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
    f = p.finetune
    f.accumulation()
    p.align.accumulation()
    if not 0 < f.scale_range[0] <= f.scale_range[1]:
        raise ConfigError(f"finetune.scale_range must be [low, high] with 0 < low <= high, got {list(f.scale_range)}")
    if not 0 < p.pretrain.mask_ratio < 1:
        raise ConfigError(f"pretrain.mask_ratio must be in (0, 1), got {p.pretrain.mask_ratio}")
    for name in p.encoders:
        if p.model_cfg[name].pretraining == "supervised":
            for size in p.sizes:
                variant = p.model_cfg[name].variants[size]
                _validate_presence_cell(p.pretrain.presence_cell, variant, f"model_cfg.{name}.{size}")
    _validate_simzss(p)


def _validate_simzss(p: Params) -> None:
    _check_choice("align.size", p.align.size, p.sizes)
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
        variant = p.model_cfg[tower].variants[p.align.size]
        patch = variant.native_patch_size
        for key, size in (("align.image_size", p.align.image_size), ("zeroshot.window", p.zeroshot.window)):
            if size % patch:
                raise ConfigError(f"{key} ({size}) must be a multiple of tower {tower!r}'s patch size ({patch}): "
                                  "towers keep their native patch size")


def _validate_presence_cell(cell: int, variant: Variant, key: str) -> None:
    img_size, patch = variant.toy_input
    if img_size % cell or cell % patch:
        raise ConfigError(
            f"pretrain.presence_cell ({cell}) must divide {key} img_size ({img_size}) and be a multiple of its "
            f"patch size ({patch})"
        )


def _validate_setup(p: Params, s: Setup, where: str) -> None:
    _check_choice(f"decoder in {where}", s.decoder, AVAILABLE_DECODERS)
    _check_choice(f"size in {where}", s.size, p.sizes)
    _check_choice(f"dataset in {where}", s.dataset, p.datasets)
    _check_choice(f"eval_dataset in {where}", s.eval_dataset, p.datasets)
    _check_choice(f"normalization in {where}", s.normalization, NORMALIZATIONS)
    for key, name in (("dataset", s.dataset), ("eval_dataset", s.eval_dataset)):
        if name not in p.data_cfg:
            raise ConfigError(f"{key} in {where}: '{name}' is trained or evaluated on, but data_cfg.{name} "
                              "(crop, steps) is missing")
    if "val" not in SPECS[s.eval_dataset].splits:
        raise ConfigError(
            f"eval_dataset in {where}: '{s.eval_dataset}' has no validation split "
            f"(datasets with one: {[n for n in p.datasets if 'val' in SPECS[n].splits]})"
        )
    train, evaluation = SPECS[s.dataset], SPECS[s.eval_dataset]
    if train.classes != evaluation.classes:
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


def _parse_setup(raw: dict, prefix: str) -> Setup:
    return Setup(
        decoder=_get(raw, prefix + "decoder", str),
        size=_get(raw, prefix + "size", str),
        patch_size=_get(raw, prefix + "patch_size", int),
        freeze_encoder=_get(raw, prefix + "freeze_encoder", bool),
        dataset=_get(raw, prefix + "dataset", str),
        eval_dataset=_get(raw, prefix + "eval_dataset", str),
        normalization=_get(raw, prefix + "normalization", str),
    )


def _parse_setting_cfg(raw: dict) -> dict[str, dict]:
    types = {f.name: f.type for f in fields(Setup)}
    out = {}
    for name, overrides in raw.items():
        _check_id(f"setting_cfg.{name}", name)
        overrides = overrides or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"setting_cfg.{name}: expected a mapping of overrides, got {overrides!r}")
        for key, value in overrides.items():
            if key not in SETUP_KEYS:
                raise ConfigError(f"setting_cfg.{name}.{key}: a setting can only override base setup keys "
                                  f"{list(SETUP_KEYS)}{did_you_mean([key], SETUP_KEYS)}")
            _get(overrides, key, {"str": str, "int": int, "bool": bool}[types[key]], label=f"setting_cfg.{name}.{key}")
        out[name] = dict(overrides)
    return out


def _parse_model(raw: dict, key: str) -> ModelCfg:
    _check_id(key, key.split(".")[-1])
    pretraining = _get(raw, "pretraining", str, label=f"{key}.pretraining")
    _check_choice(f"{key}.pretraining", pretraining, PRETRAININGS)
    variants = {}
    for size in SIZES:
        if size not in raw:
            continue
        v = _get(raw, size, dict, label=f"{key}.{size}")
        allowed = [f.name for f in fields(Variant)]
        unknown = sorted(set(v) - set(allowed))
        if unknown:
            raise ConfigError(f"{key}.{size}: unknown key(s) {unknown}{did_you_mean(unknown, allowed)}; "
                              f"allowed: {', '.join(allowed)}")
        variant = Variant(
            timm_name=_get(v, "timm_name", str, label=f"{key}.{size}.timm_name"),
            timm_kwargs=dict(_optional(v, "timm_kwargs", dict, f"{key}.{size}") or {}),
            pretrained=_optional(v, "pretrained", bool, f"{key}.{size}") or False,
            checkpoint=_optional(v, "checkpoint", str, f"{key}.{size}"),
            pretrain_tokens=_optional(v, "pretrain_tokens", int, f"{key}.{size}"),
        )
        if pretraining == "hub" and not variant.pretrained:
            raise ConfigError(f"{key}.{size}.pretrained must be true when {key}.pretraining is 'hub'")
        if pretraining == "file" and not variant.checkpoint:
            raise ConfigError(f"{key}.{size}.checkpoint must name a local file when {key}.pretraining is 'file'")
        variants[size] = variant
    extra = sorted(set(raw) - {"pretraining", "compile", *SIZES})
    if extra:
        allowed = ("pretraining", "compile", *SIZES)
        raise ConfigError(f"{key}: unknown key(s) {extra}{did_you_mean(extra, allowed)}; allowed: {', '.join(allowed)}")
    compile_ok = _optional(raw, "compile", bool, key)
    return ModelCfg(pretraining, variants, True if compile_ok is None else compile_ok)


def _optional(raw: dict, key: str, kind: type, parent: str) -> Any:
    """`raw[key]` checked as `kind`, or None when absent or empty; positive when an int."""
    if raw.get(key) is None:
        return None
    value = _get(raw, key, kind, label=f"{parent}.{key}")
    if kind is int and value <= 0:
        raise ConfigError(f"{parent}.{key} must be positive, got {value}")
    return value


def _parse_data(raw: dict, key: str) -> DataCfg:
    crop = _get(raw, "crop", int, label=f"{key}.crop")
    steps = _get(raw, "steps", int, label=f"{key}.steps")
    if crop <= 0 or steps <= 0:
        raise ConfigError(f"{key}: crop and steps must be positive, got crop={crop}, steps={steps}")
    return DataCfg(crop, steps)


def _parse_mask2former(raw: dict) -> Mask2FormerCfg:
    decoder_cfg = _get(raw, "decoder_cfg", dict)
    cfg = _parse_section(Mask2FormerCfg, decoder_cfg, "mask2former", label="decoder_cfg.mask2former")
    if cfg.hidden_dim % cfg.num_heads:
        raise ConfigError(f"decoder_cfg.mask2former.hidden_dim ({cfg.hidden_dim}) must be a multiple of "
                          f"num_heads ({cfg.num_heads})")
    if not 0 <= cfg.importance_ratio <= 1 or cfg.oversample_ratio < 1:
        raise ConfigError("decoder_cfg.mask2former: importance_ratio must be in [0, 1] and oversample_ratio >= 1, "
                          f"got {cfg.importance_ratio} and {cfg.oversample_ratio}")
    return cfg


def _parse_generate(raw: dict) -> dict:
    """The miniature generator's `seed` and `counts` (per dataset and split; the generator checks the splits)."""
    section = _get(raw, "generate", dict)
    unknown = sorted(set(section) - {"seed", "counts"})
    if unknown:
        raise ConfigError(f"generate: unknown key(s) {unknown}{did_you_mean(unknown, ('seed', 'counts'))}; "
                          "allowed: ['seed', 'counts']")
    _get(section, "seed", int, label="generate.seed")
    _get(section, "counts", dict, label="generate.counts")
    return section


def _parse_download(raw: dict) -> DownloadCfg:
    section = _get(raw, "download", dict)
    allowed = [f.name for f in fields(DownloadCfg)]
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise ConfigError(f"download: unknown key(s) {unknown}{did_you_mean(unknown, allowed)}; allowed: {allowed}")
    mirrors = _optional(section, "mirrors", dict, "download") or {}
    for name, url in mirrors.items():
        url = _get(mirrors, name, str, label=f"download.mirrors.{name}")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"download.mirrors.{name}: expected an http(s) URL, got {url!r}")
    cfg = DownloadCfg(
        cache_dir=_get(section, "cache_dir", str, label="download.cache_dir"),
        retries=_get(section, "retries", int, label="download.retries"),
        backoff_s=_get(section, "backoff_s", float, label="download.backoff_s"),
        timeout_s=_get(section, "timeout_s", float, label="download.timeout_s"),
        mirrors=dict(mirrors),
    )
    if cfg.retries < 0 or cfg.backoff_s < 0 or cfg.timeout_s <= 0:
        raise ConfigError("download: retries and backoff_s must be >= 0 and timeout_s > 0, got "
                          f"{cfg.retries}, {cfg.backoff_s} and {cfg.timeout_s}")
    return cfg


def _parse_finetune(raw: dict) -> FinetuneCfg:
    cfg = _parse_section(FinetuneCfg, raw, "finetune")
    _check_choice("finetune.precision", cfg.precision, PRECISIONS)
    for key in ("val_every", "preview_images"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"finetune.{key} must be >= 0 (0 = none), got {getattr(cfg, key)}")
    return cfg


def _parse_checkpoint(raw: dict) -> CheckpointCfg:
    cfg = _parse_section(CheckpointCfg, raw, "checkpoint")
    if cfg.every < 0:
        raise ConfigError(f"checkpoint.every must be >= 0 (0 = no checkpoints), got {cfg.every}")
    return cfg


def _parse_simzss(raw: dict, model_cfg: dict) -> dict:
    method_raw = _get(raw, "method_cfg", dict)
    method_cfg = {}
    for name in method_raw:
        _check_id(f"method_cfg.{name}", name)
        method_cfg[name] = _parse_section(MethodCfg, method_raw, name, label=f"method_cfg.{name}")
        if method_cfg[name].concept_weight < 0:
            raise ConfigError(f"method_cfg.{name}.concept_weight must be >= 0, got {method_cfg[name].concept_weight}")
    concepts = _parse_section(ConceptsCfg, raw, "concepts")
    _check_choice("concepts.bank", concepts.bank, CONCEPT_BANKS)
    _check_choice("concepts.backend", concepts.backend, CONCEPT_BACKENDS)
    _check_choice("concepts.split", concepts.split, ("train", "val"))
    align = _parse_section(AlignCfg, raw, "align")
    for key, value, allowed in (("normalization", align.normalization, ALIGN_NORMALIZATIONS),
                                ("concept_target", align.concept_target, CONCEPT_TARGETS),
                                ("concept_query", align.concept_query, CONCEPT_QUERIES),
                                ("feature_cache", align.feature_cache, FEATURE_CACHES),
                                ("global_token", align.global_token, GLOBAL_TOKENS),
                                ("precision", align.precision, PRECISIONS),
                                ("size", align.size, SIZES)):
        _check_choice(f"align.{key}", value, allowed)
    if not 0 <= align.warmup < 1:
        raise ConfigError(f"align.warmup is a fraction of the steps in [0, 1), got {align.warmup}")
    if not 0 < align.crop_scale[0] <= align.crop_scale[1] <= 1:
        raise ConfigError(f"align.crop_scale must be [low, high] with 0 < low <= high <= 1, got {list(align.crop_scale)}")
    return {
        "towers": _id_list(raw, "towers", allowed=tuple(model_cfg), per_id="model_cfg"),
        "methods": _id_list(raw, "methods", allowed=tuple(method_cfg), per_id="method_cfg"),
        "method_cfg": method_cfg,
        "concepts": concepts,
        "text_tower": _parse_section(TextCfg, raw, "text_tower"),
        "align": align,
        "zeroshot": _parse_zeroshot(raw),
    }


def _parse_zeroshot(raw: dict) -> ZeroshotCfg:
    cfg = _parse_section(ZeroshotCfg, raw, "zeroshot")
    for i, name in enumerate(cfg.benchmarks):
        _check_choice(f"zeroshot.benchmarks[{i}]", name, tuple(SPECS) + tuple(VIEWS))
    if cfg.stride > cfg.window:
        raise ConfigError(f"zeroshot.stride ({cfg.stride}) must not exceed zeroshot.window ({cfg.window})")
    _check_choice("zeroshot.precision", cfg.precision, PRECISIONS)
    _check_choice("zeroshot.resize", cfg.resize, ZEROSHOT_RESIZES)
    if cfg.long_side < cfg.short_side:
        raise ConfigError(f"zeroshot.long_side ({cfg.long_side}) must be at least "
                          f"zeroshot.short_side ({cfg.short_side})")
    for name in cfg.benchmarks:
        if benchmark_classes(name)[0] == "background" and name not in cfg.background_threshold:
            raise ConfigError(f"zeroshot.background_threshold.{name}: missing; benchmark {name!r} has a background "
                              "class, predicted where the best foreground score is below this threshold")
    extra = sorted(set(cfg.background_threshold) - set(cfg.benchmarks))
    if extra:
        raise ConfigError(f"zeroshot.background_threshold: {extra} not in zeroshot.benchmarks {list(cfg.benchmarks)}")
    return cfg


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _parse_value(section: dict, key: str, type_name: str, label: str) -> Any:
    """One section value by its dataclass annotation: a scalar, a float pair, a list or a name -> float map."""
    if type_name in _TYPES:
        return _get(section, key, _TYPES[type_name], label=label)
    if type_name == "dict[str, float]":
        mapping = _get(section, key, dict, label=label)
        return {name: _get(mapping, name, float, label=f"{label}.{name}") for name in mapping}
    items = _get(section, key, list, label=label)
    kind = str if type_name == "tuple[str, ...]" else float
    if type_name == "tuple[float, float]" and len(items) != 2:
        raise ConfigError(f"{label}: expected two numbers, got {items}")
    return tuple(_get(section, key, kind, label=f"{label}[{i}]", value=x) for i, x in enumerate(items))


def _parse_section(cls, raw: dict, name: str, label: str | None = None):
    """`raw[name]` as dataclass `cls`; errors are reported under `label` (default: `name`)."""
    section = _get(raw, name, dict, label=label)
    name = label or name
    expected = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(section) - set(expected))
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {unknown}{did_you_mean(unknown, expected)}; "
                          f"allowed: {list(expected)}")
    values = {key: _parse_value(section, key, type_name, f"{name}.{key}") for key, type_name in expected.items()}
    for key in _POSITIVE & set(values):
        if values[key] <= 0:
            raise ConfigError(f"{name}.{key} must be positive, got {values[key]}")
    return cls(**values)


_POSITIVE = {
    "steps", "batch_size", "micro_batch_size", "shard_size", "log_every", "lr", "presence_cell", "hidden_dim",
    "num_queries", "num_blocks", "num_heads", "ffn_dim", "num_points", "image_size", "max_concepts",
    "max_concept_tokens", "width", "layers", "heads", "context_length", "samples_per_epoch", "epochs", "eps",
    "logit_scale_init", "logit_scale_max", "concept_temperature", "concept_scale", "short_side", "window", "stride",
    "long_side", "resamples",
}


_MISSING = object()


def _get(raw: dict, key: str, kind: type, *, label: str | None = None, value: Any = _MISSING) -> Any:
    """Fetch `key` from `raw` (or check `value`) and check its type; errors name `label` or `key`."""
    label = label or key
    if value is _MISSING:
        if key not in raw:
            raise ConfigError(f"{label}: missing")
        value = raw[key]
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        hint = " (write floats as 1.0e-4: YAML 1.1 reads 1e-4 as a string)" if isinstance(value, str) and kind is float else ""
        raise ConfigError(f"{label}: expected {kind.__name__}, got {value!r}{hint}")
    return value


def _id_list(raw: dict, key: str, allowed: tuple[str, ...], per_id: str | None = None) -> tuple[str, ...]:
    """The ids listed under `key`; with `per_id`, the map whose keys they must be (a new id needs its entry)."""
    items = _get(raw, key, list)
    for i, item in enumerate(items):
        _get(raw, f"{key}[{i}]", str, value=item)
        if per_id and item not in allowed:
            raise ConfigError(f"{key}[{i}]: unknown value {item!r}{did_you_mean([item], allowed)}; allowed: "
                              f"{list(allowed)}, the ids of {per_id} (a new id needs its {per_id}.{item} entry)")
        _check_choice(f"{key}[{i}]", item, allowed)
    if len(set(items)) != len(items):
        raise ConfigError(f"{key}: duplicate entries in {items}")
    return tuple(items)


def _check_id(key: str, name: str) -> None:
    if not ID_PATTERN.match(str(name)):
        raise ConfigError(f"{key}: '{name}' is not a valid id (use [a-z0-9_]: it appears in stage names and paths)")


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
