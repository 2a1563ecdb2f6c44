"""The real-data path through DVC: download@gta5 -> prepare@gta5 from a local mirror of the official files."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.datasets.miniature import encode_png, write_zip
from pipeline.datasets.specs import cityscapes_palette
from tests.conftest import REPO
from tests.loopback_http import Route, server  # noqa: F401  (server is a fixture)

pytestmark = pytest.mark.e2e

PARTS = range(1, 11)


def gta5_parts(tmp_path: Path) -> dict[str, bytes]:
    """The 20 official GTA V archives, one image each: labelIds PNGs in the Cityscapes palette."""
    rng, files = np.random.default_rng(0), {}
    for part in PARTS:
        image = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        label = rng.choice(np.array([7, 8, 26, 0], np.uint8), (6, 8))  # road, sidewalk, car, unlabeled
        for kind, inner, data in (("images", "images", encode_png(image)),
                                  ("labels", "labels", encode_png(label, cityscapes_palette()))):
            path = tmp_path / f"{part:02d}_{kind}.zip"
            write_zip(path, {f"{inner}/{part:05d}.png": data})
            files[path.name] = path.read_bytes()
    return files


def run(cmd, cwd, env, ok=True):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert (result.returncode == 0) == ok, f"{' '.join(cmd)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def test_real_data_switch_downloads_resumes_after_a_failed_run_and_prepares(server, tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("pipeline", "dvc.yaml", ".dvcignore", ".gitignore"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, root / name)
    files = gta5_parts(tmp_path)
    server.routes.update({f"/gta/{name}": Route(body=data) for name, data in files.items()})
    server.routes["/gta/05_labels.zip"].cut_after = 40  # the first request for it dies half-way
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(datasets=["gta5", "cityscapes"], downloads=["gta5"], data_root="data/raw",
                  settings=["default"], dataset="gta5", eval_dataset="cityscapes")
    params["download"].update(retries=0, mirrors={name: server.url(f"/gta/{name}") for name in files})
    params["pretrain"]["dataset"] = "gta5"
    params["data_cfg"] = {"gta5": {"crop": 128, "steps": 1}, "cityscapes": {"crop": 128, "steps": 1}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(tmp_path / "site"),
               DVC_GLOBAL_CONFIG_DIR=str(tmp_path / "global"), no_proxy="127.0.0.1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in (["git", "init", "-q"], dvc + ["init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
        run(cmd, root, env)

    failed = run(dvc + ["repro", "prepare@gta5"], root, env, ok=False)
    assert "05_labels.zip" in failed and "after 1 attempt;" in failed
    assert (root / "data/downloads/05_labels.zip.part").stat().st_size == 40
    assert not (root / "data/raw/gta5").exists()

    run(dvc + ["repro", "prepare@gta5"], root, env)
    assert ("/gta/05_labels.zip", "bytes=40-") in server.log
    raw = sorted(p.name for p in (root / "data/raw/gta5").iterdir())
    assert raw == sorted(files)
    manifest = json.loads((root / "data/shards/gta5/manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] == len(PARTS)
    requests = len(server.log)
    assert "didn't change" in run(dvc + ["repro", "prepare@gta5"], root, env)
    assert len(server.log) == requests
