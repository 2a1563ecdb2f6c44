"""Bad input, everywhere: each bad param, dataset or checkpoint stops the stage a user runs with one clear error
naming the key or file and what was expected, before any output is touched.

Every row of the table runs a stage CLI (`pipeline.stages.common.main`) in a fresh workspace holding intact
inputs (params.yaml, raw datasets in their official archives, pretrained encoder weights) and earlier outputs of
every stage. A row breaks one input; the stage must exit 1 with `error: <message>` matching the row's pattern
and leave every file of the workspace as it was (no partial output, no temporary file; the workspace's temporary
folder `.tmp/` may be left, empty). The message is one line, but for the listings of a checkpoint that does not fit.
To add a row, append a `pytest.param(stage, breaker, pattern, id=...)` to one of the lists below.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import shutil
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import safetensors.torch
import torch

from pipeline import paths
from pipeline.datasets.miniature.formats import encode_jpeg, encode_png
from pipeline.datasets.shards import prepare_dataset
from pipeline.networks import encoder
from pipeline.networks.encoder import create_native_model
from pipeline.networks.weights import SHA256_KEY, tensors_sha256
from pipeline.stages import finetune, prepare, pretrain, validate
from pipeline.config import load_params
from pipeline.stages.common import main
from pipeline.training.checkpoint import run_directory
from pipeline.training.finetune import fingerprint
from tests.conftest import REPO
from tests.test_readers import _ade_files, _rgb, _store, _voc_files
from tests.test_stage_cli import write_params

TINY_VIT = {"img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2}
RUN = "random-default-0"
STAGES = {  # stage -> (run function, default CLI arguments); `validate` has its own CLI (it imports no stage code)
    "prepare": (prepare.run, {"dataset": "ade20k"}),
    "pretrain": (pretrain.run, {"model": "random", "size": "base"}),
    "finetune": (finetune.run, {"model": "random", "setting": "default", "seed": 0, "fresh": False}),
}
RAW = {  # dataset -> (official archive, files generator)
    "ade20k": ("ADEChallengeData2016.zip", lambda: _ade_files(np.random.default_rng(0))[0]),
    "pascal_voc": ("VOCtrainval_11-May-2012.tar", lambda: _voc_files(np.random.default_rng(1))[0]),
}
ADE = "ADEChallengeData2016"
VOC_LISTS = "VOCdevkit/VOC2012/ImageSets/Segmentation"
WEIGHTS = paths.encoder_weights("random", "base")
WEIGHTS_RE = re.escape(str(WEIGHTS))
TRAINING_CHECKPOINT_RE = rf"checkpoints/finetune@{RUN}/\w+/last\.pt"
SHARD = paths.shards("ade20k") / "train-000000.tar"
REPREPARE = r"re-run: dvc repro -f -s prepare@ade20k$"
MULTI_LINE = {"checkpoint-renamed-keys", "checkpoint-other-architecture"}  # load_strict lists the keys, a line each


def tiny_params(raw: dict) -> dict:
    """The repository's params.yaml cut to one model, one setting and one step, with toy ViTs."""
    raw.update(models=["random"], settings=["default"], seeds=[0], sizes=["base"], towers=["random"],
               encoders=["random"], datasets=["ade20k", "pascal_voc"])
    raw["data_cfg"]["ade20k"]["steps"] = 1
    raw["prepare"]["shard_size"] = 2
    raw["zeroshot"].update(benchmarks=["ade20k"], background_threshold={})
    for cfg in raw["model_cfg"].values():
        for size in ("base", "large"):
            cfg[size]["timm_kwargs"] = dict(TINY_VIT)
    return raw


def store_raw(root: Path, dataset: str, files: dict[str, bytes]) -> None:
    name, layout = RAW[dataset][0].rsplit(".", 1)
    _store(root, files, layout, name)


