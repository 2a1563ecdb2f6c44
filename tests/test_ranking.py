import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau

from pipeline.analysis.bootstrap import tau_intervals, with_intervals
from pipeline.analysis.ranking import (
    compare_settings, format_table, kendall_tau, load_results, plot_records, ranking_metrics, summarize,
)


def tau_b_by_pairs(x, y) -> float:
    """Kendall's tau-b from its definition: (C - D) / sqrt((n0 - n1)(n0 - n2))."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if sx == 0 and sy == 0:
            continue
        if sx == 0:
            ties_x += 1
        elif sy == 0:
            ties_y += 1
        elif sx == sy:
            concordant += 1
        else:
            discordant += 1
    return (concordant - discordant) / math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))


@pytest.mark.parametrize("seed", range(6))
def test_kendall_tau_matches_definition_and_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, size=9).astype(float)  # few distinct values: many ties
    y = rng.integers(0, 4, size=9).astype(float)
    ours = kendall_tau(x, y)
    assert ours == pytest.approx(tau_b_by_pairs(x, y))
    assert ours == pytest.approx(kendalltau(x, y).statistic)


def test_kendall_tau_without_ties_is_the_papers_equation_1():
    rng = np.random.default_rng(0)
    x, y = rng.permutation(10).astype(float), rng.permutation(10).astype(float)
    n = len(x)
    eq1 = 2 / (n * (n - 1)) * sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
                                  for i, j in itertools.combinations(range(n), 2))
    assert kendall_tau(x, y) == pytest.approx(eq1)


def make_results() -> pd.DataFrame:
    rows = []
    mious = {"default": [0.5, 0.4, 0.3], "reverse": [0.1, 0.2, 0.3], "same": [0.9, 0.8, 0.7]}
    seconds = {"default": 10.0, "reverse": 25.0, "same": 5.0}
    params = {"default": 100, "reverse": 100, "same": 10}
    for setting, values in mious.items():
        for model, miou in zip(["a", "b", "c"], values):
            for seed, delta in enumerate([-0.01, 0.01]):
                rows.append({"model": model, "setting": setting, "seed": seed, "miou": miou + delta,
                             "train_seconds": seconds[setting], "trainable_params": params[setting]})
    return pd.DataFrame(rows)


def test_summary_means_stds_and_ranks():
    summary = summarize(make_results()).set_index(["setting", "model"])
    assert summary.loc[("default", "a"), "miou"] == pytest.approx(0.5)
    assert summary.loc[("default", "a"), "miou_std"] == pytest.approx(np.std([0.49, 0.51], ddof=1))
    assert summary.loc[("default", "a"), "rank"] == 1 and summary.loc[("default", "c"), "rank"] == 3
    assert summary.loc[("reverse", "c"), "rank"] == 1


def test_comparison_tau_and_cost_against_base():
    comparison = compare_settings(summarize(make_results()), "default").set_index("setting")
    assert comparison.loc["default", "tau"] == pytest.approx(1.0)
    assert comparison.loc["reverse", "tau"] == pytest.approx(-1.0)
    assert comparison.loc["same", "tau"] == pytest.approx(1.0)
    assert comparison.loc["reverse", "time_ratio"] == pytest.approx(2.5)
    assert comparison.loc["same", "trainable_params_ratio"] == pytest.approx(0.1)


def with_bootstrap(summary: pd.DataFrame, comparison: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The bootstrap's columns from made-up resamples: every model's mIoU plus a noise shared within the setting
    (tests/test_bootstrap.py tests the real ones)."""
    noise = np.random.default_rng(0).normal(0, 0.01, 50)
    scores = {s: pd.DataFrame({r.model: r.miou + noise for r in group.itertuples()})
              for s, group in summary.groupby("setting")}
    return with_intervals(summary, scores, 0.95), tau_intervals(comparison, scores, "default", "b", 0.95)


def test_metrics_and_plots_are_flat_numeric_and_drop_nan_tau():
    results = make_results()
    results.loc[results.setting == "same", "miou"] = 0.5  # constant ranking -> tau undefined
    summary = summarize(results)
    summary, comparison = with_bootstrap(summary, compare_settings(summary, "default"))
    metrics = ranking_metrics(summary, comparison)
    assert not {"tau", "tau_ci_low", "tau_ci_high", "p_tau_below_1"} & set(metrics["settings"]["same"])
    assert metrics["settings"]["reverse"]["tau"] == pytest.approx(-1.0)
    assert metrics["models"]["a"]["default"]["rank"] == 1

    def leaves(d):
        for v in d.values():
            yield from leaves(v) if isinstance(v, dict) else [v]

    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in leaves(metrics))
    records = plot_records(summary, comparison)
    assert {r["setting"] for r in records["tau.json"]} == {"default", "reverse"}
    assert len(records["miou.json"]) == 9
    json.dumps(records)
    assert "kendall tau" in format_table(summary, comparison, 0.95)


