"""Benchmark your own VFM (README): a timm ViT that is in neither study file is one model_cfg entry, here with a local
checkpoint (as on a cluster node without internet), and finetune@ runs on the miniature with it."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import yaml

from pipeline import paths
from pipeline.config import load_params
from pipeline.networks.encoder import create_native_model
from pipeline.networks.weights import save_state_dict
from pipeline.stages import finetune, pretrain
from tests import training_workspace as ws
from tests.conftest import REPO

# Perception Encoder's ViT-T (6M): timm's Eva with RoPE, an absolute position embedding and a CLS token, so the
# family hook and the prefix stripping run too.
NAME = "vit_pe_core_tiny_patch16_384.fb"
ENTRY = {"pretraining": "file", "base": {"timm_name": NAME, "checkpoint": "external/my_vit.safetensors"}}


def test_a_timm_vit_in_neither_study_file_is_one_params_entry(tmp_path, monkeypatch, repo_params_raw):
    for study in ("params-paper.yaml", "params-vfm2025.yaml"):
        cfg = load_params(REPO / study).model_cfg
        assert NAME.split(".")[0] not in {v.timm_name.split(".")[0] for m in cfg.values() for v in m.variants.values()}
    ws.build(tmp_path, repo_params_raw)
    monkeypatch.chdir(tmp_path)
    Path("external").mkdir()
    save_state_dict(create_native_model(NAME, False, {}), "external/my_vit.safetensors")
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["model_cfg"]["my_vit"] = ENTRY
    raw.update(models=["my_vit"], encoders=[*raw["encoders"], "my_vit"])
    raw["data_cfg"]["ade20k"]["steps"] = 2  # end to end, not to convergence
    raw["checkpoint"]["every"] = 0
    Path("params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params("params.yaml")

    pretrain.run(SimpleNamespace(model="my_vit", size="base"), params)
    finetune.run(SimpleNamespace(model="my_vit", setting="default", seed=0, fresh=False), params)
    metrics = json.loads(paths.finetune_metrics("my_vit-default-0").read_text())
    assert 0 <= metrics["miou"] <= 1 and metrics["trainable_params"] > 5.9e6  # the ViT-T/16 and its linear head
