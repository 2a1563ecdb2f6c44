"""Shared pieces of the bench/ speed benchmarks: device, timing, FLOP counting, measured peak, memory, report.

MFU = FLOPs counted for one step (torch.utils.flop_counter: matmuls, convolutions, attention; forward and
backward) x steps / seconds, against a peak *measured* on the same device by a large square matmul (bf16 on
CUDA, fp32 on CPU, `--peak-dtype` to change). FLOPs are counted on an eager run with the math attention
backend, so attention is counted on every device (CPU's fused attention kernel has no FLOP formula).
Each benchmark prints one summary line and, with `--json PATH`, appends one JSON record per line to PATH.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import load_params
from pipeline.networks.segmenter import build_segmenter

PEAK_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def add_common_args(p: argparse.ArgumentParser, *, warmup: int = 3, iters: int = 10, device: bool = True) -> None:
    if device:
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        p.add_argument("--threads", type=int, help="torch CPU threads (1 keeps a shared CPU's figures sane)")
    p.add_argument("--warmup", type=int, default=warmup, help="untimed iterations before timing")
    p.add_argument("--iters", type=int, default=iters, help="timed iterations")
    p.add_argument("--json", type=Path, help="append the record (one JSON line) to this file")
    p.add_argument("--peak-dtype", choices=tuple(PEAK_DTYPES), help="matmul dtype of the measured peak "
                   "(default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--peak-size", type=int, help="side of the square peak matmul (default 8192 CUDA, 2048 CPU)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="auto = bf16 autocast on CUDA, fp32 on CPU (the library's rule)")
    p.add_argument("--compile", action="store_true", help="torch.compile the trained/evaluated module(s)")


def add_segmenter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vit_base_patch16_224", help="timm name (random init)")
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--decoder", default="linear", choices=("linear", "mask2former"))
    p.add_argument("--params", default="params-paper.yaml", help="Mask2Former architecture and loss")


def random_segmenter(args: argparse.Namespace, num_classes: int, device: torch.device):
    """The segmenter of --decoder/--model/--crop/--patch with random weights, and --params' Mask2Former config."""
    m2f = load_params(args.params).mask2former
    torch.manual_seed(0)
    model = build_segmenter(args.decoder, num_classes,
                            decoder_kwargs=m2f.decoder_kwargs if args.decoder == "mask2former" else None,
                            timm_name=args.model, img_size=args.crop, patch_size=args.patch).to(device)
    return model, m2f


def setup(args: argparse.Namespace) -> torch.device:
    """The benchmark's device, with --threads applied."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return torch.device(args.device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step: Callable[[], object], warmup: int, iters: int, device: torch.device) -> float:
    """Seconds per iteration of `step` over `iters` timed calls, after `warmup` untimed ones."""
    if iters < 1:
        raise ValueError(f"--iters must be >= 1, got {iters}")
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return (time.perf_counter() - start) / iters


class _GlobalOnly(contextlib.nullcontext):
    parents = {"Global"}


def count_flops(step: Callable[[], object], device: torch.device) -> int:
    """FLOPs of one call of `step` (forward and backward ops it runs); raises if none were counted."""
    counter = FlopCounterMode(display=False)
    # Totals only: FlopCounterMode's ModuleTracker asserts on views of parameters made under no_grad
    # (Mask2Former's query embeddings in sliding-window inference), so count under "Global" alone.
    counter.mod_tracker = _GlobalOnly()
    with sdpa_kernel(SDPBackend.MATH), counter:
        step()
        sync(device)
    flops = counter.get_total_flops()
    if flops <= 0:
        raise RuntimeError("FlopCounterMode counted no FLOPs: the step ran nothing measurable")
    return flops


def measured_peak(device: torch.device, dtype_name: str | None = None, size: int | None = None,
                  iters: int | None = None) -> tuple[float, str]:
    """(FLOP/s, description) of a square matmul on `device`: the denominator of MFU."""
    dtype_name = dtype_name or ("bf16" if device.type == "cuda" else "fp32")
    size = size or (8192 if device.type == "cuda" else 2048)
    iters = iters or (50 if device.type == "cuda" else 5)
    a = torch.randn(size, size, device=device, dtype=PEAK_DTYPES[dtype_name])
    b = torch.randn(size, size, device=device, dtype=PEAK_DTYPES[dtype_name])
    seconds = measure(lambda: a @ b, 2, iters, device)
    return 2 * size ** 3 / seconds, f"{dtype_name} matmul {size}x{size}"


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[float, str]:
    """(GiB, what): CUDA max_memory_allocated since the last reset, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30, "cuda max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "process peak RSS"  # KiB on Linux


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def versions() -> dict[str, str]:
    import timm
    import torchvision
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__}


def fmt(x: float) -> str:
    """Three significant figures below 100, thousands separators above."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def report(name: str, args: argparse.Namespace, device: torch.device, *, items: float, unit: str,
           seconds: float, flops: int | None = None, extra: dict | None = None) -> dict:
    """Print the one-line summary of a benchmark and append its JSON record when --json is given.

    `items` per timed iteration of `seconds`; `flops` per iteration (None: no MFU, e.g. the data pipeline).
    """
    if items <= 0 or seconds <= 0:
        raise RuntimeError(f"{name}: nothing was measured ({items} {unit} in {seconds} s)")
    record = {"benchmark": name, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": device_name(device), "versions": versions(),
              "command": shlex.join(["python", *sys.argv]),
              "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              f"{unit}_per_s": items / seconds, "seconds_per_iter": seconds}
    line = f"{name}: {fmt(items / seconds)} {unit}/s ({fmt(seconds)} s/iter)"
    memory, memory_what = peak_memory(device)  # before the peak matmul allocates its own operands
    if flops is not None:
        peak, peak_what = measured_peak(device, args.peak_dtype, args.peak_size)
        achieved = flops / seconds
        record.update({"flops_per_iter": flops, "achieved_tflops": achieved / 1e12, "peak_tflops": peak / 1e12,
                       "peak": peak_what, "mfu": achieved / peak})
        line += (f", {flops / 1e12:.3f} TFLOP/iter, {achieved / 1e12:.2f} TFLOP/s, "
                 f"MFU {100 * achieved / peak:.1f} % of {peak / 1e12:.2f} TFLOP/s ({peak_what})")
    record.update({"peak_memory_gib": memory, "memory": memory_what, **(extra or {})})
    if device.type == "cpu":
        record["load_average_1min"] = os.getloadavg()[0]  # other processes on the cores skew CPU figures
        line += f", load average {record['load_average_1min']:.2f}"
    line += f", peak memory {memory:.2f} GiB ({memory_what})"
    for key, value in (extra or {}).items():
        line += f", {key} {fmt(value) if isinstance(value, float) else value}"
    print(line, flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "a") as f:
            f.write(json.dumps(record) + "\n")
    return record
