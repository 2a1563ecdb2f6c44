"""`dvc repro` of a further-shrunk study in a temporary git repository: every declared output exists and parses."""
import copy
import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from pipeline.evaluation import image_counts
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
    params.update(towers=["random", "supervised"], encoders=["random", "supervised"])
    params["generate"]["counts"]["coco_captions"] = {"train": 8}
    params["concepts"].update(image_size=48)
    params["text_tower"].update(width=16, layers=1, heads=2)
    params["align"].update(image_size=32, batch_size=8, micro_batch_size=4, samples_per_epoch=16, epochs=2, log_every=1)
    params["zeroshot"].update(benchmarks=["ade20k", "cityscapes"], background_threshold={}, short_side=32, window=32,
                              stride=16)
    return params


@pytest.fixture(scope="module")
def study(tmp_path_factory, repo_params_raw):
    root = tmp_path_factory.mktemp("study")
    params = shrink(copy.deepcopy(repo_params_raw))  # the committed params.yaml (tests/conftest.py)
    env = dvc_repo(root, yaml.safe_dump(params, sort_keys=False))
    output = run(DVC + ["repro"], root, env)
    return root, params, env, DVC, output


def test_every_run_writes_flat_numeric_metrics(study):
    root, params, *_ = study
    setting_eval = {s: params["setting_cfg"][s].get("eval_dataset", params["eval_dataset"]) for s in params["settings"]}
    for model in params["models"]:
        for setting in params["settings"]:
            for seed in params["seeds"]:
                metrics = json.loads((root / f"metrics/finetune/{model}-{setting}-{seed}.json").read_text())
                assert 0.0 <= metrics["miou"] <= 1.0
                assert metrics["optimizer_steps"] == 3
                assert all(isinstance(v, (int, float)) for v in metrics.values())
                assert (root / f"models/finetune/{model}-{setting}-{seed}/segmenter.safetensors").is_file()
                counts = image_counts.load(root / f"per_image/finetune/{model}-{setting}-{seed}.npz")
                assert counts[setting_eval[setting]].miou() == metrics["miou"]
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
            assert {"miou_ade20k", "miou_cityscapes", "dominant_class_top1_ade20k"} <= set(zero_shot)
            counts = image_counts.load(root / f"per_image/zeroshot/{tower}-{method}.npz")
            assert {b: c.miou() for b, c in counts.items()} == {b: zero_shot[f"miou_{b}"] for b in counts}
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
        if "tau" in ranking["settings"][setting]:  # not for a constant ranking (toy models may tie)
            assert {"tau_ci_low", "tau_ci_high", "p_tau_below_1"} <= set(ranking["settings"][setting])
        for model in params["models"]:
            entry = ranking["models"][model][setting]
            assert 0 <= entry["miou_ci_low"] <= entry["miou_ci_high"] <= 1
    if "tau" in ranking["settings"]["default"]:
        assert ranking["settings"]["default"]["p_tau_below_1"] == 0.0  # the base against itself, on every resample
    assert set(ranking["models"]) == set(params["models"])
    flips = json.loads((root / "plots/rank_flips.json").read_text())
    assert len(flips) == len(params["settings"]) * len(params["models"]) * (len(params["models"]) - 1) // 2


def test_plots_are_long_format_records_and_figures_exist(study):
    root, params, *_ = study
    miou = json.loads((root / "plots/miou.json").read_text())
    assert len(miou) == len(params["models"]) * len(params["settings"])
    assert {"model", "setting", "miou", "miou_std", "rank"} <= set(miou[0])
    for name in ["tau.json", "training_time.json"]:
        assert isinstance(json.loads((root / "plots" / name).read_text()), list)
    figures = {p.name for p in (root / "plots/figures").glob("*.png")}
    assert figures == {"tau.png", "ranks.png", "miou_mask2former.png", "miou_patch8.png", "miou_gta5.png"}


def test_figures_and_report_stages_draw_what_a_reviewer_opens(study):
    root, params, *_ = study
    runs = [f"{m}-{s}-{seed}" for m in params["models"] for s in params["settings"] for seed in params["seeds"]]
    assert {p.name for p in (root / "plots/runs").glob("*.png")} == {f"{run}.png" for run in runs}
    assert {p.name for p in (root / "plots/per_class").glob("*.png")} == {
        "iou.png", *(f"confusion_{m}.png" for m in params["models"])}
    report = (root / "plots/report.md").read_text()
    assert "| default (base) |" in report and "## mIoU % per model and setting" in report
    ranking = json.loads((root / "metrics/ranking.json").read_text())
    for model in params["models"]:
        row = next(line for line in report.splitlines() if line.startswith(f"| {model} |"))
        assert row.split("|")[2].strip().startswith("**") == (ranking["models"][model]["default"]["rank"] == 1)
    links = re.findall(r"\]\(([^)]+\.png)\)", report)
    assert links and all((root / "plots" / link).is_file() for link in links)


