"""scripts/slurm/vfm_job.sh, the README's SLURM job, run without SLURM: a pre-empted job that SLURM requeues reuses
its working copy and finishes.

The job runs as SLURM would start it (SLURM_JOB_ID and friends set, the arguments of `sbatch`), three times with the
same job id: killed (SIGKILL of its process group) in the middle of `dvc exp run`, requeued, requeued again after it
finished. git is real (a local repository stands in for the project's remote); `make` and `dvc` are stub executables
that log their arguments, working folder and $LAUNCH, and `dvc exp list`/`exp run` keep the experiment names in a
file as DVC keeps them in refs.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "slurm" / "vfm_job.sh"
JOB_ID = "4242"
ARGS = ["-S", "models=[dinov2]"]

STUBS = {
    "make": """#!/bin/bash
echo "make $* @ $PWD" >> "$STUB_LOG"
""",
    "dvc": """#!/bin/bash
echo "dvc $* @ $PWD LAUNCH=${LAUNCH:-}" >> "$STUB_LOG"
case "$1 $2" in
  "exp list") cat "$STUB_STATE/experiments" 2>/dev/null || true ;;
  "exp run")
    touch "$PWD/stage-done-$(date +%s%N)"      # what the run leaves in the working copy (dvc.lock, outputs)
    if [ -e "$STUB_STATE/pre-empt" ]; then      # SLURM pre-empts the job: the whole process group dies
      rm "$STUB_STATE/pre-empt"
      kill -KILL 0
    fi
    while [ $# -gt 0 ]; do [ "$1" = -n ] && echo "$2" >> "$STUB_STATE/experiments"; shift; done ;;
esac
""",
}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, name: str) -> str:
    (repo / name).write_text(name)
    git("add", name, cwd=repo)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", name, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


@pytest.fixture
def cluster(tmp_path):
    """A remote with one commit on main, stub executables, and the environment SLURM gives the job."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git("init", "-q", cwd=origin)
    git("symbolic-ref", "HEAD", "refs/heads/main", cwd=origin)
    first = commit(origin, "study")
    stubs, state = tmp_path / "stubs", tmp_path / "state"
    stubs.mkdir()
    state.mkdir()
    for name, text in STUBS.items():
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    scratch = tmp_path / "scratch"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "GIT_"))}
    env.update(PATH=f"{stubs}{os.pathsep}{env['PATH']}", STUB_LOG=str(tmp_path / "calls.log"), STUB_STATE=str(state),
               SLURM_JOB_ID=JOB_ID, SLURM_SUBMIT_DIR=str(tmp_path), SLURM_GPUS_ON_NODE="4", SCRATCH=str(scratch),
               REPO=str(origin), DVC_CACHE=str(tmp_path / "dvc-cache"), USER="someone")
    return dict(origin=origin, first=first, state=state, env=env, log=tmp_path / "calls.log",
                work=scratch / f"vfm-{JOB_ID}")


def start(cluster, restart: int) -> subprocess.CompletedProcess:
    """One start of the job, as SLURM runs the batch script (its own process group, so a kill takes all of it)."""
    env = dict(cluster["env"], SLURM_RESTART_COUNT=str(restart))
    return subprocess.run(["bash", str(SCRIPT), *ARGS], cwd=cluster["env"]["SLURM_SUBMIT_DIR"], env=env,
                          capture_output=True, text=True, timeout=120, start_new_session=True)


def calls(cluster) -> list[str]:
    return cluster["log"].read_text().splitlines() if cluster["log"].exists() else []


