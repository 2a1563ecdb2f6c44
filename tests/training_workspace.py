"""A small prepared workspace for the training stages: miniature ADE20K and caption shards, toy weights.

Training stages run in it as subprocesses (as DVC runs them), so they can be killed or launched by torchrun.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml

from pipeline import paths
from pipeline.config import load_params
from pipeline.datasets.miniature import generate
from pipeline.stages import concepts, prepare, pretrain
from tests.conftest import REPO

FINETUNE_RUN = "random-default-0"


def small_params(raw: dict) -> dict:
    """The repository's miniature params cut to one model, one setting and a few steps of each training stage."""
    p = copy.deepcopy(raw)
    p.update(models=["random"], settings=["default"], seeds=[0], sizes=["base"], towers=["random"], datasets=["ade20k"],
             methods=["simzss"], encoders=["random"])
    p["rank"]["base_setting"] = "default"
    p["pretrain"]["dataset"] = "ade20k"
    p["prepare"].update(shard_size=4, workers=0)
    p["data_cfg"] = {"ade20k": {"crop": 64, "steps": 12}}
    p["finetune"].update(batch_size=4, micro_batch_size=2, log_every=1, workers=0)
    p["align"].update(batch_size=8, micro_batch_size=4, samples_per_epoch=48, epochs=1, image_size=64, log_every=1,
                      workers=0, feature_cache="none")
    p["zeroshot"].update(benchmarks=["ade20k"], background_threshold={})
    p["checkpoint"] = {"every": 2, "dir": "checkpoints"}
    return p


def build(root: Path, raw: dict) -> None:
    """Data, shards and toy weights for `small_params(raw)` under `root` (the current directory is kept)."""
    params_raw = small_params(raw)
    (root / "params.yaml").write_text(yaml.safe_dump(params_raw, sort_keys=False))
    cwd = Path.cwd()
    os.chdir(root)
    try:
        params = load_params("params.yaml")
        generate(paths.MINIATURE, seed=0, counts={"ade20k": {"train": 16, "val": 4}, "coco_captions": {"train": 24}})
        prepare.run(SimpleNamespace(dataset="ade20k"), params)
        pretrain.run(SimpleNamespace(model="random", size="base"), params)
        concepts.run(SimpleNamespace(shards=None, task=None, merge=False), params)
    finally:
        os.chdir(cwd)


def set_params(root: Path, **sections) -> None:
    """Update top-level sections of `root`/params.yaml (dicts are merged one level deep)."""
    raw = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        else:
            raw[key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def stage_command(stage: str, processes: int = 1, runner: Path | None = None) -> list[str]:
    """The stage's command line; `runner` is a script run instead of `-m pipeline.stages.<stage>` (with its args)."""
    args = {"finetune": ["--model", "random", "--setting", "default", "--seed", "0"],
            "align": ["--tower", "random", "--method", "simzss"]}[stage]
    module = [str(runner), *args] if runner else ["-m", f"pipeline.stages.{stage}", *args]
    if processes == 1:
        return [sys.executable, *module]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "--no-python", sys.executable, *module]


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PIPELINE_FRESH="")


def run_stage(root: Path, stage: str, *extra: str, processes: int = 1, ok: bool = True,
              runner: Path | None = None) -> str:
    result = subprocess.run(stage_command(stage, processes, runner) + list(extra), cwd=root, env=env(),
                            capture_output=True, text=True, timeout=600)
    assert (result.returncode == 0) == ok, f"{stage}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def metrics(root: Path, stage: str) -> dict:
    path = paths.finetune_metrics(FINETUNE_RUN) if stage == "finetune" else paths.align_metrics("random", "simzss")
    return json.loads((root / path).read_text())


def loss_curve(root: Path, stage: str) -> list[tuple[int, float]]:
    """(step, loss) rows of the stage's dvclive curve."""
    plots = paths.train_plots(FINETUNE_RUN) if stage == "finetune" else paths.align_plots("random", "simzss")
    rows = (root / plots / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1:]
    return [(int(step), float(loss)) for step, loss in (r.split("\t")[:2] for r in rows)]


def stage_checkpoints(root: Path, stage: str) -> Path:
    """checkpoints/<stage>: one folder per params key inside."""
    return root / "checkpoints" / (f"finetune@{FINETUNE_RUN}" if stage == "finetune" else "align@random-simzss")


def last_checkpoints(root: Path, stage: str) -> list[Path]:
    return sorted(stage_checkpoints(root, stage).glob("*/last.pt"))
