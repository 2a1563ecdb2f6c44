"""The README's how-to commands, run as the README writes them, on a tiny study in a throwaway git + DVC repository.

The command lines are read from the README itself, so an edit that breaks a recipe fails here:

- "Interruptions, several GPUs, many experiments": `LAUNCH="torchrun … --nproc_per_node=4 …" dvc repro finetune
  align`, with 2 CPU processes (gloo) for the 4 GPUs; the queue block: the sweep of one model per experiment (the
  tiny study's two model ids for the paper's four) run by `PIPELINE_GPU_LEASE=… dvc queue start` (2 workers for 4),
  the 2 x 2 grid queued (4 experiments, removed unrun: they would be 16 more fine-tunings), `dvc queue status;
  dvc exp show --only-changed`.
- "The two commands": `make repro` (`-o .venv/.installed`: the environment the tests run in is linked in as .venv,
  and make must not reinstall it).
- "Reading the results": its whole block (`dvc exp run -S decoder=mask2former`, `dvc exp run -S patch_size=8`,
  `dvc metrics diff main --md`, the report against main, `dvc exp show` with the column selection, `dvc plots diff
  main -o plots_html/`), and from "Reviewing a change" the other `dvc exp show` selections, `dvc metrics diff main
  --targets metrics/finetune`, `dvc repro finetune@…` and `dvc repro --glob …`.
- "Running the paper-scale study": `cp params-paper.yaml params.yaml`; its `dvc repro` needs the real data and GPUs,
  so in its place the check `make repro` runs first and `dvc dag`: the paper's stages and their order.
- Every `dvc exp run -S …` anywhere in the README: DVC's own override code (what `dvc exp run` calls) applied to the
  study files, which must then load: an unknown model id fails here.

scripts/slurm/vfm_job.sh, the SLURM recipe, is tests/test_slurm_job.py's.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from dvc.utils.hydra import apply_overrides, get_hydra_sweeps

from pipeline.config import load_params
from tests.conftest import REPO
from tests.dvc_repo import dvc_repo

pytestmark = pytest.mark.e2e

README = (REPO / "README.md").read_text()
RESULTS = "Reading the results"
GPUS = "Interruptions, several GPUs, many experiments"
PAPER = "Running the paper-scale study"
TWO = "The two commands"
MODELS = ["random", "supervised"]


def section(title: str) -> str:
    """The README's section `## title`, its subsections included."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:] if end == -1 else README[start:end]


