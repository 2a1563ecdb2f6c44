"""Which CPU settings change a training run's bits: the digest of the weights after a few fine-tuning steps,
under the project's pinned kernels (pipeline/__init__.py) and with each pin lifted.

A run here is `--steps` optimizer steps of the miniature's toy segmenter (ViT 96-d, depth 4, crop 96, linear
decoder, random init, random crops and labels), in a fresh process per setting, so every setting is read at the
process's first CPU operation as in a stage. Two settings give the same digest exactly when they run the same
kernels in the same order. What to look for:

- `pinned` and `pinned, MKL AVX2 only` agree: an AVX2-only CPU computes what this one does under the pins.
- each `unpinned` row differs from `pinned` on a CPU that offers more than AVX2 (AVX-512, AMX): those are the
  kernels a fresh clone on another CPU model would otherwise pick.
- the thread count changes the bits too: a machine kind keeps its core count, so the pins do not set it.
- the seconds of the two 1-thread rows: what the pins cost in speed (the 2-thread rows suffer on a busy CPU).

    python bench/cpu_numerics.py
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import pipeline

SETTINGS = {
    "pinned": {},
    "pinned, MKL AVX2 only": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "unpinned ATen kernels": {"ATEN_CPU_CAPABILITY": "avx512"},
    "unpinned oneDNN kernels": {"ONEDNN_MAX_CPU_ISA": "ALL"},
    "unpinned MKL": {"MKL_CBWR": "AUTO"},
    "unpinned, all three": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "ALL", "MKL_CBWR": "AUTO"},
    "pinned, 1 thread": {"OMP_NUM_THREADS": "1"},
    "unpinned, 1 thread": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "ALL", "MKL_CBWR": "AUTO",
                           "OMP_NUM_THREADS": "1"},
}


def run_steps(steps: int) -> dict:
    """The digest of the toy segmenter's weights after `steps` AdamW steps, and the seconds they took."""
    import torch

    from pipeline.networks.segmenter import build_segmenter
    from pipeline.training.criteria import segmentation_loss
    from pipeline.training.optim import build_optimizer

    torch.manual_seed(0)
    model = build_segmenter("linear", 150, timm_name="vit_small_patch16_224", img_size=96, patch_size=16,
                            timm_kwargs={"embed_dim": 96, "depth": 4, "num_heads": 3})
    optimizer = build_optimizer(model.encoder, model.decoder, lr=1e-3, encoder_lr_multiplier=0.1, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        images = torch.rand(8, 3, 96, 96, generator=g)
        labels = torch.randint(0, 150, (8, 96, 96), generator=g)
        loss = segmentation_loss(model(images), labels, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    weights = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    return {"sha256": hashlib.sha256(weights).hexdigest()[:16], "loss": loss.item(), "seconds": seconds,
            "aten": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_steps(args.steps)))
        return
    print(f"pins (pipeline.CPU_NUMERICS): {pipeline.CPU_NUMERICS}; {args.steps} steps per run")
    print(f"{'setting':26} {'ATen':7} {'threads':>7} {'weights sha256':16} {'final loss':>12} {'s':>6}")
    base = {k: v for k, v in os.environ.items() if k not in pipeline.CPU_NUMERICS}
    for name, overrides in SETTINGS.items():
        out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps)], env=base | overrides,
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.splitlines()[-1])
        print(f"{name:26} {r['aten']:7} {r['threads']:>7} {r['sha256']:16} {r['loss']:12.9f} {r['seconds']:6.2f}")


if __name__ == "__main__":
    main()