def test_dvc_lists_the_review_metrics_and_plots_without_empty_specs(study):
    root, params, env, dvc, _ = study
    shown = json.loads(run(dvc + ["metrics", "show", "--json"], root, env))
    assert set(next(iter(shown.values()))["data"]) == {"metrics/ranking.json", "metrics/concepts.json"}
    plots = json.loads(run(dvc + ["plots", "show", "--json"], root, env))["data"]
    assert {f"plots/per_class/{name}.png" for name in ["iou", *(f"confusion_{m}" for m in params["models"])]} | {
        f"plots/runs/{params['models'][0]}-default-0.png"} <= set(plots)
    curves = [name for name in plots if name.startswith("plots/train/")]
    assert curves and not [name for name in plots if name.endswith("metrics.json")]  # dvclive's summary: no plot
    for name, entries in plots.items():
        for entry in entries:
            if entry["type"] == "vega":
                values = entry["content"]["data"]["values"]
                assert values, f"{name}: empty spec"
                if name in curves:
                    assert entry["content"]["encoding"]["x"]["field"] == "step"
                    assert sorted({int(row["step"]) for row in values}) == [1, 2, 3]  # optimizer steps


def test_plots_html_has_its_scripts_inline_and_renders_offline(study, tmp_path):
    """DVC's default HTML loads Vega from a CDN; the project's template (.dvc/config) inlines it. Headless Chromium
    with every connection refused renders each chart of the project's page and none of the default page."""
    root, params, env, dvc, _ = study
    run(dvc + ["plots", "show", "-o", str(tmp_path / "offline")], root, env)
    page = (tmp_path / "offline" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "vega@5.33.1" in page
    charts = page.count("vegaEmbed('#")
    assert charts > 10
    chromium = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
    if chromium is None:
        pytest.skip("no Chromium to render the page (apt-get install chromium)")
    (tmp_path / "default.html").write_text("<!DOCTYPE html><html><head>{scripts}</head><body>{plot_divs}</body></html>")
    run(dvc + ["plots", "show", "-o", str(tmp_path / "cdn"), "--html-template", str(tmp_path / "default.html")],
        root, env)

    def rendered(page) -> int:
        dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
                              "--proxy-bypass-list=<-loopback>", "--virtual-time-budget=20000", "--dump-dom",
                              page.as_uri()], capture_output=True, text=True, timeout=300).stdout
        return dom.count('class="marks"')  # vega-embed's canvas, one per drawn chart

    assert rendered(tmp_path / "offline" / "index.html") == charts
    assert rendered(tmp_path / "cdn" / "index.html") == 0


def test_dvc_sees_metrics_and_plots_and_a_second_repro_runs_nothing(study):
    root, params, env, dvc, output = study
    assert "mIoU % mean±std" in output and "P(tau < 1)" in output
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
    assert set(diff) == {"metrics/ranking.json"}  # the per-run records are not DVC metrics...
    assert {f"models.{m}.default.miou" for m in params["models"]} <= set(diff["metrics/ranking.json"])
    runs = json.loads(run(dvc + ["metrics", "diff", "--json", "--targets", "metrics/finetune"], root, env))
    changed = {path for path, values in runs.items() if "miou" in values}  # ...but diff on request
    assert {f"metrics/finetune/{m}-default-0.json" for m in params["models"]} <= changed
    shown = json.loads(run(dvc + ["exp", "show", "--json"], root, env))
    assert "m2f" in json.dumps(shown)
    now, before = (json.loads(text) for text in ((root / "metrics/ranking.json").read_text(),
                                                run(["git", "show", "HEAD:metrics/ranking.json"], root, env)))
    moved = any(round(abs(now["models"][m][s]["miou"] - before["models"][m][s]["miou"]) * 100, 1) > 0
                for m in params["models"] for s in params["settings"])  # a change the table's 0.1 points show
    for base, changes in (("HEAD", moved), ("m2f", False)):  # a commit, and an experiment name (the workspace's)
        report = subprocess.run([sys.executable, "-m", "pipeline.tools.report", "--base", base], cwd=root, env=env,
                                capture_output=True, text=True)
        assert report.returncode == 0, report.stderr
        assert f"# Study results against `{base}`" in report.stdout
        assert "## What moved beyond the noise" in report.stdout
        assert bool(re.search(r"\([+-]\d+\.\d†?\)", report.stdout)) == changes  # mIoU cells with a change
