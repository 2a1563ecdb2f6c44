"""The values the networks' options take, torch-free: pipeline.config checks params.yaml against them."""
from typing import Literal

Decoder = Literal["linear", "mask2former"]             # the heads of pipeline.networks.decoders.DECODERS
FinetuneNormalization = Literal["timm", "imagenet"]    # the benchmark's: per-model timm mean/std or ImageNet's
Normalization = Literal[FinetuneNormalization, "clip"]  # pipeline.networks.encoder: also OpenAI CLIP's mean/std
GlobalToken = Literal["cls", "patch_mean"]             # a tower's global embedding (pipeline.networks.tower)
