"""Mixed precision: bf16 autocast on CUDA by default, fp32 on CPU."""
from __future__ import annotations

import contextlib

import torch

from pipeline.training.choices import Precision
from pipeline.training.gpu_lease import single_process_device


def resolve_precision(precision: Precision, device: torch.device) -> str:
    """`auto` means bf16 on CUDA and fp32 elsewhere (CPU autocast is slower than fp32 for these models)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("finetune.precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
    return precision


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A real scaler for fp16 only; disabled (a pass-through) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def default_device() -> torch.device:
    return single_process_device()
