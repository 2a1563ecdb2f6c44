#!/usr/bin/env bash
# Every speed benchmark of the GPU issue at its paper config on CUDA (bf16 autocast, torch.compile), with
# JSON records (one line each) appended to $1; copy the figures into bench/RESULTS.md with the date.
#
#     bash bench/run_gpu.sh bench/results-h200.jsonl 2>&1 | tee bench/results-h200.log
#
# About 15 minutes on one H200 including compilation. A failing benchmark is reported and the others still run.
set -uo pipefail
out=${1:?usage: bash bench/run_gpu.sh RESULTS.jsonl}
cd "$(dirname "$0")/.."
gpu=(--device cuda --precision bf16 --compile --json "$out")
failed=0
run() {
    echo "+ $*"
    "$@" || { echo "FAILED ($?): $*" >&2; failed=1; }
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
python -c "import torch, timm, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'timm', timm.__version__, 'torchvision', torchvision.__version__)"

# Fine-tune step, paper default: ViT-B/16, crop 512, linear, effective batch 16 (target >= 400 crops/s, >= 40 % MFU)
run python bench/finetune_step.py "${gpu[@]}" --warmup 5 --iters 30
run python bench/finetune_step.py --device cuda --precision bf16 --json "$out" --warmup 3 --iters 30  # eager
# Mask2Former step (same encoder, crop and batch)
run python bench/finetune_step.py "${gpu[@]}" --decoder mask2former --warmup 3 --iters 10
# Alignment step: DINOv2-B/14 reg4 at 224 frozen + text tower 512x12x8, batch 512 (target >= 8,000 img/s cached)
run python bench/align_step.py "${gpu[@]}" --warmup 3 --iters 20
run python bench/align_step.py "${gpu[@]}" --cached --warmup 3 --iters 30
# Sliding-window evaluation, ADE20K protocol, ViT-B/16 linear (target: 2,000 images in under 60 s)
run python bench/sliding_window_eval.py "${gpu[@]}" --images 16 --warmup 2 --iters 10
run python bench/sliding_window_eval.py "${gpu[@]}" --decoder mask2former --images 16 --warmup 2 --iters 5
# Host synchronisations per micro-batch and per evaluation image (miniature toy ViT, eager: counts, not speed)
run python bench/host_syncs.py --device cuda
# Data pipeline alone on the host's cores (decode + augmentation per core, then the DataLoader)
run python bench/data_pipeline.py --json "$out" --iters 300 --workers 8 16 --batches 40
exit $failed
