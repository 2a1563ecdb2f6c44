"""A throwaway git + DVC repository holding a copy of the pipeline, for the end-to-end tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PIPELINE_FILES = ["pipeline", "dvc.yaml", "plots/templates", ".dvcignore", ".gitignore"]
DVC = [sys.executable, "-m", "dvc"]


def run(cmd, cwd, env, ok: bool = True) -> str:
    """Run `cmd` and assert it succeeded; its stdout. With ok=False assert it failed; stdout + stderr."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert (result.returncode == 0) == ok, f"{' '.join(cmd)}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout if ok else result.stdout + result.stderr


def dvc_repo(root: Path, params_text: str) -> dict:
    """Copy the pipeline into `root` with `params_text` as params.yaml, commit it; return the env for dvc."""
    for name in PIPELINE_FILES:
        src, dst = REPO / name, root / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    (root / "params.yaml").write_text(params_text)
    env = dict(os.environ, DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(root / ".site_cache"),
               DVC_GLOBAL_CONFIG_DIR=str(root / ".dvc_global"), no_proxy="127.0.0.1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for cmd in (["git", "init", "-q"], DVC + ["init", "-q"]):
        run(cmd, root, env)
    with open(root / ".git" / "info" / "exclude", "a") as exclude:  # DVC's own state here, not the study's
        exclude.write(".site_cache/\n.dvc_global/\n")
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")  # the project's cache type and settings
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "study"]):
        run(cmd, root, env)
    return env
