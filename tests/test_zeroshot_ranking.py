import json

import pandas as pd
import pytest
from scipy.stats import kendalltau

from pipeline.analysis.zeroshot_ranking import (
    chance_row, load_zeroshot, zeroshot_markdown, zeroshot_metrics, zeroshot_records, zeroshot_table,
    zeroshot_vs_finetuned,
)

BENCHMARKS = ("pascal_voc20", "ade20k")
CHANCE = {"pascal_voc20": 0.02, "ade20k": 0.004}
NO_BACKGROUND = ["ade20k"]  # as if pascal_voc20 had a background class: the second mean must follow the list
SCORES = {("a", "simzss"): (0.6, 0.2), ("a", "lit"): (0.3, 0.1), ("b", "simzss"): (0.5, 0.1),
          ("b", "lit"): (0.4, 0.2), ("c", "simzss"): (0.1, 0.05), ("c", "lit"): (0.2, 0.0)}


@pytest.fixture
def metrics_dir(tmp_path):
    for (tower, method), values in SCORES.items():
        data = {f"miou_{b}": v for b, v in zip(BENCHMARKS, values)} | {"dominant_class_top1_ade20k": 0.5}
        data |= {f"chance_miou_{b}": v for b, v in CHANCE.items()}
        (tmp_path / f"{tower}-{method}.json").write_text(json.dumps(data))
    return tmp_path


def test_table_means_and_tau_against_fine_tuned(metrics_dir):
    runs = load_zeroshot(metrics_dir, ["a", "b", "c"], ["simzss", "lit"], BENCHMARKS)
    table, chance = zeroshot_table(runs, NO_BACKGROUND), chance_row(runs, NO_BACKGROUND)
    assert list(table.columns) == [*BENCHMARKS, "mean", "mean_without_background"]
    assert table.loc[("b", "lit"), "mean"] == pytest.approx(0.3)
    assert table.loc[("b", "lit"), "mean_without_background"] == pytest.approx(0.2)
    assert chance.to_dict() == pytest.approx({**CHANCE, "mean": 0.012, "mean_without_background": 0.004})
    finetuned = pd.Series({"a": 0.40, "b": 0.45, "c": 0.10})
    taus = zeroshot_vs_finetuned(table, finetuned)
    simzss_means = [0.4, 0.3, 0.075]
    assert taus["simzss"] == pytest.approx(kendalltau(simzss_means, [0.40, 0.45, 0.10]).statistic)
    assert taus["lit"] == pytest.approx(kendalltau([0.2, 0.3, 0.1], [0.40, 0.45, 0.10]).statistic)
    metrics = zeroshot_metrics(table, taus, chance)
    assert metrics["zeroshot"]["a-simzss"] == pytest.approx(0.4)
    assert metrics["zeroshot_without_background"]["a-simzss"] == pytest.approx(0.2)
    assert metrics["zeroshot_chance_without_background"] == pytest.approx(0.004)
    assert metrics["zeroshot_vs_finetuned_tau"]["lit"] == pytest.approx(1.0)
    assert {r["run"] for r in zeroshot_records(table)} == {f"{t}-{m}" for t, m in SCORES}
    text = zeroshot_markdown(table, taus, chance)
    assert "| a | simzss | 60.0 | 20.0 | 40.0 | 20.0 |" in text and "| chance | uniform | 2.0 | 0.4 | 1.2 | 0.4 |" in text
    assert "(lit) vs fine-tuned ranking of the towers: +1.00" in text


def test_tau_needs_two_common_towers(metrics_dir):
    runs = load_zeroshot(metrics_dir, ["a", "b"], ["simzss"], BENCHMARKS)
    table = zeroshot_table(runs, NO_BACKGROUND)
    taus = zeroshot_vs_finetuned(table, pd.Series({"a": 0.4, "z": 0.1}))
    assert taus["simzss"] != taus["simzss"]  # NaN
    assert zeroshot_metrics(table, taus, chance_row(runs, NO_BACKGROUND))["zeroshot_vs_finetuned_tau"] == {}


def test_missing_run_and_key_are_named(metrics_dir):
    with pytest.raises(FileNotFoundError, match="run zeroshot@d-simzss first"):
        load_zeroshot(metrics_dir, ["d"], ["simzss"], BENCHMARKS)
    with pytest.raises(ValueError, match=r"missing key\(s\) \[.miou_coco_stuff., .chance_miou_coco_stuff.\]"):
        load_zeroshot(metrics_dir, ["a"], ["simzss"], ("coco_stuff",))
