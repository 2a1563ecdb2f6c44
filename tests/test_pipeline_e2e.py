"""`dvc repro` of a further-shrunk study in a temporary git repository: every declared output exists and parses."""
import json

import pytest
import yaml

from tests.conftest import REPO
from tests.dvc_repo import DVC, dvc_repo, run

pytestmark = pytest.mark.e2e


def shrink(params: dict) -> dict:
    params.update(models=["random", "supervised"], settings=["default", "mask2former", "patch8", "gta5"], seeds=[0, 1],
                  datasets=["ade20k", "cityscapes", "gta5"], sizes=["base"])
    params["generate"]["counts"] = {"ade20k": {"train": 12, "val": 4}, "pascal_voc": {"train": 2, "val": 2},
                                    "cityscapes": {"train": 4, "val": 2}, "gta5": {"train": 6}}
    params["data_cfg"] = {name: {"crop": 64, "steps": 3} for name in ["ade20k", "pascal_voc", "cityscapes", "gta5"]}
    params["pretrain"].update(steps=4, batch_size=4)
    params["finetune"].update(batch_size=4, micro_batch_size=2, log_every=1)
    params["decoder_cfg"]["mask2former"].update(hidden_dim=16, num_queries=6, num_heads=2, ffn_dim=32, num_points=64)
    for cfg in params["model_cfg"].values():
        for size in ("base", "large"):
            cfg[size]["timm_kwargs"].update(img_size=32, embed_dim=32, depth=2, num_heads=2)
    params.update(towers=["random", "supervised"])
    params["generate"]["counts"]["coco_captions"] = {"train": 8}
    params["concepts"].update(image_size=48)
    params["text_tower"].update(width=16, layers=1, heads=2)
    params["align"].update(image_size=32, batch_size=8, micro_batch_size=4, samples_per_epoch=16, epochs=2, log_every=1)
    params["zeroshot"].update(benchmarks=["ade20k", "cityscapes"], background_threshold={}, short_side=32, window=32,
                              stride=16)
    return params


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    params = shrink(yaml.safe_load((REPO / "params.yaml").read_text()))
    env = dvc_repo(root, yaml.safe_dump(params, sort_keys=False))
    output = run(DVC + ["repro"], root, env)
    return root, params, env, DVC, output


def test_every_run_writes_flat_numeric_metrics(study):
    root, params, *_ = study
    for model in params["models"]:
        for setting in params["settings"]:
            for seed in params["seeds"]:
                metrics = json.loads((root / f"metrics/finetune/{model}-{setting}-{seed}.json").read_text())
                assert 0.0 <= metrics["miou"] <= 1.0
                assert metrics["optimizer_steps"] == 3
                assert all(isinstance(v, (int, float)) for v in metrics.values())
                assert (root / f"models/finetune/{model}-{setting}-{seed}/segmenter.safetensors").is_file()
                assert list((root / f"plots/train/{model}-{setting}-{seed}").rglob("*.tsv"))


def test_simzss_stages_align_every_tower_and_method_and_rank_reports_zero_shot(study):
    root, params, *_ = study
    concepts = json.loads((root / "metrics/concepts.json").read_text())
    assert concepts["captions"] == 5 * 8 and concepts["captions_with_concept"] > 0
    ranking = json.loads((root / "metrics/ranking.json").read_text())
    for tower in params["towers"]:
        for method in params["methods"]:
            align = json.loads((root / f"metrics/align/{tower}-{method}.json").read_text())
            assert align["optimizer_steps"] == 4 and (align["final_concept_loss"] > 0) == (method == "simzss")
            assert (root / f"models/align/{tower}-{method}/text.safetensors").is_file()
            zero_shot = json.loads((root / f"metrics/zeroshot/{tower}-{method}.json").read_text())
            assert {"miou_ade20k", "miou_cityscapes", "top1_ade20k"} <= set(zero_shot)
            assert ranking["zeroshot"][f"{tower}-{method}"] == pytest.approx(
                (zero_shot["miou_ade20k"] + zero_shot["miou_cityscapes"]) / 2)
    assert set(ranking["zeroshot_vs_finetuned_tau"]) <= {"simzss", "lit"}
    assert "| random | simzss |" in (root / "plots/zeroshot.md").read_text()


def test_ranking_has_a_tau_and_time_ratio_for_every_setting(study):
    root, params, *_ = study
    ranking = json.loads((root / "metrics/ranking.json").read_text())
    assert set(ranking["settings"]) == set(params["settings"])
    assert ranking["settings"]["default"]["time_ratio"] == pytest.approx(1.0)
    for setting in params["settings"]:
        assert "time_ratio" in ranking["settings"][setting]
    assert set(ranking["models"]) == set(params["models"])


def test_plots_are_long_format_records_and_figures_exist(study):
    root, params, *_ = study
    miou = json.loads((root / "plots/miou.json").read_text())
    assert len(miou) == len(params["models"]) * len(params["settings"])
    assert {"model", "setting", "miou", "miou_std", "rank"} <= set(miou[0])
    for name in ["tau.json", "training_time.json"]:
        assert isinstance(json.loads((root / "plots" / name).read_text()), list)
    figures = {p.name for p in (root / "plots/figures").glob("*.png")}
    assert figures == {"tau.png", "miou_mask2former.png", "miou_patch8.png", "miou_gta5.png"}


def test_dvc_sees_metrics_and_plots_and_a_second_repro_runs_nothing(study):
    root, params, env, dvc, output = study
    assert "mIoU % mean±std" in output
    shown = json.loads(run(dvc + ["metrics", "show", "--json"], root, env))
    assert shown
    plots = json.loads(run(dvc + ["plots", "show", "--json"], root, env))
    assert "plots/miou.json" in json.dumps(plots)
    again = run(dvc + ["repro"], root, env)
    assert "Running stage" not in again
    status = run(dvc + ["status"], root, env)
    assert "changed" not in status


def test_exp_run_swaps_the_decoder_of_the_whole_study_and_metrics_diff_shows_it(study):
    """The pull-request workflow: commit the study, `dvc exp run -S decoder=mask2former`, review the diff."""
    root, params, env, dvc, _ = study
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "-m", "results"], root, env)
    run(dvc + ["exp", "run", "-S", "decoder=mask2former", "--name", "m2f"], root, env)
    for model in params["models"]:
        metrics = json.loads((root / f"metrics/finetune/{model}-default-0.json").read_text())
        m2f_setting = json.loads((root / f"metrics/finetune/{model}-mask2former-0.json").read_text())
        assert metrics["trainable_params"] == m2f_setting["trainable_params"]  # default now uses Mask2Former
    diff = json.loads(run(dvc + ["metrics", "diff", "--json"], root, env))
    changed = {path for path, values in diff.items() if "miou" in values}
    assert {f"metrics/finetune/{m}-default-0.json" for m in params["models"]} <= changed
    assert "metrics/ranking.json" in diff
    shown = json.loads(run(dvc + ["exp", "show", "--json"], root, env))
    assert "m2f" in json.dumps(shown)
