"""The benchmark's finding on the miniature through `dvc repro`: more semantic pretraining, a better fine-tune.

The miniature's own params (the committed params.yaml), cut to its two extreme toys in the default setting:
supervised pretraining on region tags against random init. Over fine-tuning seeds 0-2 supervised led by 13.6, 7.4
and 7.8 mIoU points and was first in every seed (README: The miniature), so a change that breaks the encoder
surgery, the pretrained weights' loading or the fine-tuning fails here. The full order of the five toys is not
asserted: its middle three swap between seeds.
"""
import copy
import json

import pytest
import yaml

from tests.dvc_repo import DVC, dvc_repo, run

pytestmark = pytest.mark.e2e

MARGIN = 3.0  # mIoU points; the smallest lead measured over seeds 0-2 was 7.4


@pytest.fixture(scope="module")
def miou(tmp_path_factory, repo_params_raw):
    root = tmp_path_factory.mktemp("benchmark")
    params = copy.deepcopy(repo_params_raw)
    params.update(models=["random", "supervised"], encoders=["random", "supervised"], towers=["random"])
    env = dvc_repo(root, yaml.safe_dump(params, sort_keys=False))
    runs = [f"{model}-default-0" for model in params["models"]]
    run(DVC + ["repro", *(f"finetune@{r}" for r in runs)], root, env)
    return {r.split("-")[0]: 100 * json.loads((root / f"metrics/finetune/{r}.json").read_text())["miou"]
            for r in runs}


def test_supervised_pretraining_beats_random_init_by_a_margin(miou):
    assert miou["supervised"] > miou["random"] + MARGIN, miou

