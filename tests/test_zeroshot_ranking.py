import json

import pandas as pd
import pytest
from scipy.stats import kendalltau

from pipeline.analysis.zeroshot_ranking import (
    load_zeroshot, zeroshot_markdown, zeroshot_metrics, zeroshot_records, zeroshot_table, zeroshot_vs_finetuned,
)

BENCHMARKS = ("pascal_voc20", "ade20k")
SCORES = {("a", "simzss"): (0.6, 0.2), ("a", "lit"): (0.3, 0.1), ("b", "simzss"): (0.5, 0.1),
          ("b", "lit"): (0.4, 0.2), ("c", "simzss"): (0.1, 0.05), ("c", "lit"): (0.2, 0.0)}


@pytest.fixture
def metrics_dir(tmp_path):
    for (tower, method), values in SCORES.items():
        data = {f"miou_{b}": v for b, v in zip(BENCHMARKS, values)} | {"dominant_class_top1_ade20k": 0.5}
        (tmp_path / f"{tower}-{method}.json").write_text(json.dumps(data))
    return tmp_path


def test_table_means_and_tau_against_fine_tuned(metrics_dir):
    table = zeroshot_table(load_zeroshot(metrics_dir, ["a", "b", "c"], ["simzss", "lit"], BENCHMARKS))
    assert list(table.columns) == [*BENCHMARKS, "mean"]
    assert table.loc[("b", "lit"), "mean"] == pytest.approx(0.3)
    finetuned = pd.Series({"a": 0.40, "b": 0.45, "c": 0.10})
    taus = zeroshot_vs_finetuned(table, finetuned)
    simzss_means = [0.4, 0.3, 0.075]
    assert taus["simzss"] == pytest.approx(kendalltau(simzss_means, [0.40, 0.45, 0.10]).statistic)
    assert taus["lit"] == pytest.approx(kendalltau([0.2, 0.3, 0.1], [0.40, 0.45, 0.10]).statistic)
    metrics = zeroshot_metrics(table, taus)
    assert metrics["zeroshot"]["a-simzss"] == pytest.approx(0.4)
    assert metrics["zeroshot_vs_finetuned_tau"]["lit"] == pytest.approx(1.0)
    assert {r["run"] for r in zeroshot_records(table)} == {f"{t}-{m}" for t, m in SCORES}
    text = zeroshot_markdown(table, taus)
    assert "| a | simzss | 60.0 | 20.0 | 40.0 |" in text and "(lit) vs fine-tuned ranking of the towers: +1.00" in text


def test_tau_needs_two_common_towers(metrics_dir):
    table = zeroshot_table(load_zeroshot(metrics_dir, ["a", "b"], ["simzss"], BENCHMARKS))
    taus = zeroshot_vs_finetuned(table, pd.Series({"a": 0.4, "z": 0.1}))
    assert taus["simzss"] != taus["simzss"]  # NaN
    assert zeroshot_metrics(table, taus)["zeroshot_vs_finetuned_tau"] == {}


def test_missing_run_and_key_are_named(metrics_dir):
    with pytest.raises(FileNotFoundError, match="run zeroshot@d-simzss first"):
        load_zeroshot(metrics_dir, ["d"], ["simzss"], BENCHMARKS)
    with pytest.raises(ValueError, match=r"missing key\(s\) \[.miou_coco_stuff.\]"):
        load_zeroshot(metrics_dir, ["a"], ["simzss"], ("coco_stuff",))
