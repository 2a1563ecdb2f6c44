"""Reading, checking and writing weight files.

Every load is strict and every failure names the file, so a wrong or damaged
checkpoint stops a run instead of silently leaving random weights in place.
Every safetensors file written here records the sha256 of its tensors in its own
metadata, and every load checks it: a file damaged after it was written (a bit
flip, an edit) is refused, not used.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import safetensors.torch
import torch
from safetensors import safe_open
from torch import nn

from pipeline.atomic import atomic_path
from pipeline.errors import CheckpointError

WRAPPER_KEYS = ("model", "state_dict", "module")
DDP_PREFIX = "module."
MAX_LISTED = 20


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a torch pickle (``.pt``/``.pth``/``.bin``).

    Any other suffix (e.g. the reference's ``*.pth.timm``) is read as a torch
    pickle. Training-checkpoint wrappers (``{"model": ...}``, ``{"state_dict": ...}``,
    ``{"module": ...}``) and a DDP ``module.`` key prefix are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            with safe_open(path, framework="pt", device="cpu") as f:
                recorded = (f.metadata() or {}).get(SHA256_KEY)
                content = {name: f.get_tensor(name) for name in f.keys()}
        else:
            recorded, content = None, torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or not a weight file?): {err}") from err
    if recorded is not None and tensors_sha256(content) != recorded:
        raise CheckpointError(f"checkpoint {path}: its tensors differ from the sha256 recorded when it was written "
                              "(damaged or edited since)")
    return _unwrap(content, path)


def verify_weights(path: str | Path, stage: str) -> None:
    """Check, before any compute, that the weight file `stage` wrote reads and matches its recorded sha256; a
    failure names the file and the command that rewrites it."""
    try:
        load_state_dict_file(path)
    except CheckpointError as err:
        raise CheckpointError(f"{err}; re-run: dvc repro -f -s {stage}") from None


SHA256_KEY = "sha256"  # safetensors metadata: tensors_sha256 of the file's tensors when it was written


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of `tensors`, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _unwrap(content: object, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(content, dict):
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(content.get(k), dict)), None)
        if wrapper is None:
            break
        content = content[wrapper]
    if not isinstance(content, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(content).__name__}, not a state dict")
    not_tensors = [k for k, v in content.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"checkpoint {path} has non-tensor entries: {key_listing(not_tensors)}")
    if content and all(k.startswith(DDP_PREFIX) for k in content):
        content = {k[len(DDP_PREFIX):]: v for k, v in content.items()}
    return content


def load_strict(module: nn.Module, state_dict: dict, source: str) -> None:
    """Load `state_dict` into `module`; any key or shape difference is a CheckpointError naming `source`."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: expected {tuple(expected[k].shape)} vs got {tuple(state_dict[k].shape)}"
        for k in expected
        if k in state_dict and expected[k].shape != state_dict[k].shape
    ]
    found = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": mismatched}
    problems = [f"{label} ({len(items)}): {key_listing(items)}" for label, items in found.items() if items]
    if problems:
        raise CheckpointError(
            f"checkpoint {source} does not fit {type(module).__name__}:\n  " + "\n  ".join(problems)
        )
    module.load_state_dict(state_dict, strict=True)


def key_listing(items: list[str]) -> str:
    """The first MAX_LISTED items, comma-separated, with a count of the rest."""
    shown = ", ".join(items[:MAX_LISTED])
    return shown if len(items) <= MAX_LISTED else f"{shown}, ... and {len(items) - MAX_LISTED} more"


def save_state_dict(module_or_sd: nn.Module | dict[str, torch.Tensor], path: str | Path) -> None:
    """Write a module's (or a plain) state dict as a safetensors file, atomically."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights are written as safetensors; give a .safetensors path, not {path}")
    state_dict = module_or_sd.state_dict() if isinstance(module_or_sd, nn.Module) else module_or_sd
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, tmp, metadata={SHA256_KEY: tensors_sha256(tensors)})