@dataclass(repr=False)
class Workspace:
    """A stage's intact inputs; a breaker edits them before `write` puts them in the working directory."""

    params: dict
    args: dict
    raw: dict[str, dict[str, bytes]]              # dataset -> the files of its official archive
    weights: dict[str, torch.Tensor] | bytes | None  # encoder.safetensors: a state dict, raw bytes or absent
    resume_from: bytes | None = None              # finetune's training checkpoint (a killed run's last.pt)
    read_only: set[Path] = field(default_factory=set)  # folders this process may not write to (os.access says so)

    def write(self) -> None:
        write_params(Path("."), self.params)
        for dataset, files in self.raw.items():
            store_raw(paths.raw_dataset(self.params["data_root"], dataset), dataset, files)
        if self.weights is not None:
            WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
            WEIGHTS.write_bytes(self.weights if isinstance(self.weights, bytes) else weight_file(self.weights))
        if self.resume_from is not None:
            path = training_checkpoint()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.resume_from)


def weight_file(state: dict[str, torch.Tensor]) -> bytes:
    """What `save_state_dict` writes for `state` (the sha256 of its tensors in the metadata)."""
    return safetensors.torch.save(state, metadata={SHA256_KEY: tensors_sha256(state)})


def training_checkpoint() -> Path:
    """Where finetune looks for the checkpoint of a killed run with the workspace's params and inputs."""
    params = load_params("params.yaml")
    run = params.run("random", "default", 0)
    fp = fingerprint(run, params.finetune, params.mask2former, WEIGHTS, paths.shards(run.setup.dataset))
    return run_directory(params.checkpoint.dir, f"finetune@{RUN}", fp) / "last.pt"


@pytest.fixture(scope="session")
def encoder_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_native_model("vit_small_patch16_224", False, TINY_VIT).state_dict()


@pytest.fixture(scope="session")
def earlier_shards(tmp_path_factory) -> Path:
    """Shards prepared from the intact raw datasets: the earlier output of prepare@<dataset>."""
    root = tmp_path_factory.mktemp("earlier")
    for dataset, (_, files) in RAW.items():
        store_raw(root / "raw" / dataset, dataset, files())
        prepare_dataset(dataset, root / "raw" / dataset, root / "shards" / dataset, shard_size=2, workers=1)
    return root / "shards"


@pytest.fixture
def workspace(tmp_path, monkeypatch, raw_params, encoder_state, earlier_shards) -> Workspace:
    """A working directory holding earlier outputs of prepare and finetune; the inputs are written by the test."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(earlier_shards, paths.SHARDS)
    for path, data in ((paths.finetune_dir(RUN) / "segmenter.safetensors", b"earlier segmenter"),
                       (paths.finetune_metrics(RUN), b'{"miou": 0.25}\n'),
                       (paths.train_plots(RUN) / "metrics" / "train" / "loss.tsv", b"step\tloss\n1\t2.5\n")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return Workspace(tiny_params(raw_params), {}, {dataset: files() for dataset, (_, files) in RAW.items()},
                     dict(encoder_state))


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under `root`, but an empty `.tmp/` (pipeline.atomic's)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in root.rglob("*")
            if not (p == root / ".tmp" and p.is_dir() and not any(p.iterdir()))}


def run_stage(ws: Workspace, stage: str) -> None:
    if stage == "validate":
        validate.main(["--params", "params.yaml"])
        return
    run, args = STAGES[stage]
    main(run, argparse.Namespace(params="params.yaml", **{**args, **ws.args}))


# ---------------------------------------------------------------------------------------------------------------
# Breakers: each edits one input of the workspace.


def set_param(dotted: str, value) -> Callable[[Workspace], None]:
    """params.yaml key `a.b.c` set to `value`."""
    *parents, key = dotted.split(".")

    def breaker(ws: Workspace) -> None:
        reduce(lambda section, name: section[name], parents, ws.params)[key] = value
    return breaker


def set_arg(name: str, value) -> Callable[[Workspace], None]:
    return lambda ws: ws.args.update({name: value})


def set_raw(dataset: str, inner: str, data: bytes | None) -> Callable[[Workspace], None]:
    """File `inner` of a dataset's archive replaced by `data` (None: removed)."""
    def breaker(ws: Workspace) -> None:
        ws.args["dataset"] = dataset
        if data is None:
            del ws.raw[dataset][inner]
        else:
            ws.raw[dataset][inner] = data
    return breaker


