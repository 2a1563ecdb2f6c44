"""What a reviewer sees at paper scale (10 models x 8 settings x 3 seeds, 11 SimZSS towers x 2 methods), on a
synthetic study in a temporary git + DVC repository holding the real dvc.yaml: `dvc metrics diff main --md` fits
one pull-request comment, the README's `dvc exp show` column selection works, and the report command writes the
page with its changes against main."""
import json
import re
import subprocess
import sys

import pytest

from pipeline.config import load_params
from tests.conftest import REPO
from tests.dvc_repo import DVC, dvc_repo, run
from tests.paper_metrics import write_study

pytestmark = pytest.mark.e2e

COMMENT_LIMIT = 60_000  # characters; GitHub's limit for a comment is 65,536
KEEP = r"Experiment|Created|settings\..*\.tau$|^decoder$|^patch_size$"
EXP_SHOW = ["exp", "show", "--drop", ".*", "--keep", KEEP]
"""The `dvc exp show` column selection the README documents (kept equal by a test below)."""


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    env = dvc_repo(root, (REPO / "params-paper.yaml").read_text())
    params = load_params(root / "params.yaml")
    write_study(root, params, seed=0)
    for cmd in (["git", "branch", "-M", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "results"]):
        run(cmd, root, env)
    write_study(root, params, seed=1)  # a pull request that changes every number
    return root, params, env


def test_metrics_diff_of_a_paper_scale_change_fits_one_pr_comment(paper):
    root, params, env = paper
    diff = run(DVC + ["metrics", "diff", "main", "--md"], root, env)
    assert len(diff) < COMMENT_LIMIT, f"{len(diff):,} characters"
    rows = [line for line in diff.splitlines()[2:] if line.startswith("|")]
    files = {row.split("|")[1].strip() for row in rows}
    assert files == {"metrics/ranking.json", "metrics/concepts.json"}  # per-run files are not listed
    base, ranking = (json.loads(text) for text in (
        run(["git", "show", "main:metrics/ranking.json"], root, env), (root / "metrics/ranking.json").read_text()))
    changed = [s for s in params.settings if ranking["settings"][s]["tau"] != base["settings"][s]["tau"]]
    assert changed
    for setting in changed:  # every tau that changed shows
        assert re.search(rf"\| settings\.{setting}\.tau +\|", diff)
    assert sum(re.search(r"\| models\.[^|]*\.miou +\|", row) is not None for row in rows) == (
        len(params.models) * len(params.settings))
    assert not any(re.search(r"seconds|per_second|\.iou_", row) for row in rows)  # no timings, no classes


def test_per_run_records_stay_diffable_on_request(paper):
    root, params, env = paper
    name = f"{params.models[0]}-default-0"
    diff = json.loads(run(DVC + ["metrics", "diff", "main", "--json", "--targets", f"metrics/finetune/{name}.json"],
                          root, env))
    assert {"miou", "pixel_accuracy", "train_seconds"} <= set(diff[f"metrics/finetune/{name}.json"])


def test_the_documented_exp_show_columns_are_few_and_work(paper):
    root, params, env = paper
    readme = (REPO / "README.md").read_text()
    assert f"dvc exp show --drop '.*' --keep '{KEEP}'" in readme
    header = run(DVC + EXP_SHOW + ["--csv"], root, env).splitlines()[0].split(",")
    assert header == ["Experiment", "Created", *[f"settings.{s}.tau" for s in params.settings], "decoder",
                      "patch_size"]
    everything = run(DVC + ["exp", "show", "--csv"], root, env).splitlines()[0].split(",")
    assert len(everything) > 10 * len(header)


def test_report_command_tables_the_changes_against_main(paper):
    root, params, env = paper
    out = subprocess.run([sys.executable, "-m", "pipeline.tools.report", "--base", "main", "-o", "pr.md"], cwd=root,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    page = (root / "pr.md").read_text()
    assert len(page) < COMMENT_LIMIT
    ranking = json.loads((root / "metrics/ranking.json").read_text())
    base = json.loads(run(["git", "show", "main:metrics/ranking.json"], root, env))
    tau_row = next(line for line in page.splitlines() if line.startswith("| mask2former |"))
    change = ranking["settings"]["mask2former"]["tau"] - base["settings"]["mask2former"]["tau"]
    assert f"{change:+.2f}" in tau_row
    for setting in params.settings:  # the best model of each setting is in bold
        best = [m for m in params.models if ranking["models"][m][setting]["rank"] == 1]
        column = ["setting"] + list(params.settings)
        for model in best:
            row = next(line for line in page.splitlines() if line.startswith(f"| {model} |"))
            assert row.split("|")[1 + column.index(setting)].strip().startswith("**")
    assert "## What moved beyond the noise" in page
    moved = page.split("## What moved beyond the noise")[1].split("##")[0]
    assert re.search(r"(\d+) of the (\d+) mIoUs and τs", moved)
    assert "](plots/figures/tau.png)" in page and "](plots/per_class/iou.png)" in page  # relative to pr.md
    stage_page = (root / "plots/report.md").read_text()
    assert "](figures/tau.png)" in stage_page and "What moved" not in stage_page
