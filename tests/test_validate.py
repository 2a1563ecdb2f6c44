"""The validate stage: first in dvc.yaml, exactly its own code as deps, an output that never changes."""
import ast
import copy
from pathlib import Path

import pytest
import yaml

from pipeline.stages import validate
from tests.conftest import REPO


def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def imported_files(module: str) -> set[str]:
    """The project files (repository-relative) that importing `module` runs, transitively; empty __init__ aside."""
    found, todo = set(), [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        candidates = [REPO.joinpath(*parts).with_suffix(".py"), REPO.joinpath(*parts, "__init__.py")]
        path = next((p for p in candidates if p.is_file()), None)
        rel = path and path.relative_to(REPO).as_posix()
        if path is None or rel in found or not path.read_text().strip():
            continue
        found.add(rel)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names if alias.name.startswith("pipeline")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
                todo += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def test_validate_depends_on_exactly_its_code_and_the_whole_params_file():
    stage = dvc_stages()["validate"]
    assert stage["cmd"] == "python -m pipeline.stages.validate"
    assert set(stage["deps"]) == imported_files("pipeline.stages.validate")
    assert stage["params"] == [{"params.yaml": None}]
    assert stage["outs"] == [{validate.OUTPUT: {"cache": False, "persist": True}}]


def test_every_other_stage_runs_after_it():
    for name, stage in dvc_stages().items():
        if name != "validate":
            assert validate.OUTPUT in stage["deps"], name


def test_make_repro_validates_before_dvc_repro():
    recipe = (REPO / "Makefile").read_text().split("\nrepro:", 1)[1].split("\n\n", 1)[0]
    assert recipe.index("-m pipeline.stages.validate") < recipe.index("dvc repro")


def test_the_output_is_the_same_whatever_the_params(tmp_path, monkeypatch, raw_params, capsys):
    monkeypatch.chdir(tmp_path)
    outputs = []
    for edit in ({}, {"decoder": "mask2former"}, {"seeds": [0, 1, 2]}):
        params = {**copy.deepcopy(raw_params), **edit}
        Path("params.yaml").write_text(yaml.safe_dump(params))
        validate.main([])
        outputs.append(Path(validate.OUTPUT).read_bytes())
    assert outputs == [validate.CONTENT.encode()] * 3
    assert outputs[0] == (REPO / validate.OUTPUT).read_bytes()  # the committed file, as `dvc status` expects
    assert "params.yaml: valid" in capsys.readouterr().out


def test_bad_params_fail_in_one_line_and_leave_the_output_alone(tmp_path, monkeypatch, raw_params, capsys):
    monkeypatch.chdir(tmp_path)
    raw_params["towers"] = ["random", "randon"]
    Path("params.yaml").write_text(yaml.safe_dump(raw_params))
    Path(validate.OUTPUT).write_text("earlier\n")
    with pytest.raises(SystemExit) as exit_info:
        validate.main([])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1
    assert err.startswith("error: towers[1]: unknown value 'randon' (did you mean 'random'?); allowed: [")
    assert Path(validate.OUTPUT).read_text() == "earlier\n"
