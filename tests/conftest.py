import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_params_raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture
def raw_params(repo_params_raw) -> dict:
    """A fresh, mutable copy of the repository's params.yaml."""
    return copy.deepcopy(repo_params_raw)
