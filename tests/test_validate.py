"""The validate stage: first in dvc.yaml, the whole params file as its dependency, an output that never changes."""
import copy
from pathlib import Path

import pytest
import yaml

from pipeline import stage_params
from pipeline.stages import validate
from tests.conftest import REPO


def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_validate_depends_on_the_whole_params_file():  # its code deps: tests/test_stage_deps.py
    stage = dvc_stages()["validate"]
    assert stage["cmd"] == "python -m pipeline.stages.validate"
    assert stage["params"] == [{"params.yaml": None}]
    assert stage["outs"] == [{validate.OUTPUT: {"cache": False, "persist": True}},
                             {str(stage_params.RESOLVED): {"cache": False, "persist": True}}]


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
