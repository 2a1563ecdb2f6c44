"""SimZSS end to end on the miniature through `dvc repro`: both methods align, far above chance, SimZSS ahead.

The miniature's own params, with one tower, so the claim is about what `make repro` runs. The
claim is on the benchmarks without background (the paper's Table 1): with background the result
also depends on the untuned background threshold. The paper's headline, SimZSS above LiT, holds on
the mim tower in align seeds 0-2 (by 1.21, 0.25 and 0.26 points, README: The miniature), but by less than
twice the spread of those leads; the guard below is on `make repro`'s seed 0 (the same to the bit on the
machines of the CI's kind it was run on), with a margin under its lead.
"""
import copy
import json

import pytest
import torch
import yaml

from pipeline.datasets.shards import load_split
from pipeline.datasets.specs import VIEWS, benchmark_classes, get_view
from pipeline.evaluation.miou import ConfusionMatrix
from tests.dvc_repo import DVC, dvc_repo, run

pytestmark = pytest.mark.e2e

TOWER = "mim"
SIMZSS_LEAD = 0.5  # mIoU points; seed 0 leads by 1.21


@pytest.fixture(scope="module")
def study(tmp_path_factory, repo_params_raw):
    root = tmp_path_factory.mktemp("simzss")
    params = copy.deepcopy(repo_params_raw)  # the committed params.yaml (tests/conftest.py)
    params["towers"] = [TOWER]
    env = dvc_repo(root, yaml.safe_dump(params, sort_keys=False))
    run(DVC + ["repro", f"zeroshot@{TOWER}-simzss", f"zeroshot@{TOWER}-lit"], root, env)
    results = {m: json.loads((root / f"metrics/zeroshot/{TOWER}-{m}.json").read_text()) for m in ("simzss", "lit")}
    return root, params, results


def chance_miou(root, benchmark: str, seed: int = 0) -> float:
    """Dataset-level mIoU of a uniformly random class per pixel (background included where the benchmark has it)."""
    view = get_view(benchmark) if benchmark in VIEWS else None
    samples = load_split(root / "data/shards" / (view.base if view else benchmark), "val", view)
    classes = len(benchmark_classes(benchmark))
    confusion, g = ConfusionMatrix(classes), torch.Generator().manual_seed(seed)
    for _, _, label in samples:
        confusion.update(torch.randint(classes, label.shape, generator=g), label.long())
    return confusion.miou()


def test_the_chance_level_is_random_guessing(study):
    """The stage's chance_miou_<b> (from the expected confusion matrix) against guessing on the same images."""
    root, params, results = study
    for benchmark in params["zeroshot"]["benchmarks"]:
        assert results["lit"][f"chance_miou_{benchmark}"] == pytest.approx(chance_miou(root, benchmark), rel=0.05)


def test_both_methods_beat_chance_fourfold(study):
    """The issue's bar: the mean without background at least 4x the chance level on the same images."""
    root, params, results = study
    benchmarks = [b for b in params["zeroshot"]["benchmarks"] if benchmark_classes(b)[0] != "background"]
    chance = sum(chance_miou(root, b) for b in benchmarks) / len(benchmarks)
    for method, r in results.items():
        assert r["miou_mean_without_background"] == pytest.approx(sum(r[f"miou_{b}"] for b in benchmarks) / len(benchmarks))
        assert r["miou_mean_without_background"] > 4 * chance, method


def test_the_concept_loss_is_what_differs(study):
    root, _, _ = study
    simzss, lit = (json.loads((root / f"metrics/align/{TOWER}-{m}.json").read_text()) for m in ("simzss", "lit"))
    assert simzss["concept_weight"] == 0.05 and lit["concept_weight"] == 0.0
    assert simzss["final_concept_loss"] > 0 and lit["final_concept_loss"] == 0
    assert simzss["optimizer_steps"] == lit["optimizer_steps"]
    concepts = json.loads((root / "metrics/concepts.json").read_text())
    assert concepts["fraction_with_concept"] > 0.9


def test_simzss_leads_lit_on_the_benchmarks_without_background(study):
    """A change that breaks the concept loss, the concept spans or the pooling leaves SimZSS at LiT's level."""
    _, _, results = study
    simzss, lit = (100 * results[m]["miou_mean_without_background"] for m in ("simzss", "lit"))
    assert simzss > lit + SIMZSS_LEAD, (simzss, lit)
