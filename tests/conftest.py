import copy
import subprocess
import warnings
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def committed_text(name: str, repo: Path = REPO) -> str | None:
    """`name` (relative to `repo`) as committed at git HEAD; None outside a git checkout or when HEAD lacks it."""
    try:
        result = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:./{name}"], capture_output=True, text=True)
    except OSError:  # no git
        return None
    return result.stdout if result.returncode == 0 else None


def study_params_raw(repo: Path = REPO) -> dict:
    """The study's params.yaml as committed at git HEAD, not as the workspace holds it.

    A user's edit, or an interrupted `dvc exp run -S decoder=mask2former` (which leaves the experiment's params in
    the workspace), must not change what the tests run. Outside a git checkout (an unpacked archive) the file is
    read. One exception, with a warning: when the committed file no longer loads with the working tree's code (a
    params schema change that is not committed yet), the working tree's file, which goes with that code.
    """
    raw, note = _study_params(repo)
    if note and note.startswith("the working tree's"):
        warnings.warn(f"tests: {note}", stacklevel=2)
    return raw


def _study_params(repo: Path) -> tuple[dict, str | None]:
    """(the params the tests use, a note when the workspace's params.yaml differs from the committed one)."""
    from pipeline.config import parse_params
    from pipeline.errors import ConfigError

    workspace = yaml.safe_load((repo / "params.yaml").read_text())
    text = committed_text("params.yaml", repo)
    if text is None:
        return workspace, None
    committed = yaml.safe_load(text)
    if committed == workspace:
        return committed, None
    try:
        parse_params(copy.deepcopy(committed))
    except ConfigError as err:
        return workspace, ("the working tree's params.yaml is used: the committed one does not load with the working "
                           f"tree's code ({err})")
    return committed, "params.yaml differs from git HEAD: the committed one is used (tests/conftest.py)"


def pytest_report_header(config) -> str | None:
    return _study_params(REPO)[1]


@pytest.fixture(scope="session")
def repo_params_raw() -> dict:
    """The committed params.yaml (see `study_params_raw`); do not mutate, use `raw_params`."""
    return study_params_raw()


@pytest.fixture
def raw_params(repo_params_raw) -> dict:
    """A fresh, mutable copy of the repository's committed params.yaml."""
    return copy.deepcopy(repo_params_raw)
