"""The values the training's options take, torch-free: pipeline.config checks params.yaml against them."""
from typing import Literal, get_args

Precision = Literal["auto", "bf16", "fp16", "fp32"]        # pipeline.training.precision
ToyPretraining = Literal["random", "supervised", "mim", "clip", "dino"]  # pipeline.training.pretrain.pretrain_toy
Pretraining = Literal[ToyPretraining, "hub", "file"]       # pretrain@: also timm's weights, or a local file
ConceptTarget = Literal["label", "argmax"]                 # pipeline.training.simzss_loss.concept_loss
ConceptQuery = Literal["prototype", "instance"]
FeatureCache = Literal["none", "memory", "disk"]           # pipeline.training.align: frozen-tower features

TOY_PRETRAININGS = get_args(ToyPretraining)