def commands(title: str) -> list[str]:
    """The command lines of the bash blocks of the section, comment lines left out."""
    blocks = re.findall(r"```bash\n(.*?)```", section(title), re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")]


def command(title: str, start: str) -> str:
    [line] = [line for line in commands(title) if line.startswith(start)]
    return line


def inline(title: str, start: str) -> list[str]:
    """The section's inline code spans that begin with `start`."""
    return [span for span in re.findall(r"`([^`\n]+)`", section(title)) if span.startswith(start)]


def tiny(params: dict) -> dict:
    """Two models (so that there is a ranking), two settings, two optimizer steps, toy ViTs of 32 px."""
    params.update(models=MODELS, settings=["default", "linear_probing"], seeds=[0], datasets=["ade20k"],
                  sizes=["base"], towers=["random"], encoders=MODELS, methods=["simzss"])
    params["generate"]["counts"] = {"ade20k": {"train": 8, "val": 2}, "coco_captions": {"train": 8}}
    params["data_cfg"] = {"ade20k": {"crop": 32, "steps": 2}}
    params["pretrain"].update(dataset="ade20k", steps=2, batch_size=4)
    params["finetune"].update(batch_size=4, micro_batch_size=2, log_every=1, preview_images=1)
    params["decoder_cfg"]["mask2former"].update(hidden_dim=16, num_queries=6, num_blocks=1, num_heads=2, ffn_dim=32,
                                                num_points=64)
    for cfg in params["model_cfg"].values():
        for size in ("base", "large"):
            cfg[size]["timm_kwargs"].update(img_size=32, embed_dim=32, depth=2, num_heads=2)
    params["concepts"].update(image_size=32)
    params["text_tower"].update(width=16, layers=1, heads=2)
    params["align"].update(image_size=32, batch_size=8, micro_batch_size=4, samples_per_epoch=8, epochs=1,
                           log_every=1)
    params["zeroshot"].update(benchmarks=["ade20k"], background_threshold={}, short_side=32, long_side=64,
                              window=32, stride=16)
    params["rank"]["resamples"] = 10
    return params


def sh(study, line: str, timeout: float = 900, **env) -> str:
    """`line` run by bash in the study's repository, as a user types it; its stdout and stderr."""
    environment = {k: v for k, v in dict(study.env, **env).items() if v is not None}
    result = subprocess.run(["bash", "-c", line], cwd=study.root, env=environment, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{line}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def exp_show_header(study, keep: str) -> list[str]:
    return next(csv.reader(io.StringIO(sh(study, f"dvc exp show --drop '.*' --keep {shlex.quote(keep)} --csv"))))


@pytest.fixture(scope="module")
def study(tmp_path_factory, repo_params_raw):
    """The tiny study on branch main, built by the README's torchrun line and `make repro`, committed."""
    root = tmp_path_factory.mktemp("howto")
    env = dvc_repo(root, yaml.safe_dump(tiny(copy.deepcopy(repo_params_raw)), sort_keys=False))
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    (root / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    with open(root / ".git" / "info" / "exclude", "a") as exclude:
        exclude.write(".venv\n")
    s = SimpleNamespace(root=root, env=env)
    sh(s, "git add -A && git commit -qm study && git branch -M main")
    launch = command(GPUS, "LAUNCH=")
    assert "--nproc_per_node=4" in launch
    # Without OMP_NUM_THREADS set, torchrun says it sets it "for each process": the proof that it started several.
    s.launch = sh(s, launch.replace("--nproc_per_node=4", "--nproc_per_node=2"), OMP_NUM_THREADS=None)
    assert command(TWO, "make repro").split("#")[0].strip() == "make repro"
    s.make = sh(s, "make -o .venv/.installed repro")
    sh(s, "git add -A && git commit -qm results")
    return s


@pytest.fixture(scope="module")
def swept(study):
    """The queue block, on the committed study: a sweep of one model per experiment, run by two workers."""
    block = [line for line in commands(GPUS) if "queue" in line]
    assert len(block) == 4, block
    models_line = block[0]
    sweep, count = re.subn(r"models=(\[\w+\],)+\[\w+\]", f"models={','.join(f'[{m}]' for m in MODELS)}",
                           models_line)
    assert count == 1, models_line
    queued = sh(study, sweep)
    study.sweep = re.findall(r"Queued experiment '([^']+)'", queued)
    queued = sh(study, block[1])
    study.grid = re.findall(r"Queued experiment '([^']+)'", queued)
    study.grid_overrides = re.findall(r"Queueing with overrides '(.+)'", queued)
    study.queued = sh(study, "dvc queue status")
    sh(study, f"dvc queue remove {' '.join(study.grid)}")
    start = block[2].replace("-j 4", f"-j {len(MODELS)}").replace("/tmp/gpu-leases", str(study.root / ".gpu-leases"))
    assert start.startswith("PIPELINE_GPU_LEASE=") and "dvc queue start" in start
    with open(study.root.parent / "queue-start.log", "w") as log:  # the workers keep it open, not the pipe
        assert subprocess.run(["bash", "-c", start], cwd=study.root, env=study.env, stdout=log,
                              stderr=subprocess.STDOUT, timeout=120).returncode == 0
    deadline = time.monotonic() + 900
    while re.search(r"\b(Queued|Running)\b", status := sh(study, "dvc queue status")):
        assert time.monotonic() < deadline, status
        time.sleep(3)
    study.status = sh(study, block[3])
    return study


@pytest.fixture(scope="module")
def reviewed(swept):
    """"Reading the results"'s block, line by line, after the sweep (so `dvc exp show` has experiments to show)."""
    [block] = [b for b in re.findall(r"```bash\n(.*?)```", section(RESULTS), re.S) if "dvc metrics diff" in b]
    swept.review = {line: sh(swept, line) for line in block.splitlines() if line.strip()}
    return swept


def output(study, start: str) -> str:
    [out] = [out for line, out in study.review.items() if line.startswith(start)]
    return out


def test_torchrun_line_trains_each_stage_on_two_processes(study):
    runs = [f"finetune@{m}-{s}-0" for m in MODELS for s in ("default", "linear_probing")] + ["align@random-simzss"]
    assert set(re.findall(r"Running stage '((?:finetune|align)@[^']+)'", study.launch)) == set(runs)
    assert study.launch.count("Setting OMP_NUM_THREADS environment variable for each process") >= len(runs)
    assert "Running stage 'rank'" not in study.launch  # the targets and what they need, nothing downstream


def test_make_repro_finishes_the_study_without_training_again(study):
    assert re.findall(r"Running stage '(\w+)", study.make) == ["zeroshot", "rank", "figures", "report"]
    assert "params.yaml: valid (4 finetune runs, 1 alignments)" in study.make
    assert (study.root / "plots/report.md").is_file()


def test_repro_of_one_stage_and_of_a_glob_as_the_readme_writes_them(study):
    [one] = inline(RESULTS, "dvc repro finetune@")
    [group] = inline(RESULTS, "dvc repro --glob")
    assert "Stage 'finetune@supervised-default-0' didn't change" in sh(study, one)
    out = sh(study, group)
    assert set(re.findall(r"Stage '(finetune@[^']+)' didn't change", out)) == {
        f"finetune@{m}-linear_probing-0" for m in MODELS}


def test_the_queue_sweeps_queue_one_experiment_per_value_and_the_workers_run_them(swept):
    assert len(swept.sweep) == len(MODELS) and len(swept.grid) == 4
    assert sorted(swept.grid_overrides) == sorted(
        f"{{'params.yaml': ['decoder={d}', 'finetune.lr={lr}']}}" for d in ("linear", "mask2former")
        for lr in ("0.0001", "0.0003"))
    assert all(re.search(rf"{name}\s.*Queued", swept.queued) for name in swept.sweep + swept.grid)
    for name in swept.sweep:
        assert re.search(rf"{name}\s.*Success", swept.status), swept.status
    ran = {}
    for baseline in json.loads(sh(swept, "dvc exp show --json")):
        for exp in baseline.get("experiments") or []:
            if exp["name"] in swept.sweep:
                ran[exp["name"]] = (exp["executor"]["state"],
                                    exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["models"])
    assert sorted(ran.values()) == [("success", [m]) for m in MODELS]


def test_exp_run_swaps_a_base_setting_of_the_whole_study(reviewed):
    runs = [out for line, out in reviewed.review.items() if line.startswith("dvc exp run")]
    assert len(runs) == 2
    params = yaml.safe_load((reviewed.root / "params.yaml").read_text())
    assert params["decoder"] == "mask2former" and params["patch_size"] == 8  # the two experiments, in turn
    for out in runs:  # every fine-tuning of the study, and what reads them
        assert "Ran experiment(s)" in out
        assert set(re.findall(r"Running stage '([^']+)'", out)) >= {
            f"finetune@{m}-{s}-0" for m in MODELS for s in ("default", "linear_probing")} | {"rank", "report"}


def test_metrics_diff_report_and_plots_diff_against_main(reviewed):
    diff = output(reviewed, "dvc metrics diff main --md")
    assert diff.startswith("| Path") and len(diff) < 60_000
    assert re.search(r"\| metrics/ranking\.json +\| models\.\w+\.default\.miou ", diff), diff
    report = output(reviewed, "python -m pipeline.tools.report --base main")
    assert "# Study results against `main`" in report and "## What moved beyond the noise" in report
    page = (reviewed.root / "plots_html" / "index.html").read_text()
    assert "vegaEmbed('#" in page and "cdn.jsdelivr" not in page
    [targets] = inline(RESULTS, "dvc metrics diff main --targets")
    assert "metrics/finetune/random-default-0.json" in sh(reviewed, targets)


def test_the_documented_exp_show_selections_keep_what_they_say(reviewed):
    shown = output(reviewed, "dvc exp show --drop")
    assert "Experiment" in shown and all(name in shown for name in reviewed.sweep)
    [line] = [line for line in reviewed.review if line.startswith("dvc exp show --drop")]
    keep = shlex.split(line, comments=True)[-1]
    assert set(exp_show_header(reviewed, keep)) >= {"Experiment", "Created", "settings.linear_probing.tau",
                                                   "decoder", "patch_size"}
    others = re.findall(r"`--keep '([^']+)'`", section(RESULTS))
    assert len(others) == 2
    for other in others:
        header = exp_show_header(reviewed, other)
        assert header[0] == "Experiment" and len(header) > 1
        assert all(re.search(other, column) for column in header)
    # the queue section: each single-model experiment's own mIoU, side by side
    rows = list(csv.DictReader(io.StringIO(sh(reviewed, "dvc exp show --drop '.*' --keep "
                                                          "'Experiment|models\\..*\\.default\\.miou$' --csv"))))
    for model, name in zip(MODELS, reviewed.sweep):
        [row] = [r for r in rows if r["Experiment"] == name]
        assert row[f"models.{model}.default.miou"] and not row[f"models.{MODELS[1 - MODELS.index(model)]}.default.miou"]
    assert "Experiment|models\\..*\\.default\\.miou$" in section(GPUS)


def test_the_paper_block_switches_to_the_paper_study(tmp_path, repo_params_raw):
    env = dvc_repo(tmp_path, yaml.safe_dump(repo_params_raw, sort_keys=False))
    shutil.copy(REPO / "params-paper.yaml", tmp_path)
    s = SimpleNamespace(root=tmp_path, env=env)
    lines = [line.split("#")[0].strip() for line in commands(PAPER)]
    assert "cp params-paper.yaml params.yaml" in lines and "dvc repro" in lines
    sh(s, "cp params-paper.yaml params.yaml")
    params = load_params(tmp_path / "params.yaml")
    runs = len(params.models) * len(params.settings) * len(params.seeds)
    assert f"({runs} finetune runs, " in sh(s, "python -m pipeline.stages.validate")  # make repro's first step
    dag = sh(s, "dvc dag --dot")
    nodes = set(re.findall(r'^"([^"]+)";$', dag, re.M))
    edges = set(re.findall(r'^"([^"]+)" -> "([^"]+)";$', dag, re.M))
    finetunes = {n for n in nodes if n.startswith("finetune@")}
    assert len(finetunes) == runs == 240  # 10 models x 8 settings x 3 seeds: the README's GPU-hours table
    assert len([n for n in nodes if n.startswith("download@")]) == len(params.downloads) > 0
    # the README's order: download@* -> prepare@* -> pretrain@* -> finetune@* -> rank
    assert {("download@ade20k", "prepare@ade20k"), ("prepare@ade20k", "finetune@dinov2-default-0"),
            ("pretrain@dinov2-base", "finetune@dinov2-default-0")} <= edges
    assert all((run, "rank") in edges for run in finetunes)


def readme_exp_runs() -> list[list[str]]:
    """Every `dvc exp run` of the README with `-S`, in a bash block or inline, and every SLURM job's (its arguments
    go to `dvc exp run`), as argument lists."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        found += [line for line in block.splitlines() if "dvc exp run" in line or "vfm_job.sh -S" in line]
    found += re.findall(r"`((?:\w+=\S+ )*dvc exp run [^`\n]*)`", README)
    runs = [shlex.split(line, comments=True) for line in found if "…" not in line]
    return [args for args in runs if "-S" in args]


def test_every_exp_run_override_of_the_readme_gives_valid_params(tmp_path):
    studies = sorted(p.name for p in REPO.glob("params*.yaml"))
    runs = readme_exp_runs()
    assert len(runs) >= 8
    for args in runs:
        overrides = [args[i + 1] for i, arg in enumerate(args) if arg == "-S"]
        keys = [override.split("=", 1)[0] for override in overrides]
        assert len(keys) == len(set(keys)), f"{shlex.join(args)}: a repeated -S key is not a sweep, the last one wins"
        sweeps = get_hydra_sweeps({"params.yaml": overrides})
        if "--queue" in args:
            assert len(sweeps) > 1, f"{shlex.join(args)} queues one experiment"
        for sweep in sweeps:
            errors = []
            for name in studies:
                shutil.copy(REPO / name, tmp_path / name)
                try:
                    apply_overrides(tmp_path / name, sweep["params.yaml"])
                    load_params(tmp_path / name)
                    break
                except Exception as err:  # PipelineError, or DVC's InvalidArgumentError: a key the file lacks
                    errors.append(f"{name}: {err} {err.__cause__ or ''}")
            else:
                pytest.fail(f"{shlex.join(args)}, experiment {sweep['params.yaml']}: no study file takes it:\n"
                            + "\n".join(errors))


def test_the_broken_recipes_are_gone():
    assert not re.search(r"-S '(\w+)=[^']*' -S '\1=", README)  # `-S 'models=[a]' -S 'models=[b]'`: one experiment
    assert "models=[clip]" not in README and "vfm-%j" not in README
    assert os.access(REPO / "scripts/slurm/vfm_job.sh", os.X_OK)
