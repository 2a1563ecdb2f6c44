"""Atomic writes: a file or folder appears complete or not at all, and the check that it can be written.

Everything is written to a temporary path first and then renamed into place, so an interrupted stage never
leaves an output that looks finished. The temporaries of outputs in the workspace (the working directory, where
every stage runs) live in its `.tmp/` folder, never beside the output: a killed stage's leftover inside a folder
that other stages depend on (`data/shards/.gta5.x.tmp/`) would change that folder's hash and re-run every stage
downstream. `.tmp/` is git- and dvc-ignored and on the workspace's filesystem, so the rename stays atomic; each
stage sweeps what dead processes left there when it starts (`sweep_temporaries`). A path outside the workspace,
or on another filesystem (a `data/` symlinked to another disk), gets its temporary beside it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import psutil

from pipeline.errors import PipelineError

TEMP = Path(".tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; rename it onto `path` on success.

    Works for files and folders: the caller creates whichever it needs at the
    yielded path. On error the temporary is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _in_workspace(path.parent):
        tmp = Path(tempfile.mkdtemp(prefix=f"{_owner()}.", dir=TEMP))
    else:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"nothing was written to the temporary path for {path}")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _in_workspace(folder: Path) -> bool:
    """Whether `folder` is under the working directory and on the filesystem of its `.tmp/` (created here)."""
    try:
        folder.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return False
    TEMP.mkdir(exist_ok=True)
    return TEMP.stat().st_dev == folder.stat().st_dev


def _owner() -> str:
    """`<pid>@<host>`: whose temporary it is, so that a sweep removes only those of dead processes."""
    return f"{os.getpid()}@{socket.gethostname()}"


def sweep_temporaries() -> None:
    """Remove the temporaries that dead processes of this host left in `.tmp/` (a killed stage's).

    Those of live processes (a stage running under torchrun, another stage started by hand) are kept, and so are
    another host's, whose processes this one cannot see.
    """
    if not TEMP.is_dir():
        return
    host = socket.gethostname()
    for entry in TEMP.iterdir():
        pid, _, entry_host = entry.name.rsplit(".", 1)[0].partition("@")
        if entry_host == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def check_writable(files: Iterable[str | os.PathLike] = (), folders: Iterable[str | os.PathLike] = ()) -> None:
    """Stop in one line, before any compute, if one of the output `files` or `folders` (outputs, checkpoint and
    plots folders) could not be written: otherwise a read-only folder fails a stage after hours of training.

    A file is written by a rename in its folder; a folder is written into, and replaced by a rename in its parent.
    Each of those folders, or the nearest existing folder above it, must be a folder this process may write to.
    The workspace's `.tmp/` is checked too.
    """
    needs = [(Path(f), Path(f).parent) for f in files] + [(TEMP, TEMP)]
    needs += [(Path(f), folder) for f in folders for folder in (Path(f), Path(f).parent)]
    for path, folder in needs:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise PipelineError(f"cannot write {path}: {folder} is a file, not a folder; move it away and re-run")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PipelineError(f"cannot write {path}: folder {folder} is not writable; make it writable "
                                f"(chmod u+w {folder}) and re-run")


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
