"""download@<dataset>: files fetched through the download cache and linked into the raw folder."""
from __future__ import annotations

import argparse
import hashlib

import pytest
import yaml

from pipeline.datasets.fetch import fetch
from pipeline import paths
from pipeline.config import load_params
from pipeline.datasets.sources import RemoteFile, Source
from pipeline.errors import DataError, DownloadError
from pipeline.stages import download as download_stage
from pipeline.stages.common import main
from tests.conftest import REPO
from tests.loopback_http import BODY, Route, server  # noqa: F401  (server is a fixture)

OTHER = b"labels" * 100


def md5(data: bytes) -> str:
    return f"md5:{hashlib.md5(data).hexdigest()}"


def source(server, *, manual=None) -> Source:
    server.routes.update({"/d/images.zip": Route(body=BODY), "/d/labels.zip": Route(body=OTHER)})
    files = (RemoteFile("images.zip", None if manual else server.url("/d/images.zip"), len(BODY), md5(BODY)),
             RemoteFile("labels.zip", None if manual else server.url("/d/labels.zip"), None, md5(OTHER)))
    return Source("toy", files, "https://example.org", "research only", "1 MB", manual=manual)


def test_files_are_downloaded_once_and_hard_linked(server, tmp_path):
    cache, out = tmp_path / "downloads", tmp_path / "raw" / "toy"
    files = fetch(source(server), out, cache, progress=False)
    assert [f.read_bytes() for f in files] == [BODY, OTHER]
    assert sorted(p.name for p in out.iterdir()) == ["images.zip", "labels.zip"]
    assert (out / "images.zip").stat().st_ino == (cache / "images.zip").stat().st_ino
    requests = len(server.log)
    fetch(source(server), out, cache, progress=False)  # a re-run verifies the cache, fetches nothing
    assert len(server.log) == requests == 2


def test_a_mirror_replaces_the_official_url(server, tmp_path):
    server.routes["/mirror/labels.zip"] = Route(body=OTHER)
    fetch(source(server), tmp_path / "out", tmp_path / "cache", progress=False,
          mirrors={"labels.zip": server.url("/mirror/labels.zip")})
    assert ("/mirror/labels.zip", None) in server.log and ("/d/labels.zip", None) not in server.log


def test_a_failed_download_leaves_the_earlier_raw_folder_intact(server, tmp_path):
    out = tmp_path / "raw" / "toy"
    out.mkdir(parents=True)
    (out / "old.zip").write_bytes(b"old")
    toy = source(server)
    server.routes["/d/labels.zip"] = Route(status=404)
    with pytest.raises(DownloadError, match="404"):
        fetch(toy, out, tmp_path / "cache", progress=False)
    assert [p.name for p in out.iterdir()] == ["old.zip"]


def test_manual_files_missing_give_the_instructions(server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "images.zip").write_bytes(BODY)
    with pytest.raises(DataError) as err:
        fetch(source(server, manual="Log in at https://example.org/login."), tmp_path / "out", cache)
    message = str(err.value)
    assert "labels.zip not found" in message and "images.zip" not in message.split("not found")[0]
    assert "https://example.org/login" in message and str(cache) in message
    assert "dvc repro download@toy" in message and not (tmp_path / "out").exists()


def test_manual_files_placed_by_hand_are_verified_then_linked(server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "images.zip").write_bytes(BODY)
    (cache / "labels.zip").write_bytes(OTHER[:-1] + b"!")
    toy = source(server, manual="Log in.")
    with pytest.raises(DownloadError, match="labels.zip.*md5"):
        fetch(toy, tmp_path / "out", cache)
    (cache / "labels.zip").write_bytes(OTHER)
    fetch(toy, tmp_path / "out", cache)
    assert (tmp_path / "out" / "labels.zip").read_bytes() == OTHER and server.log == []


def test_missing_cityscapes_archives_stop_the_stage_with_the_manual_download_message(
        tmp_path, raw_params, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw_params["download"]["cache_dir"] = str(tmp_path / "downloads")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    with pytest.raises(SystemExit) as exit_info:
        main(download_stage.run, argparse.Namespace(params="params.yaml", dataset="cityscapes"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    for name in ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip", "cityscapes-dataset.com",
                 str(tmp_path / "downloads"), "dvc repro download@cityscapes"):
        assert name in err
    assert not (tmp_path / "data").exists()


def test_the_paper_study_downloads_every_dataset_it_prepares():
    params = load_params(REPO / "params-paper.yaml")
    assert params.data_root == str(paths.RAW)
    assert set(params.datasets) <= set(params.downloads)