def no_raw_data(ws: Workspace) -> None:
    del ws.raw["ade20k"]


def truncated_jpeg() -> bytes:
    whole = encode_jpeg(_rgb(np.random.default_rng(0), 64, 64))
    return whole[: len(whole) // 2]  # header intact, scan data cut


def label_with(value: int) -> bytes:
    label = np.ones((6, 8), np.uint8)
    label[2, 3] = value
    return encode_png(label)


def truncate_weights(ws: Workspace) -> None:
    data = safetensors.torch.save(ws.weights)
    ws.weights = data[: len(data) // 2]


def rename_weights(ws: Workspace) -> None:
    """A fine-tuned segmenter's keys (encoder.model.*) instead of the native timm ones."""
    ws.weights = {f"encoder.model.{k}": v for k, v in ws.weights.items()}


def other_architecture(ws: Workspace) -> None:
    ws.weights = create_native_model("vit_small_patch16_224", False, {**TINY_VIT, "embed_dim": 48, "depth": 3,
                                                                       "num_heads": 3}).state_dict()


def no_weights(ws: Workspace) -> None:
    ws.weights = None


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def truncated_training_checkpoint(ws: Workspace) -> None:
    data = saved({"format": 1, "step": 3, "model": dict(ws.weights)})
    ws.resume_from = data[: len(data) // 2]


def training_checkpoint_without_state(ws: Workspace) -> None:
    """A checkpoint file holding only a model (e.g. a weights file copied into place)."""
    ws.resume_from = saved({"model": dict(ws.weights)})


def rename_param(dotted: str, new: str) -> Callable[[Workspace], None]:
    """A typo: params.yaml key `a.b.c` renamed to `a.b.<new>`."""
    *parents, key = dotted.split(".")

    def breaker(ws: Workspace) -> None:
        section = reduce(lambda section, name: section[name], parents, ws.params)
        section[new] = section.pop(key)
    return breaker


def delete_param(dotted: str) -> Callable[[Workspace], None]:
    *parents, key = dotted.split(".")
    return lambda ws: reduce(lambda section, name: section[name], parents, ws.params).pop(key)


def damage(path: Path, how: str) -> Callable[[Workspace], None]:
    """An earlier output `path` truncated, with its last byte changed, or deleted (a user's edit, a bad disk)."""
    def breaker(ws: Workspace) -> None:
        data = path.read_bytes()
        if how == "truncated":
            path.write_bytes(data[: len(data) // 2])
        elif how == "edited":
            path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        else:
            path.unlink()
    return breaker


def edit_weights(ws: Workspace) -> None:
    """The last byte of a tensor changed after pretrain@ wrote the file with its tensors' sha256."""
    data = weight_file(ws.weights)
    ws.weights = data[:-1] + bytes([data[-1] ^ 1])


def file_instead_of_folder(folder: str) -> Callable[[Workspace], None]:
    """A file where a stage writes a folder (or into one)."""
    def breaker(ws: Workspace) -> None:
        path = Path(folder)
        if path.is_dir():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not a folder\n")
        if WEIGHTS.is_relative_to(path):
            ws.weights = None
    return breaker


def read_only(folder: str) -> Callable[[Workspace], None]:
    """An existing folder this process may not write to (simulated, so that it also holds for root)."""
    def breaker(ws: Workspace) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        ws.read_only.add(Path(folder))
    return breaker


# ---------------------------------------------------------------------------------------------------------------
# The table: (stage, breaker, pattern of the message after `error: `), searched with re.DOTALL.

PARAMS_CASES = [
    pytest.param("finetune", set_param("learning_rate", 1.0e-3),
                 r"unknown top-level key\(s\) \['learning_rate'\]; allowed: \['decoder', ",
                 id="params-unknown-top-level-key"),
    pytest.param("finetune", set_param("finetune.lr_typo", 1.0e-3),
                 r"finetune: unknown key\(s\) \['lr_typo'\]; allowed: \['batch_size', ",
                 id="params-unknown-key-in-section"),
    pytest.param("finetune", set_param("models", ["random", "nope"]),
                 r"models\[1\]: unknown value 'nope'; allowed: \['clip', 'dino', 'mim', 'random', 'supervised'\]",
                 id="params-unknown-model"),
    pytest.param("finetune", set_param("data_cfg.ade20k.steps", 0),
                 r"data_cfg\.ade20k\.steps must be positive, got 0$",
                 id="params-zero-steps"),
    pytest.param("finetune", set_param("finetune.batch_size", -8),
                 r"finetune\.batch_size must be positive, got -8", id="params-negative-batch-size"),
    pytest.param("finetune", set_param("align.batch_size", 0),
                 r"align\.batch_size must be positive, got 0", id="params-zero-align-batch-size"),
    pytest.param("finetune", set_param("finetune.batch_size", 6),
                 r"finetune\.batch_size \(6\) must be a multiple of finetune\.micro_batch_size \(4\)",
                 id="params-batch-not-multiple-of-micro-batch"),
    pytest.param("finetune", set_param("patch_size", 7),
                 r"patch_size in base setup: 7 does not divide the crop 96 \(data_cfg\.ade20k\.crop\); "
                 r"allowed: \[1, 2, 3, 4, 6, 8, 12, 16, 24, 32\]",
                 id="params-patch-size-does-not-divide-crop"),
    pytest.param("finetune", set_param("setting_cfg.default", {"patch_size": 7}),
                 r"patch_size in setting 'default' \(setting_cfg\.default over the base setup\): 7 does not divide "
                 r"the crop 96 \(data_cfg\.ade20k\.crop\)",
                 id="params-setting-patch-size-does-not-divide-crop"),
    pytest.param("finetune", set_param("setting_cfg.default", {"decoderr": "linear"}),
                 r"setting_cfg\.default: unknown key\(s\) \['decoderr'\] \(did you mean 'decoder'\?\); allowed: "
                 r"\['decoder', 'size', ",
                 id="params-setting-overrides-unknown-key"),
    pytest.param("finetune", set_param("checkpoint.every", -1),
                 r"checkpoint\.every must be >= 0 \(0 = no checkpoints\), got -1",
                 id="params-negative-checkpoint-every"),
    pytest.param("finetune", set_param("finetune.lr", "1e-3"),
                 r"finetune\.lr: expected float, got '1e-3' \(write floats as 1\.0e-4", id="params-float-as-string"),
    pytest.param("finetune", set_arg("setting", "patch8"),
                 r"setting: unknown value 'patch8'; allowed: \['default'\]", id="args-setting-not-in-settings"),
    pytest.param("prepare", set_arg("dataset", "imagenet"),
                 r"--dataset: unknown value 'imagenet'; allowed \(datasets in params\.yaml\): "
                 r"\['ade20k', 'pascal_voc'\]",
                 id="args-unknown-dataset"),
    # `validate`, the first stage of dvc.yaml, checks the whole file before DVC deletes any output
    pytest.param("validate", rename_param("decoder", "decodr"),
                 r"unknown top-level key\(s\) \['decodr'\] \(did you mean 'decoder'\?\); allowed: \['decoder', ",
                 id="params-typo-did-you-mean"),
    pytest.param("validate", rename_param("finetune.lr", "lrr"),
                 r"finetune: unknown key\(s\) \['lrr'\] \(did you mean 'lr'\?\); allowed: \['batch_size', ",
                 id="params-typo-in-section-did-you-mean"),
    pytest.param("validate", rename_param("model_cfg.random.base.timm_name", "timm_nme"),
                 r"model_cfg\.random\.base: unknown key\(s\) \['timm_nme'\] \(did you mean 'timm_name'\?\)",
                 id="params-typo-in-model-variant"),
    pytest.param("validate", rename_param("generate.seed", "sed"),
                 r"generate: unknown key\(s\) \['sed'\] \(did you mean 'seed'\?\); allowed: \['seed', 'counts'\]",
                 id="params-typo-in-generate"),
    pytest.param("validate", set_param("models", ["random", "supervisd"]),
                 r"models\[1\]: unknown value 'supervisd' \(did you mean 'supervised'\?\); allowed: \[.*\], the ids of "
                 r"model_cfg \(a new id needs its model_cfg\.supervisd entry\)",
                 id="params-unknown-model-did-you-mean"),
    pytest.param("validate", set_param("settings", ["default", "patch4"]),
                 r"settings\[1\]: unknown value 'patch4' \(did you mean 'patch8'\?\); allowed: \[.*\], the ids of "
                 r"setting_cfg \(a new id needs its setting_cfg\.patch4 entry\)",
                 id="params-setting-without-setting-cfg"),
    pytest.param("validate", set_param("towers", ["random", "nonexistent"]),
                 r"towers\[1\]: unknown value 'nonexistent'; allowed: \[.*\], the ids of model_cfg \(a new id needs "
                 r"its model_cfg\.nonexistent entry\)",
                 id="params-unknown-tower"),
    pytest.param("validate", set_param("methods", ["simzss", "clip"]),
                 r"methods\[1\]: unknown value 'clip'; allowed: \[.*\], the ids of method_cfg \(a new id "
                 r"needs its method_cfg\.clip entry\)",
                 id="params-unknown-method"),
    pytest.param("validate", delete_param("data_cfg.ade20k"),
                 r"dataset in base setup: 'ade20k' is trained or evaluated on, but data_cfg\.ade20k \(crop, steps\) "
                 r"is missing",
                 id="params-missing-data-cfg"),
]

DATA_CASES = [
    pytest.param("prepare", set_raw("ade20k", f"{ADE}/images/training/ADE_train_00000002.jpg", truncated_jpeg()),
                 rf"{ADE}\.zip::{ADE}/images/training/ADE_train_00000002\.jpg: cannot decode image, expected a "
                 r"complete JPEG or PNG \(image file is truncated",
                 id="data-truncated-jpeg"),
    pytest.param("prepare", set_raw("ade20k", f"{ADE}/annotations/training/ADE_train_00000002.png", label_with(200)),
                 rf"{ADE}/annotations/training/ADE_train_00000002\.png: label values \[200\] are not valid ade20k "
                 r"label ids \(expected 0\.\.150\)",
                 id="data-label-outside-mapping"),
    pytest.param("prepare", set_raw("pascal_voc", f"{VOC_LISTS}/train.txt", None),
                 rf"VOCtrainval_11-May-2012\.tar: split list {VOC_LISTS}/train\.txt not found",
                 id="data-missing-split-list"),
    pytest.param("prepare", set_raw("pascal_voc", f"{VOC_LISTS}/val.txt", b""),
                 rf"VOCtrainval_11-May-2012\.tar \({VOC_LISTS}/val\.txt\): split 'val' of pascal_voc is empty; "
                 r"expected at least one sample",
                 id="data-empty-split"),
    pytest.param("prepare", set_raw("ade20k", f"{ADE}/images/training/ADE_train_00000001.jpg",
                                    encode_jpeg(_rgb(np.random.default_rng(0), 6, 9))),
                 rf"{ADE}/annotations/training/ADE_train_00000001\.png: label is 8x6 \(WxH\) but image "
                 rf"\S+{ADE}/images/training/ADE_train_00000001\.jpg is 9x6; expected equal sizes",
                 id="data-image-label-size-mismatch"),
    pytest.param("prepare", set_raw("ade20k", f"{ADE}/annotations/validation/ADE_val_00000001.png", None),
                 rf"label {ADE}/annotations/validation/ADE_val_00000001\.png missing for image "
                 rf"\S+{ADE}/images/validation/ADE_val_00000001\.jpg",
                 id="data-label-missing"),
    pytest.param("prepare", no_raw_data,
                 rf"data/miniature/ade20k: found neither archive {ADE}\.zip nor extracted folder {ADE}/",
                 id="data-dataset-missing"),
    # shards are checked against the sha256 of their manifest, before any compute
    pytest.param("finetune", damage(SHARD, "truncated"),
                 rf"{SHARD}: sha256 differs from the one data/shards/ade20k/manifest\.json recorded \(truncated or "
                 rf"modified since prepare@ade20k wrote it\); {REPREPARE}",
                 id="data-truncated-shard"),
    pytest.param("finetune", damage(SHARD, "edited"), rf"{SHARD}: sha256 differs from .*; {REPREPARE}",
                 id="data-edited-shard"),
    pytest.param("finetune", damage(SHARD, "deleted"),
                 rf"{SHARD}: listed in data/shards/ade20k/manifest\.json but missing; {REPREPARE}",
                 id="data-missing-shard"),
    pytest.param("finetune", damage(paths.shards("ade20k") / "val-000000.tar", "truncated"),
                 rf"data/shards/ade20k/val-000000\.tar: sha256 differs from .*; {REPREPARE}",
                 id="data-truncated-eval-shard-before-training"),
    pytest.param("pretrain", damage(SHARD, "truncated"), rf"{SHARD}: sha256 differs from .*; {REPREPARE}",
                 id="data-truncated-shard-at-pretrain"),
]

CHECKPOINT_CASES = [
    pytest.param("finetune", truncate_weights,
                 rf"cannot read checkpoint {WEIGHTS_RE} \(truncated or not a weight file\?\): .*; re-run: dvc repro -f "
                 r"-s pretrain@random-base$",
                 id="checkpoint-truncated"),
    pytest.param("finetune", edit_weights,
                 rf"checkpoint {WEIGHTS_RE}: its tensors differ from the sha256 recorded when it was written \(damaged "
                 r"or edited since\); re-run: dvc repro -f -s pretrain@random-base$",
                 id="checkpoint-edited"),
    pytest.param("finetune", rename_weights,
                 rf"checkpoint {WEIGHTS_RE} does not fit VisionTransformer:\s+missing keys \(\d+\): cls_token, "
                 r"pos_embed, .*\s+unexpected keys \(\d+\): encoder\.model\.blocks\.0\.",
                 id="checkpoint-renamed-keys"),
    pytest.param("finetune", other_architecture,
                 rf"checkpoint {WEIGHTS_RE} does not fit VisionTransformer:\s+unexpected keys \(\d+\): "
                 r"blocks\.2\.\S+, .*\s+shape mismatches \(\d+\): cls_token: expected \(1, 1, 32\) vs got \(1, 1, 48\)",
                 id="checkpoint-other-architecture"),
    pytest.param("finetune", no_weights,
                 rf"checkpoint file not found: {WEIGHTS_RE}; re-run: dvc repro -f -s pretrain@random-base$",
                 id="checkpoint-missing"),
    pytest.param("finetune", truncated_training_checkpoint,
                 rf"{TRAINING_CHECKPOINT_RE}: unreadable training checkpoint, truncated or not written by this "
                 r"pipeline .*re-run with --fresh", id="training-checkpoint-truncated"),
    pytest.param("finetune", training_checkpoint_without_state,
                 rf"{TRAINING_CHECKPOINT_RE}: not a training checkpoint of this pipeline: missing extra, fingerprint, "
                 r"format, optimizer, rng, .*\(found \['model'\]\).*re-run with --fresh",
                 id="training-checkpoint-wrong-keys"),
]


OUTPUT_CASES = [  # every output, checkpoint and plots folder is checked writable before any compute
    pytest.param("finetune", file_instead_of_folder("checkpoints"),
                 r"cannot write checkpoints: checkpoints is a file, not a folder; move it away and re-run$",
                 id="output-checkpoint-folder-is-a-file"),
    pytest.param("finetune", file_instead_of_folder("plots/train"),
                 rf"cannot write plots/train/{RUN}: plots/train is a file, not a folder",
                 id="output-plots-folder-is-a-file"),
    pytest.param("finetune", read_only("metrics/finetune"),
                 rf"cannot write metrics/finetune/{RUN}\.json: folder metrics/finetune is not writable; make it "
                 r"writable \(chmod u\+w metrics/finetune\) and re-run$",
                 id="output-metrics-folder-read-only"),
    pytest.param("finetune", read_only("models/finetune"),
                 rf"cannot write models/finetune/{RUN}: folder models/finetune is not writable",
                 id="output-models-folder-read-only"),
    pytest.param("finetune", file_instead_of_folder(".tmp"),
                 r"cannot write \.tmp: \.tmp is a file, not a folder", id="output-workspace-temp-is-a-file"),
    pytest.param("pretrain", file_instead_of_folder("models/pretrain/random"),
                 rf"cannot write {WEIGHTS_RE}: models/pretrain/random is a file, not a folder",
                 id="output-weights-folder-is-a-file"),
    pytest.param("prepare", read_only("data/shards"),
                 r"cannot write data/shards/ade20k: folder data/shards is not writable", id="output-shards-read-only"),
]


CASES = PARAMS_CASES + DATA_CASES + CHECKPOINT_CASES + OUTPUT_CASES


@pytest.mark.parametrize("stage, breaker, pattern", CASES)
def test_bad_input_stops_the_stage_with_a_clear_error_and_leaves_outputs_intact(workspace, capsys, monkeypatch,
                                                                                request, stage, breaker, pattern):
    breaker(workspace)
    workspace.write()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: not (mode & os.W_OK and Path(path) in
                                                                       workspace.read_only) and access(path, mode))
    before = snapshot(Path("."))
    with pytest.raises(SystemExit) as exit_info:
        run_stage(workspace, stage)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(pattern, err, re.DOTALL), f"{pattern!r} not in {err!r}"
    assert err.count("\n") == 1 or request.node.callspec.id in MULTI_LINE, f"not one line: {err!r}"
    assert snapshot(Path(".")) == before, "the failed stage changed the workspace"


def test_the_readme_table_has_a_row_for_every_case():
    section = (REPO / "README.md").read_text().split("\n## Bad input\n", 1)[1].split("\n## ", 1)[0]
    assert sorted(re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M)) == sorted(case.id for case in CASES)


class Reached(Exception):
    """The stage got past the input checks."""


def test_intact_workspace_passes_every_check(workspace, monkeypatch, capsys):
    """Without a breaker, prepare runs (replacing its earlier output) and finetune loads the weights."""
    workspace.write()
    run_stage(workspace, "prepare")
    assert "ade20k: {'train': 3, 'val': 2}" in capsys.readouterr().out
    load_strict = encoder.load_strict

    def load_then_stop(module, state_dict, source):
        load_strict(module, state_dict, source)
        raise Reached(source)

    monkeypatch.setattr(encoder, "load_strict", load_then_stop)
    with pytest.raises(Reached, match=str(WEIGHTS)):
        run_stage(workspace, "finetune")
