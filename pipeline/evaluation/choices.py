"""The values the evaluation's options take, torch-free: pipeline.config checks params.yaml against them."""
from typing import Literal

ZeroshotResize = Literal["mmseg", "antialias"]  # pipeline.evaluation.zeroshot.resize_for_zeroshot
