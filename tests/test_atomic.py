"""Atomic writes keep their temporaries out of every output folder; stale ones are swept; unwritable outputs fail
before any compute."""
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.atomic import TEMP, atomic_path, check_writable, sweep_temporaries, write_text
from pipeline.errors import PipelineError


def test_a_workspace_output_is_written_through_the_workspace_temp_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with atomic_path("data/shards/gta5") as tmp:
        tmp.mkdir()
        (tmp / "train-000000.tar").write_bytes(b"partial")
        assert tmp.parent.parent == TEMP and tmp.parent.name.startswith(f"{os.getpid()}@{socket.gethostname()}.")
        assert [p.name for p in Path("data/shards").iterdir()] == []  # nothing beside the output while it is written
    assert (tmp_path / "data/shards/gta5/train-000000.tar").read_bytes() == b"partial"
    assert list(TEMP.iterdir()) == []


def test_a_path_outside_the_workspace_gets_its_temporary_beside_it(tmp_path, monkeypatch):
    workspace, elsewhere = tmp_path / "workspace", tmp_path / "elsewhere"
    workspace.mkdir()
    monkeypatch.chdir(workspace)
    with atomic_path(elsewhere / "out.json") as tmp:
        assert tmp.parent.parent == elsewhere
        tmp.write_text("{}")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["out.json"] and not TEMP.exists()


def test_a_kill_leaves_the_temporary_in_the_temp_folder_and_the_next_stage_sweeps_it(tmp_path):
    """A process killed while writing leaves its temporary in `.tmp/`; a sweep removes it, but not a live one's."""
    code = ("import os, signal; from pipeline.atomic import atomic_path\n"
            "with atomic_path('data/shards/gta5') as tmp:\n"
            "    tmp.mkdir(); (tmp / 'a.tar').write_bytes(b'x'); os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "data/shards/gta5").exists() and list((tmp_path / "data/shards").iterdir()) == []
    leftover = next((tmp_path / TEMP).iterdir())
    dead_pid = leftover.name.split("@")[0]
    live = tmp_path / TEMP / f"{os.getpid()}@{socket.gethostname()}.abc"  # this process
    other_host = tmp_path / TEMP / f"{dead_pid}@another-host.abc"         # its processes are not visible here
    for folder in (live, other_host):
        folder.mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        sweep_temporaries()
    finally:
        os.chdir(cwd)
    assert not leftover.exists() and live.exists() and other_host.exists()


def test_check_writable_names_the_output_and_the_folder_in_the_way(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_writable(files=["metrics/finetune/run.json"], folders=["models/finetune/run", "checkpoints"])
    Path("checkpoints").write_text("")
    with pytest.raises(PipelineError, match=r"^cannot write checkpoints: checkpoints is a file, not a folder"):
        check_writable(folders=["checkpoints"])
    with pytest.raises(PipelineError, match=r"^cannot write checkpoints/finetune/x\.pt: checkpoints is a file"):
        check_writable(files=["checkpoints/finetune/x.pt"])
    Path("metrics").mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != Path("metrics") and real(path, mode))
    with pytest.raises(PipelineError, match=r"^cannot write metrics/finetune/run\.json: folder metrics is not "
                                            r"writable; make it writable \(chmod u\+w metrics\) and re-run$"):
        check_writable(files=["metrics/finetune/run.json"])


def test_write_text_replaces_an_earlier_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_text("plots/report.md", "old")
    write_text("plots/report.md", "new")
    assert Path("plots/report.md").read_text() == "new" and sorted(os.listdir("plots")) == ["report.md"]
