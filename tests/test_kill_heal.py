"""Kills, typos and damaged files leave a workspace that `dvc repro` heals.

A tiny study (one model, setting, seed, tower and method; a few steps) runs once in a throwaway DVC repository,
timing each stage. Then each stage kind is re-run (`dvc repro -f -s <stage>`) and its process group (dvc and the
stage command) is SIGKILLed at KILLS points drawn from a seeded RNG, one in each KILLS-th of the stage's measured
duration. After each kill `dvc repro` must heal the workspace: `dvc status` clean, every metric equal to the unkilled
run's (timing keys aside), and no stage re-run but the killed one (plus, after a fine-tuning, those that read its
training time): a leftover inside a folder other stages depend on would re-run them.
The same repository then takes a typo and an unknown id in params (nothing may change) and a damaged weights file
and shard (one-line errors; the DVC cache stays intact, so `dvc repro` restores them).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.dvc_repo import DVC, dvc_repo, run

pytestmark = pytest.mark.e2e

KILLS = 3
RNG_SEED = 18
KILLED = {  # stage kind -> (its stage in the tiny study, the other stages a heal may re-run)
    "prepare": ("prepare@ade20k", set()),
    "pretrain": ("pretrain@random-base", set()),
    "finetune": ("finetune@random-default-0", {"rank", "figures", "report"}),  # the run's time is in its metrics
    "concepts": ("concepts", set()),
    "align": ("align@random-simzss", set()),
}
TIMING_KEY = re.compile(r"seconds|per_second|time")
UP_TO_DATE = "Data and pipelines are up to date."
WEIGHTS = "models/pretrain/random/base/encoder.safetensors"
SHARD = "data/shards/ade20k/train-000000.tar"


def tiny(params: dict) -> dict:
    """The smallest study that runs every stage kind: one of everything, three optimizer steps."""
    params.update(models=["random"], settings=["default"], seeds=[0], datasets=["ade20k"], sizes=["base"],
                  towers=["random"], encoders=["random"], methods=["simzss"])
    params["generate"]["counts"] = {"ade20k": {"train": 8, "val": 2}, "coco_captions": {"train": 8}}
    params["data_cfg"] = {"ade20k": {"crop": 32, "steps": 3}}
    params["pretrain"].update(dataset="ade20k", steps=3, batch_size=4)
    params["finetune"].update(batch_size=4, micro_batch_size=2, log_every=1)
    params["checkpoint"]["every"] = 1  # a kill mid-training resumes from a checkpoint
    for cfg in params["model_cfg"].values():
        for size in ("base", "large"):
            cfg[size]["timm_kwargs"].update(img_size=32, embed_dim=32, depth=2, num_heads=2)
    params["concepts"].update(image_size=32)
    params["text_tower"].update(width=16, layers=1, heads=2)
    # feature_cache none: a resumed alignment starts with a cold memory cache, so its tower features are computed
    # in other batches than the uninterrupted run's, and CPU GEMMs differ in the last bits with the batch
    params["align"].update(image_size=32, batch_size=8, micro_batch_size=4, samples_per_epoch=16, epochs=1,
                           log_every=1, feature_cache="none")
    params["zeroshot"].update(benchmarks=["ade20k"], background_threshold={}, short_side=32, long_side=64,
                              window=32, stride=16)
    params["rank"]["resamples"] = 10
    return params


def metrics(root: Path) -> dict:
    """Every metric of the study, timing keys left out."""
    found = {}
    for path in sorted((root / "metrics").rglob("*.json")):
        stack = [(path.relative_to(root).as_posix(), json.loads(path.read_text()))]
        while stack:
            key, value = stack.pop()
            if isinstance(value, dict):
                stack += [(f"{key}:{k}", v) for k, v in value.items() if not TIMING_KEY.search(k)]
            else:
                found[key] = value
    return found


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file of the workspace and the DVC cache (git's and DVC's own state aside)."""
    skip = (".git/", ".dvc/tmp/", ".site_cache/", ".dvc_global/")
    return {rel: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file() and not (rel := p.relative_to(root).as_posix()).startswith(skip)
            and "__pycache__" not in rel}


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def timed_repro(root: Path, env: dict) -> dict[str, float]:
    """`dvc repro` of the whole study; each stage's duration, from its `Running stage` line to the next."""
    proc = subprocess.Popen(DVC + ["repro"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    starts, lines = [], []
    for line in proc.stdout:
        lines.append(line)
        if match := re.match(r"Running stage '([^']+)'", line):
            starts.append((match.group(1), time.monotonic()))
    assert proc.wait() == 0, "".join(lines[-60:])
    ends = [t for _, t in starts[1:]] + [time.monotonic()]
    return {stage: end - start for (stage, start), end in zip(starts, ends)}


def kill_during(root: Path, env: dict, stage: str, delay: float) -> None:
    """Force-run `stage` alone and SIGKILL its process group `delay` seconds after DVC starts running it."""
    log = root.parent / f"{root.name}-killed.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(DVC + ["repro", "-f", "-s", stage], cwd=root, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    while "Running stage" not in log.read_text() and proc.poll() is None:
        time.sleep(0.02)
    try:
        proc.wait(delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def study(tmp_path_factory, repo_params_raw):
    root = tmp_path_factory.mktemp("heal")
    env = dvc_repo(root, yaml.safe_dump(tiny(copy.deepcopy(repo_params_raw)), sort_keys=False))
    durations = timed_repro(root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "results"], root, env)
    return root, env, durations, metrics(root)


@pytest.mark.parametrize("kind", list(KILLED))
def test_a_killed_stage_is_healed_by_dvc_repro(study, kind):
    root, env, durations, expected = study
    stage, also = KILLED[kind]
    rng = random.Random(f"{RNG_SEED}-{kind}")
    for i in range(KILLS):
        delay = rng.uniform(i, i + 1) * durations[stage] / KILLS
        kill_during(root, env, stage, delay)
        healed = run(DVC + ["repro"], root, env)
        assert stages_run(healed) <= {stage} | also, f"killed at {delay:.2f}s, re-ran:\n{healed}"
        assert UP_TO_DATE in run(DVC + ["status"], root, env), f"killed at {delay:.2f}s"
        assert metrics(root) == expected, f"killed at {delay:.2f}s"


def edit_params(root: Path, edit) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.parametrize("command, edit, message", [
    (DVC + ["repro"], lambda p: p.update(decodr=p.pop("decoder")),
     r"error: unknown top-level key\(s\) \['decodr'\] \(did you mean 'decoder'\?\); allowed: \["),
    (DVC + ["exp", "run", "-S", "models=[random,nonexistent]"], None,
     r"error: models\[1\]: unknown value 'nonexistent'; allowed: \[.*\], the ids of model_cfg \(a new id needs its "
     r"model_cfg\.nonexistent entry\)"),
    (DVC + ["repro"], lambda p: p.update(modles=p.pop("models")), None),  # DVC fails first: dvc.yaml reads models
], ids=["typo", "unknown-model-in-exp-run", "typo-of-an-interpolated-key"])
def test_bad_params_stop_dvc_before_any_file_changes(study, command, edit, message):
    root, env, *_ = study
    if edit is not None:
        edit_params(root, edit)
    before = snapshot(root)
    output = run(command, root, env, ok=False)
    try:
        if message:
            assert re.search(message, output), output
        else:  # the validator, which `make repro` runs before `dvc repro`, names the typo
            check = subprocess.run([sys.executable, "-m", "pipeline.stages.validate"], cwd=root, env=env,
                                   capture_output=True, text=True)
            assert check.returncode == 1, check.stderr
            assert "unknown top-level key(s) ['modles'] (did you mean 'models'?)" in check.stderr
        after = snapshot(root)
        assert {k: v for k, v in after.items() if k != "params.yaml"} == \
            {k: v for k, v in before.items() if k != "params.yaml"}
        assert not (root / "models/pretrain/nonexistent").exists()
    finally:
        run(["git", "checkout", "-q", "params.yaml"], root, env)
    assert UP_TO_DATE in run(DVC + ["status"], root, env)


@pytest.mark.parametrize("path, stage, reader, message", [
    (WEIGHTS, "pretrain@random-base", ["finetune", "--model", "random", "--setting", "default", "--seed", "0"],
     f"error: cannot read checkpoint {WEIGHTS} (truncated or not a weight file?): "),
    (SHARD, "prepare@ade20k", ["finetune", "--model", "random", "--setting", "default", "--seed", "0"],
     f"error: {SHARD}: sha256 differs from the one data/shards/ade20k/manifest.json recorded (truncated or modified "
     "since prepare@ade20k wrote it); re-run: dvc repro -f -s prepare@ade20k"),
], ids=["weights", "shard"])
def test_a_truncated_output_stops_its_readers_in_one_line_and_dvc_repro_restores_it(study, path, stage, reader,
                                                                                    message):
    """The cache is a copy (.dvc/config), so truncating the workspace file leaves the cache object intact."""
    root, env, *_ = study
    cache = {p: p.read_bytes() for p in (root / ".dvc" / "cache").rglob("*") if p.is_file()}
    intact = (root / path).read_bytes()
    os.truncate(root / path, len(intact) // 2)
    assert {p: p.read_bytes() for p in cache} == cache
    assert f"{stage}:" in run(DVC + ["status"], root, env)
    read = subprocess.run([sys.executable, "-m", f"pipeline.stages.{reader[0]}", *reader[1:]], cwd=root, env=env,
                          capture_output=True, text=True)
    assert read.returncode == 1 and read.stderr.startswith(message) and read.stderr.count("\n") == 1, read.stderr
    assert f"re-run: dvc repro -f -s {stage}" in read.stderr
    run(DVC + ["repro"], root, env)
    assert (root / path).read_bytes() == intact
    assert UP_TO_DATE in run(DVC + ["status"], root, env)
