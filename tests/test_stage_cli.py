import argparse

import pytest
import yaml

from pipeline.stages.common import main


def write_params(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_bad_params_stop_the_stage_before_it_runs_with_the_key_named(tmp_path, raw_params, capsys):
    raw_params["models"] = ["random", "nope"]
    ran = []
    with pytest.raises(SystemExit) as exit_info:
        main(lambda args, params: ran.append(1), argparse.Namespace(params=write_params(tmp_path, raw_params)))
    assert exit_info.value.code == 1 and not ran
    assert "error: models[1]: unknown value 'nope'" in capsys.readouterr().err


def test_unknown_run_names_the_allowed_values(tmp_path, raw_params, capsys):
    def stage(args, params):
        params.run("random", "imaginary", 0)

    with pytest.raises(SystemExit):
        main(stage, argparse.Namespace(params=write_params(tmp_path, raw_params)))
    err = capsys.readouterr().err
    assert "setting: unknown value 'imaginary'" in err and "default" in err


def test_unexpected_errors_are_not_swallowed(tmp_path, raw_params):
    def stage(args, params):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        main(stage, argparse.Namespace(params=write_params(tmp_path, raw_params)))


@pytest.mark.parametrize("call, fragment", [
    (lambda p: p.tower_variant("ghost"), "tower: unknown value 'ghost'"),
    (lambda p: p.method("clip"), "method: unknown value 'clip'; allowed: ['simzss', 'lit']"),
])
def test_unknown_tower_or_method_names_the_allowed_values(tmp_path, raw_params, capsys, call, fragment):
    with pytest.raises(SystemExit):
        main(lambda args, params: call(params), argparse.Namespace(params=write_params(tmp_path, raw_params)))
    assert fragment in capsys.readouterr().err
