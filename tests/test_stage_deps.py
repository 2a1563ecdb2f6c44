"""Each stage's code dependencies in dvc.yaml are exactly the project modules its command imports, transitively.

A module missing from a stage's deps leaves a stale result when it changes; a module listed but not imported re-runs
the stage (at paper scale, GPU-hours) for nothing. A folder may be listed only where every module in it is imported.
"""
import ast
import copy
import json
import re

import pytest
import yaml

from tests.conftest import REPO

# Files other than Python modules that a stage's code reads, by stage.
DATA_FILES = {"concepts": {"pipeline/datasets/concept_banks/simzss_authors.txt"}}


def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def imported_files(module: str) -> set[str]:
    """The project files (repository-relative) that importing `module` runs, transitively, with the packages' own
    __init__ (empty ones aside). Imports inside functions count: the stage runs them."""
    found, todo = set(), [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
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


def stage_module(stage: dict) -> str:
    match = re.search(r"python -m (pipeline\.stages\.\w+)", stage["cmd"])
    assert match, f"not a pipeline stage command: {stage['cmd']}"
    return match.group(1)


def listed_files(deps: list[str]) -> tuple[set[str], list[str]]:
    """(the project files the `pipeline/` deps name, folders expanded; the folders)."""
    files, folders = set(), []
    for dep in deps:
        if not dep.startswith("pipeline/"):
            continue
        path = REPO / dep
        if path.is_dir():
            folders.append(dep)
            files |= {p.relative_to(REPO).as_posix() for p in path.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts and p.read_bytes().strip()}
        else:
            files.add(dep)
    return files, folders


def dependency_errors(name: str, stage: dict) -> list[str]:
    """What is wrong with one stage's code deps: modules imported but not listed, listed but not imported, and
    folders holding modules the stage does not import."""
    needed = imported_files(stage_module(stage)) | DATA_FILES.get(name, set())
    listed, folders = listed_files(stage.get("deps", []))
    errors = [f"{name}: imports {f} but does not list it" for f in sorted(needed - listed)]
    errors += [f"{name}: lists {f} but does not import it" for f in sorted(listed - needed)
               if not any(f.startswith(folder + "/") for folder in folders)]
    for folder in folders:
        unused = sorted(f for f in listed_files([folder])[0] - needed)
        errors += [f"{name}: lists folder {folder}, but does not import {', '.join(unused)}"] if unused else []
    return errors


@pytest.mark.parametrize("name", sorted(dvc_stages()))
def test_code_deps_are_exactly_the_import_closure(name):
    assert dependency_errors(name, dvc_stages()[name]) == []


@pytest.mark.parametrize("name", sorted(dvc_stages()))
def test_the_check_fails_when_a_module_is_dropped_or_added(name):
    stage = dvc_stages()[name]
    listed = [d for d in stage["deps"] if d.startswith("pipeline/") and d.endswith(".py")]
    dropped = copy.deepcopy(stage)
    dropped["deps"].remove(listed[0])
    assert f"{name}: imports {listed[0]} but does not list it" in dependency_errors(name, dropped)
    spurious = "pipeline/training/mask_classification.py" if name in {"concepts", "align", "zeroshot"} \
        else "pipeline/training/simzss_loss.py"
    added = copy.deepcopy(stage)
    added["deps"].append(spurious)
    assert f"{name}: lists {spurious} but does not import it" in dependency_errors(name, added)


def test_the_studies_do_not_share_their_own_modules():
    """The Mask2Former loss is the benchmark's, the SimZSS loss the alignment's: neither study imports the other's."""
    stages = dvc_stages()
    for name in ("concepts", "align", "zeroshot"):
        assert "pipeline/training/mask_classification.py" not in imported_files(stage_module(stages[name])), name
    for name in ("prepare", "pretrain", "finetune", "rank"):
        assert "pipeline/training/simzss_loss.py" not in imported_files(stage_module(stages[name])), name


def stages_with_changed_code(status: dict, path: str) -> set[str]:
    """The stages whose `dvc status --json` entry names `path` among its changed deps."""
    return {stage for stage, changes in status.items() for change in changes
            if isinstance(change, dict) and path in change.get("changed deps", {})}


@pytest.mark.parametrize("module, study", [
    ("pipeline/training/simzss_loss.py", "align@"),            # no prepare@, pretrain@, finetune@
    ("pipeline/training/mask_classification.py", "finetune@"),  # no concepts, align@, zeroshot@
])
def test_touching_one_study_leaves_the_other_up_to_date(tmp_path, module, study):
    """`dvc status` on a copy of the study (its dvc.lock, no outputs needed): after a comment is added to one
    study's module, only that study's stages list it as a changed dependency."""
    from tests.dvc_repo import DVC, dvc_repo, run

    env = dvc_repo(tmp_path, (REPO / "params.yaml").read_text())
    for name in ("dvc.lock", "params.validated"):
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    with open(tmp_path / module, "a") as f:
        f.write("# a comment changes no result\n")
    status = json.loads(run(DVC + ["status", "--json"], tmp_path, env))
    touched = stages_with_changed_code(status, module)
    assert touched and all(stage.startswith(study) for stage in touched), sorted(touched)


def _resolve(template: str, raw: dict) -> str:
    """A dvc.yaml string with its ${a.b} references replaced by the params' values, as DVC resolves it."""
    def value(match):
        node = raw
        for key in match.group(1).split("."):
            node = node[key]
        return str(node)
    return re.sub(r"\$\{([\w.]+)\}", value, template)


@pytest.mark.parametrize("params_file", ["params.yaml", "params-paper.yaml", "params-vfm2025.yaml"])
def test_concepts_depends_on_exactly_the_captions_it_reads(params_file, tmp_path, monkeypatch):
    """The concepts stage's one data dependency resolves to the folder its source reads: COCO Captions' folder, or
    the folder of the img2dataset shards, which pipeline.config requires to hold them all; shards elsewhere (which
    DVC would not track) are refused before the stage runs."""
    from pipeline import paths
    from pipeline.config import parse_params
    from pipeline.datasets.img2dataset import expand_shards
    from pipeline.errors import ConfigError

    raw = yaml.safe_load((REPO / params_file).read_text())
    data_deps = [d for d in dvc_stages()["concepts"]["deps"] if not d.startswith("pipeline/")]
    assert data_deps == ["params.validated", "${data_root}/${concepts.source}"]
    assert _resolve(data_deps[1], raw) == str(paths.raw_dataset(raw["data_root"], "coco_captions"))
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / raw["data_root"] / "img2dataset"
    folder.mkdir(parents=True)
    for name in ("00000.tar", "00001.tar", "00002.tar"):
        (folder / name).write_bytes(b"")
    for shards in (f"{raw['data_root']}/img2dataset/", f"{folder}/{{00000..00001}}.tar"):
        raw["concepts"].update(source="img2dataset", shards=shards)
        parse_params(raw)
        tracked = tmp_path / _resolve(data_deps[1], raw)
        assert tracked == folder and all(p.parent.resolve() == tracked for p in expand_shards(shards))
    for shards in ("data/laion/{00000..00001}.tar", f"{raw['data_root']}/{{img2dataset,other}}/00000.tar",
                   f"{raw['data_root']}"):
        raw["concepts"]["shards"] = shards
        with pytest.raises(ConfigError, match=rf"concepts.shards \({re.escape(repr(shards))}\) must be the folder "
                                              rf"{re.escape(raw['data_root'])}/img2dataset/"):
            parse_params(raw)
