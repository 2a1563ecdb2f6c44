"""params.resolved/: each matrix run's file changes exactly when a value the run reads changes (pipeline.stage_params)."""
import copy
import json

import pytest

from pipeline import stage_params
from pipeline.config import parse_params
from tests.conftest import REPO


def resolved_texts(raw: dict) -> dict[str, str]:
    params = parse_params(copy.deepcopy(raw))
    return {name: stage_params.as_json(r) for name, r in stage_params.runs(params).items()}


def changed_runs(raw: dict, edit) -> set[str]:
    before = resolved_texts(raw)
    edited = copy.deepcopy(raw)
    edit(edited)
    after = resolved_texts(edited)
    assert before.keys() == after.keys()
    return {name.removesuffix(".json") for name in before if before[name] != after[name]}


def runs_of(raw: dict, stage: str, setting: str | None = None) -> set[str]:
    if setting:
        return {f"{stage}/{model}-{setting}" for model in raw["models"]}
    return {name.removesuffix(".json") for name in resolved_texts(raw) if name.startswith(stage + "/")}


def test_logging_cadence_and_checkpoints_change_no_run(raw_params):
    def edit(p):
        p["finetune"]["log_every"] += 1
        p["align"]["log_every"] += 1
        p["checkpoint"]["every"] += 7
    assert changed_runs(raw_params, edit) == set()


def test_a_dataset_config_changes_only_the_runs_that_train_on_it(raw_params):
    changed = changed_runs(raw_params, lambda p: p["data_cfg"]["cityscapes"].update(steps=3))
    assert changed == runs_of(raw_params, "finetune", "cityscapes")  # gta5 evaluates on Cityscapes, trains on GTA5


def test_a_decoder_config_changes_only_the_runs_with_that_decoder(raw_params):
    changed = changed_runs(raw_params, lambda p: p["decoder_cfg"]["mask2former"].update(hidden_dim=64))
    assert changed == runs_of(raw_params, "finetune", "mask2former")


def test_the_base_decoder_changes_every_fine_tuning_and_nothing_else(raw_params):
    changed = changed_runs(raw_params, lambda p: p.update(decoder="mask2former"))
    assert changed == runs_of(raw_params, "finetune") - runs_of(raw_params, "finetune", "mask2former")


def test_a_model_size_changes_only_its_runs(raw_params):
    changed = changed_runs(raw_params, lambda p: p["model_cfg"]["mim"]["large"]["timm_kwargs"].update(depth=5))
    assert changed == {"pretrain/mim-large", "finetune/mim-vit_large"}


def test_toy_pretraining_settings_reach_only_toy_pretrainings(raw_params):
    raw_params["model_cfg"]["mim"]["pretraining"] = "hub"
    for size in ("base", "large"):
        raw_params["model_cfg"]["mim"][size]["pretrained"] = True
    changed = changed_runs(raw_params, lambda p: p["pretrain"].update(steps=7))
    assert changed == runs_of(raw_params, "pretrain") - {"pretrain/mim-base", "pretrain/mim-large"}


def test_a_toy_familys_own_section_reaches_only_its_pretrainings(raw_params):
    raw_params["encoders"] = list(dict.fromkeys([*raw_params["encoders"], "clip", "dino"]))
    assert changed_runs(raw_params, lambda p: p["pretrain"]["dino"].update(out_dim=7)) \
        == {"pretrain/dino-base", "pretrain/dino-large"}
    assert changed_runs(raw_params, lambda p: p["pretrain"]["clip"].update(embed_dim=7)) \
        == {"pretrain/clip-base", "pretrain/clip-large"}
    assert changed_runs(raw_params, lambda p: p["pretrain"].update(steps=7)) == runs_of(raw_params, "pretrain")


def test_a_method_changes_only_its_alignments(raw_params):
    changed = changed_runs(raw_params, lambda p: p["method_cfg"]["simzss"].update(concept_weight=0.1))
    assert changed == {f"align/{tower}-simzss" for tower in raw_params["towers"]}


def test_alignment_settings_the_evaluation_reads_change_both(raw_params):
    other = {"cls": "patch_mean", "patch_mean": "cls"}[raw_params["align"]["global_token"]]
    changed = changed_runs(raw_params, lambda p: p["align"].update(global_token=other))
    assert changed == runs_of(raw_params, "align") | runs_of(raw_params, "zeroshot")
    assert changed_runs(raw_params, lambda p: p["align"].update(epochs=p["align"]["epochs"] + 1)) \
        == runs_of(raw_params, "align")


def test_a_run_file_holds_what_the_run_reads(raw_params):
    params = parse_params(copy.deepcopy(raw_params))
    linear = json.loads(stage_params.as_json(stage_params.finetune(params, "mim", "cityscapes", 0)))
    assert linear["run"]["setup"]["dataset"] == "cityscapes" and linear["mask2former"] is None
    assert (linear["run"]["crop"], linear["run"]["steps"]) == (raw_params["data_cfg"]["cityscapes"]["crop"],
                                                               raw_params["data_cfg"]["cityscapes"]["steps"])
    assert "seed" not in linear["run"] and "log_every" not in linear["finetune"]
    m2f = stage_params.finetune(params, "mim", "mask2former", 0)
    assert m2f.mask2former == params.mask2former and m2f.run.seed == 0


def test_write_all_rewrites_changed_files_only_and_removes_stale_ones(tmp_path, raw_params):
    root = tmp_path / "params.resolved"
    params = parse_params(copy.deepcopy(raw_params))
    assert stage_params.write_all(params, root) == len(stage_params.runs(params))
    stale = root / "finetune" / "gone-default.json"
    stale.write_text("{}\n")
    edited = copy.deepcopy(raw_params)
    edited["data_cfg"]["pascal_voc"]["steps"] = 3
    assert stage_params.write_all(parse_params(edited), root) == len(raw_params["models"])
    assert not stale.exists()
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.json")) == sorted(stage_params.runs(params))


def test_the_committed_files_are_the_study_params(raw_params):
    """params.resolved/ is in git (as params.validated), so a fresh clone's `dvc status` is clean."""
    params = parse_params(copy.deepcopy(raw_params))
    for name, resolved in stage_params.runs(params).items():
        assert (REPO / stage_params.RESOLVED / name).read_text() == stage_params.as_json(resolved), name