def test_load_results_reads_only_listed_runs_and_names_missing_file(tmp_path):
    for name in ["a-default-0", "stale-default-0"]:
        (tmp_path / f"{name}.json").write_text(json.dumps({"miou": 0.5, "train_seconds": 1.0, "trainable_params": 3}))
    frame = load_results(tmp_path, ["a"], ["default"], [0])
    assert list(frame.model) == ["a"]
    with pytest.raises(FileNotFoundError, match="b-default-0.json"):
        load_results(tmp_path, ["a", "b"], ["default"], [0])


def seed_rows(setting: str, mious: dict[str, list[float]]) -> list[dict]:
    return [{"model": model, "setting": setting, "seed": seed, "miou": miou, "train_seconds": 10.0,
             "trainable_params": 100}
            for model, values in mious.items() for seed, miou in enumerate(values)]


def test_equal_results_stay_tied_whatever_the_float_rounding_of_their_mean():
    # In exact arithmetic a and b both average 0.2; pandas' float means are 0.19999999999999998 and
    # 0.20000000000000004 in "default", but equal in "shuffled" (the same seeds, in another order).
    results = pd.DataFrame(
        seed_rows("default", {"a": [0.1, 0.2, 0.3], "b": [0.2, 0.2, 0.2], "c": [0.5, 0.5, 0.5]})
        + seed_rows("shuffled", {"a": [0.3, 0.2, 0.1], "b": [0.2, 0.2, 0.2], "c": [0.5, 0.5, 0.5]})
    )
    raw = results.groupby(["setting", "model"]).miou.mean()
    assert raw["default", "a"] < raw["default", "b"] and raw["shuffled", "a"] == raw["shuffled", "b"]
    summary = summarize(results).set_index(["setting", "model"])
    for setting in ("default", "shuffled"):
        assert summary.loc[(setting, "a"), "miou"] == summary.loc[(setting, "b"), "miou"] == 0.2
        assert summary.loc[(setting, "a"), "rank"] == summary.loc[(setting, "b"), "rank"] == 2
    comparison = compare_settings(summary.reset_index(), "default").set_index("setting")
    assert comparison.loc["shuffled", "tau"] == pytest.approx(1.0)


def test_a_model_missing_from_a_setting_is_left_out_with_a_warning_naming_it():
    results = pd.DataFrame(
        seed_rows("default", {"a": [0.5], "b": [0.4], "c": [0.3], "d": [0.2]})
        + seed_rows("partial", {"a": [0.1], "c": [0.3], "d": [0.2]})  # b was not run in "partial"
        + seed_rows("full", {"a": [0.5], "b": [0.4], "c": [0.3], "d": [0.2]})
    )
    results.loc[(results.setting == "partial") & (results.model == "a"), "train_seconds"] = 40.0
    with pytest.warns(UserWarning, match=r"'partial'.*lacks model\(s\) b;.*3 common model\(s\) \['a', 'c', 'd'\]"):
        comparison = compare_settings(summarize(results), "default").set_index("setting")
    # tau over a, c, d: default orders them a > c > d, "partial" c > d > a.
    assert comparison.loc["partial", "tau"] == pytest.approx(kendall_tau([0.5, 0.3, 0.2], [0.1, 0.3, 0.2]))
    assert comparison.loc["partial", "time_ratio"] == pytest.approx(20.0 / 10.0)
    assert comparison.loc["full", "tau"] == pytest.approx(1.0)


def test_a_model_only_in_a_setting_is_named_as_missing_from_the_base():
    results = pd.DataFrame(seed_rows("default", {"a": [0.5], "b": [0.4]})
                           + seed_rows("extra", {"a": [0.5], "b": [0.4], "z": [0.9]}))
    with pytest.warns(UserWarning, match=r"base setting 'default' lacks model\(s\) z"):
        comparison = compare_settings(summarize(results), "default").set_index("setting")
    assert comparison.loc["extra", "tau"] == pytest.approx(1.0)


def test_fewer_than_two_common_models_give_no_tau():
    results = pd.DataFrame(seed_rows("default", {"a": [0.5], "b": [0.4]}) + seed_rows("lone", {"a": [0.5]}))
    with pytest.warns(UserWarning, match="'lone'.*lacks model"):
        comparison = compare_settings(summarize(results), "default").set_index("setting")
    assert math.isnan(comparison.loc["lone", "tau"])
    summary, comparison = with_bootstrap(summarize(results), comparison.reset_index())
    assert not {"tau", "tau_ci_low", "p_tau_below_1"} & set(ranking_metrics(summary, comparison)["settings"]["lone"])


def test_figure_1_draws_an_interval_that_leaves_out_the_headline_tau(tmp_path):
    # A percentile interval need not contain the headline tau (here 1.0 with an interval of [0.33, 0.8]).
    from pipeline.analysis.figures import tau_bars

    comparison = pd.DataFrame({"setting": ["default", "patch8"], "tau": [1.0, 1.0], "time_ratio": [1.0, 2.0],
                               "tau_ci_low": [1.0, 0.33], "tau_ci_high": [1.0, 0.8],
                               "p_tau_below_1": [0.0, 1.0]})
    tau_bars(comparison, "default", tmp_path / "tau.png")
    assert (tmp_path / "tau.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
