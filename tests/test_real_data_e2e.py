"""The real-data path through DVC: download@gta5 -> prepare@gta5 from a local mirror of the official files."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.datasets.miniature.formats import encode_png, write_zip
from pipeline.datasets.specs import cityscapes_palette
from tests.dvc_repo import DVC, dvc_repo, run
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


def test_real_data_switch_downloads_resumes_after_a_failed_run_and_prepares(server, tmp_path, raw_params):
    root = tmp_path / "repo"
    root.mkdir()
    files = gta5_parts(tmp_path)
    server.routes.update({f"/gta/{name}": Route(body=data) for name, data in files.items()})
    server.routes["/gta/05_labels.zip"].cut_after = 40  # the first request for it dies half-way
    params = raw_params  # the committed params.yaml (tests/conftest.py)
    params.update(datasets=["gta5", "cityscapes"], downloads=["gta5"], data_root="data/raw",
                  settings=["default"], dataset="gta5", eval_dataset="cityscapes")
    params["download"].update(retries=0, mirrors={name: server.url(f"/gta/{name}") for name in files})
    params["pretrain"]["dataset"] = "gta5"
    params["zeroshot"].update(benchmarks=["cityscapes"], background_threshold={})
    params["data_cfg"] = {"gta5": {"crop": 128, "steps": 1}, "cityscapes": {"crop": 128, "steps": 1}}
    env = dvc_repo(root, yaml.safe_dump(params, sort_keys=False))

    failed = run(DVC + ["repro", "prepare@gta5"], root, env, ok=False)
    assert "05_labels.zip" in failed and "after 1 attempt;" in failed
    assert (root / "data/downloads/05_labels.zip.part").stat().st_size == 40
    assert not (root / "data/raw/gta5").exists()

    run(DVC + ["repro", "prepare@gta5"], root, env)
    assert ("/gta/05_labels.zip", "bytes=40-") in server.log
    raw = sorted(p.name for p in (root / "data/raw/gta5").iterdir())
    assert raw == sorted(files)
    manifest = json.loads((root / "data/shards/gta5/manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] == len(PARTS)
    requests = len(server.log)
    assert "didn't change" in run(DVC + ["repro", "prepare@gta5"], root, env)
    assert len(server.log) == requests