def test_a_requeued_job_reuses_its_working_copy_and_finishes(cluster):
    work = cluster["work"]
    leftover = Path(f"{work}.clone")  # a start killed during `git clone` leaves this
    leftover.mkdir(parents=True)
    (leftover / "half").write_text("")
    (cluster["state"] / "pre-empt").write_text("")

    killed = start(cluster, restart=0)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert not leftover.exists() and (work / ".git").is_dir()
    assert git("rev-parse", "HEAD", cwd=work) == cluster["first"]
    first_calls = calls(cluster)
    exp_run = [c for c in first_calls if c.startswith("dvc exp run ")]
    checkpoints = Path(cluster["env"]["SCRATCH"]) / "checkpoints"
    assert exp_run == [f"dvc exp run --pull --allow-missing -n slurm-{JOB_ID} -S checkpoint.dir={checkpoints} "
                       f"-S models=[dinov2] @ {work} "
                       "LAUNCH=torchrun --standalone --nproc_per_node=4 --no-python"]
    assert f"dvc cache dir --local {cluster['env']['DVC_CACHE']} @ {work} LAUNCH=" in first_calls[1]
    assert any(c.startswith("dvc config --local cache.type hardlink,symlink,copy") for c in first_calls)
    assert first_calls[0] == f"make install @ {work}"
    progress = sorted(work.glob("stage-done-*"))
    git_dir = (work / ".git").stat().st_ino

    commit(cluster["origin"], "later")  # main moves on while the job waits in the queue
    requeued = start(cluster, restart=1)
    assert requeued.returncode == 0, requeued.stdout + requeued.stderr
    assert f"job {JOB_ID} start 2" in requeued.stdout and f"reusing {work}" in requeued.stdout
    assert (work / ".git").stat().st_ino == git_dir and set(progress) <= set(work.glob("stage-done-*"))
    assert git("rev-parse", "HEAD", cwd=work) == cluster["first"]  # the experiment finishes on its own commit
    second_calls = calls(cluster)[len(first_calls):]
    assert [c for c in second_calls if c.startswith("dvc exp run ")] == exp_run  # the same experiment, resumed
    assert second_calls[-1].startswith(f"dvc exp push origin slurm-{JOB_ID} @ {work}")

    again = start(cluster, restart=2)  # requeued once more after the run (killed during the push)
    assert again.returncode == 0, again.stdout + again.stderr
    third_calls = calls(cluster)[len(first_calls) + len(second_calls):]
    assert not [c for c in third_calls if c.startswith("dvc exp run ")]
    assert f"experiment slurm-{JOB_ID} finished before this start" in again.stdout
    assert third_calls[-1].startswith(f"dvc exp push origin slurm-{JOB_ID} @ {work}")


def test_the_job_header_requeues_appends_its_log_and_names_the_job_plainly():
    """SLURM expands %j in --output, not in --job-name; --open-mode=append keeps the log of every start."""
    header = dict(re.findall(r"^#SBATCH --([a-z-]+)(?:=(\S+))?", SCRIPT.read_text(), re.M))
    assert "requeue" in header and header["open-mode"] == "append"
    assert "%" not in header["job-name"] and "%j" in header["output"]
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    assert os.access(SCRIPT, os.X_OK)
    readme = (REPO / "README.md").read_text()
    assert "scripts/slurm/vfm_job.sh" in readme and "#SBATCH" not in readme  # the README points to the file


def test_outside_slurm_the_job_stops_before_doing_anything(cluster):
    env = {k: v for k, v in cluster["env"].items() if k != "SLURM_JOB_ID"}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "SLURM_JOB_ID" in result.stderr
    assert not calls(cluster) and not cluster["work"].exists()


ARRAY_SCRIPT = REPO / "scripts" / "slurm" / "concepts_array.sh"


def test_the_concepts_array_task_writes_its_share_of_the_shards(tmp_path):
    """Each array task runs the concepts stage on its range (`--task I/N`) with the working copy's environment."""
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(f'#!/bin/bash\necho "python $* @ $PWD" >> {tmp_path}/calls.log\n')
    (venv / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_COUNT="8", SLURM_SUBMIT_DIR=str(tmp_path))
    done = subprocess.run(["bash", str(ARRAY_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "calls.log").read_text() == f"python -m pipeline.stages.concepts --task 3/8 @ {tmp_path}\n"
    del env["SLURM_ARRAY_TASK_ID"]
    outside = subprocess.run(["bash", str(ARRAY_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert outside.returncode != 0 and "SLURM_ARRAY_TASK_ID" in outside.stderr
    header = dict(re.findall(r"^#SBATCH --([a-z-]+)(?:=(\S+))?", ARRAY_SCRIPT.read_text(), re.M))
    assert "requeue" in header and "%a" in header["output"] and os.access(ARRAY_SCRIPT, os.X_OK)
