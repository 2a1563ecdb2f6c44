"""The rank stage's paired bootstrap (pipeline.analysis.bootstrap) and the per-image counts it reads."""
import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau

from pipeline.analysis.bootstrap import (
    bootstrap_scores, flip_records, kendall_tau_rows, load_counts, resample_weights, resampled_ranks, tau_intervals,
    with_intervals,
)
from pipeline.analysis.ranking import compare_settings, format_table, plot_records, ranking_metrics, summarize
from pipeline.errors import CountsError
from pipeline.evaluation import image_counts
from pipeline.evaluation.image_counts import ImageCounts

K = 4


def random_counts(rng, n: int, quality: float, keys=None) -> ImageCounts:
    """n images with varied difficulty; `quality` scales the share of each union that is intersection."""
    union = rng.integers(0, 400, size=(n, K)) * (rng.random((n, K)) < 0.7)
    share = np.clip(quality * rng.uniform(0.2, 1.0, size=(n, 1)), 0, 1)
    keys = np.array([f"img{i:03d}" for i in range(n)] if keys is None else keys, dtype=str)
    return ImageCounts(keys, rng.binomial(union, share), union)


def study(rng, qualities: dict[str, dict[str, float]], seeds=(0,), n: int = 30):
    """runs (model, setting, seed) -> counts (all settings on one dataset) and the results frame rank reads."""
    runs, rows = {}, []
    for setting, models in qualities.items():
        for model, quality in models.items():
            for seed in seeds:
                runs[model, setting, seed] = counts = random_counts(rng, n, quality)
                rows.append({"model": model, "setting": setting, "seed": seed, "miou": counts.miou(),
                             "train_seconds": 1.0, "trainable_params": 10})
    return runs, pd.DataFrame(rows)


def analyse(runs, results, seeds=(0,), resamples=400, confidence=0.95, variant="b", eval_datasets=None):
    eval_datasets = eval_datasets or {s: "ade20k" for s in results.setting.unique()}
    scores = bootstrap_scores(runs, eval_datasets, list(seeds), resamples, seed=0)
    summary = with_intervals(summarize(results), scores, confidence)
    comparison = tau_intervals(compare_settings(summary, "default", variant), scores, "default", variant, confidence)
    return scores, summary.set_index(["setting", "model"]), comparison.set_index("setting")


# ---------------------------------------------------------------- the hand-built case, by exact enumeration

def test_interval_equals_the_exact_bootstrap_distribution_enumerated_by_hand():
    # Three images of one run, two classes: (intersection, union) per class; class 1 is absent from image a, so
    # a draw of a alone scores class 0 only (the headline's rule: classes with union > 0).
    counts = ImageCounts(np.array(["a", "b", "c"]), np.array([[8, 0], [2, 3], [5, 1]]),
                         np.array([[10, 0], [8, 4], [6, 9]]))
    # All 3**3 equally likely draws of three images: the exact bootstrap distribution of the mIoU.
    values = []
    for draw in itertools.product(range(3), repeat=3):
        inter = [sum(int(counts.intersection[i, c]) for i in draw) for c in range(2)]
        union = [sum(int(counts.union[i, c]) for i in draw) for c in range(2)]
        values.append(sum(i / u for i, u in zip(inter, union) if u) / sum(1 for u in union if u))
    values, draws = np.unique(np.round(values, 12), return_counts=True)
    cdf = np.cumsum(draws) / 27

    def exact_quantile(q):  # the smallest value whose CDF reaches q
        return values[np.searchsorted(cdf, q - 1e-12)]

    for confidence in (0.6, 0.95):
        low_q, high_q = (1 - confidence) / 2, (1 + confidence) / 2
        assert np.abs(cdf - low_q).min() > 0.01 and np.abs(cdf - high_q).min() > 0.01  # no jump at the levels
        results = pd.DataFrame([{"model": "m", "setting": "default", "seed": 0, "miou": counts.miou(),
                                 "train_seconds": 1.0, "trainable_params": 1}])
        _, summary, _ = analyse({("m", "default", 0): counts}, results, resamples=40_000, confidence=confidence)
        row = summary.loc[("default", "m")]
        assert (row.miou_ci_low, row.miou_ci_high) == (exact_quantile(low_q), exact_quantile(high_q))
        assert row.miou_ci_low < row.miou < row.miou_ci_high


def test_resample_weights_draw_n_items_uniformly():
    weights = resample_weights(np.random.default_rng(0), 7, 20_000)
    assert weights.shape == (20_000, 7) and (weights.sum(1) == 7).all()
    assert weights.mean(0) == pytest.approx(np.ones(7), abs=0.03)
    assert weights.var(0) == pytest.approx(np.full(7, 6 / 7), rel=0.05)  # multinomial: n p (1 - p)


@pytest.mark.parametrize("variant", ["b", "c"])
def test_vectorised_tau_is_scipys_per_row_with_ties(variant):
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 4, size=(200, 6)).astype(float), rng.integers(0, 4, size=(200, 6)).astype(float)
    x[0] = 2.0  # a constant row: NaN, as scipy
    ours = kendall_tau_rows(x, y, variant)
    expected = [kendalltau(a, b, variant=variant).statistic for a, b in zip(x, y)]
    np.testing.assert_allclose(ours, expected, rtol=1e-12, equal_nan=True)
    assert np.isnan(ours[0]) and np.isfinite(ours[1:]).all()


def test_resampled_ranks_are_pandas_min_ranks():
    scores = np.random.default_rng(2).integers(0, 3, size=(50, 5)).astype(float)
    expected = pd.DataFrame(scores).rank(axis=1, ascending=False, method="min").to_numpy()
    np.testing.assert_array_equal(resampled_ranks(scores), expected)


# ---------------------------------------------------------------- properties

def test_the_order_of_the_images_in_each_file_changes_nothing(tmp_path):
    rng = np.random.default_rng(3)
    runs, results = study(rng, {"default": {"a": 0.6, "b": 0.5}, "other": {"a": 0.4, "b": 0.5}})

    def scores_from_files(folder, shuffle):
        for (model, setting, seed), c in runs.items():
            order = rng.permutation(len(c.keys)) if shuffle else np.arange(len(c.keys))
            image_counts.save(folder / f"{model}-{setting}-{seed}.npz",
                              {"ade20k": ImageCounts(c.keys[order], c.intersection[order], c.union[order])})
        loaded = load_counts(folder, results, {"default": "ade20k", "other": "ade20k"})
        return bootstrap_scores(loaded, {"default": "ade20k", "other": "ade20k"}, [0], 300, seed=5)

    (tmp_path / "ordered").mkdir()
    (tmp_path / "shuffled").mkdir()
    ordered, shuffled = scores_from_files(tmp_path / "ordered", False), scores_from_files(tmp_path / "shuffled", True)
    for setting in ordered:
        pd.testing.assert_frame_equal(ordered[setting], shuffled[setting])
        assert ordered[setting].to_numpy().std(0).min() > 0  # the resamples do vary


def test_identical_runs_give_degenerate_intervals():
    rng = np.random.default_rng(4)
    runs, results = study(rng, {"default": {"a": 0.8, "b": 0.5, "c": 0.3}})
    for model in "abc":  # a setting whose runs are the base's: tau is 1 in every resample
        runs[model, "copy", 0] = runs[model, "default", 0]
    runs["twin", "default", 0] = runs["twin", "copy", 0] = runs["b", "default", 0]  # a model identical to b
    twin = results[results.model == "b"].assign(model="twin")
    results = pd.concat([results, results.assign(setting="copy"), twin, twin.assign(setting="copy")])
    scores, summary, comparison = analyse(runs, results)
    assert comparison.loc["copy", ["tau_ci_low", "tau_ci_high", "p_tau_below_1"]].tolist() == [1.0, 1.0, 0.0]
    np.testing.assert_array_equal(scores["default"]["b"], scores["default"]["twin"])
    flips = {(f["model_a"], f["model_b"]): f["p_flip"] for f in flip_records(summary.reset_index(), scores)
             if f["setting"] == "default"}
    assert flips[("b", "twin")] == 0.0  # tied in the headline and in every resample
    assert summary.loc[("default", "b"), ["rank_ci_low", "rank_ci_high"]].tolist() == \
        summary.loc[("default", "twin"), ["rank_ci_low", "rank_ci_high"]].tolist()

    # Identical images: every resample is the full set again, so the mIoU interval is the point.
    same = ImageCounts(np.array(["x", "y", "z"]), np.array([[3, 1]] * 3), np.array([[5, 4]] * 3))
    one = pd.DataFrame([{"model": "m", "setting": "default", "seed": 0, "miou": same.miou(),
                         "train_seconds": 1.0, "trainable_params": 1}])
    _, summary, _ = analyse({("m", "default", 0): same}, one)
    row = summary.loc[("default", "m")]
    assert row.miou_ci_low == row.miou == row.miou_ci_high == (3 / 5 + 1 / 4) / 2


def test_models_far_apart_never_flip_and_close_ones_often_do():
    rng = np.random.default_rng(5)
    runs, results = study(rng, {"default": {"good": 0.95, "bad": 0.2, "close1": 0.55, "close2": 0.55}}, n=40)
    scores, summary, _ = analyse(runs, results, resamples=1000)
    flips = {frozenset([f["model_a"], f["model_b"]]): f["p_flip"] for f in flip_records(summary.reset_index(), scores)}
    assert flips[frozenset(["good", "bad"])] == 0.0
    assert flips[frozenset(["close1", "close2"])] > 0.05
    assert summary.loc[("default", "good"), ["rank_ci_low", "rank_ci_high"]].tolist() == [1, 1]
    assert summary.loc[("default", "bad"), ["rank_ci_low", "rank_ci_high"]].tolist() == [4, 4]
    close = summary.loc[("default", "close1")]
    assert close.rank_ci_low == 2 and close.rank_ci_high == 3


def test_pairing_keeps_a_small_but_consistent_difference_apart():
    """b is a slightly worse copy of a on every image, while the images vary a lot: the paired bootstrap resamples
    the same images for both, so b never overtakes a, though their mIoU intervals overlap widely."""
    rng = np.random.default_rng(6)
    a = random_counts(rng, 50, 0.6)
    b = ImageCounts(a.keys, np.maximum(a.intersection - (a.intersection > 0), 0), a.union)  # one pixel fewer
    runs = {("a", "default", 0): a, ("b", "default", 0): b}
    results = pd.DataFrame([{"model": m, "setting": "default", "seed": 0, "miou": c.miou(), "train_seconds": 1.0,
                             "trainable_params": 1} for (m, _, _), c in runs.items()])
    scores, summary, _ = analyse(runs, results, resamples=1000)
    assert summary.loc[("default", "b"), "miou_ci_high"] > summary.loc[("default", "a"), "miou_ci_low"]
    assert flip_records(summary.reset_index(), scores)[0]["p_flip"] == 0.0


def test_several_seeds_are_resampled_as_units_shared_by_all_runs():
    # Identical images (the image draw changes nothing), two seeds with different results: a model's score in a
    # resample is the mean of the drawn seeds, i.e. seed 0 twice, one of each, or seed 1 twice.
    def constant(inter):
        return ImageCounts(np.array(["x", "y"]), np.array([[inter, 5]] * 2), np.array([[10, 10]] * 2))

    runs = {("a", "default", 0): constant(2), ("a", "default", 1): constant(6),
            ("b", "default", 0): constant(1), ("b", "default", 1): constant(5)}
    results = pd.DataFrame([{"model": m, "setting": "default", "seed": s, "miou": c.miou(), "train_seconds": 1.0,
                             "trainable_params": 1} for (m, _, s), c in runs.items()])
    scores, summary, _ = analyse(runs, results, seeds=(0, 1), resamples=2000)
    a = scores["default"]["a"]
    assert set(a.round(12)) == {0.35, 0.45, 0.55}
    assert (a == 0.45).mean() == pytest.approx(0.5, abs=0.05)
    assert summary.loc[("default", "a"), ["miou_ci_low", "miou_ci_high"]].tolist() == [0.35, 0.55]
    # The same seed draw for both models: b is a - 0.05 in every resample, so they never flip.
    np.testing.assert_allclose(scores["default"]["a"] - scores["default"]["b"], 0.05)
    assert flip_records(summary.reset_index(), scores)[0]["p_flip"] == 0.0


def test_a_setting_on_another_dataset_is_resampled_on_its_own_images():
    rng = np.random.default_rng(7)
    runs, results = study(rng, {"default": {"a": 0.7, "b": 0.4}, "voc": {"a": 0.7, "b": 0.4}})
    eval_datasets = {"default": "ade20k", "voc": "pascal_voc"}
    scores = bootstrap_scores(runs, eval_datasets, [0], 300, seed=0)
    same_images = bootstrap_scores(runs, {"default": "ade20k", "voc": "ade20k"}, [0], 300, seed=0)
    assert not np.array_equal(scores["voc"].to_numpy(), same_images["voc"].to_numpy())
    np.testing.assert_array_equal(scores["default"].to_numpy(), same_images["default"].to_numpy())


# ---------------------------------------------------------------- files, errors and outputs

def test_load_counts_checks_the_files_against_the_runs(tmp_path):
    rng = np.random.default_rng(8)
    runs, results = study(rng, {"default": {"a": 0.6, "b": 0.5}}, n=5)
    for (model, setting, seed), c in runs.items():
        image_counts.save(tmp_path / f"{model}-{setting}-{seed}.npz", {"ade20k": c})
    loaded = load_counts(tmp_path, results, {"default": "ade20k"})
    assert loaded["a", "default", 0].miou() == results.miou[0]

    with pytest.raises(CountsError, match=r"a-default-0\.npz: no counts of 'cityscapes'"):
        load_counts(tmp_path, results, {"default": "cityscapes"})
    with pytest.raises(CountsError, match=r"a-default-0\.npz: its counts give mIoU .* different runs"):
        load_counts(tmp_path, results.assign(miou=results.miou + 1e-9), {"default": "ade20k"})
    other = random_counts(rng, 5, 0.5, keys=[f"other{i}" for i in range(5)])
    image_counts.save(tmp_path / "b-default-0.npz", {"ade20k": other})
    with pytest.raises(CountsError, match=r"b-default-0\.npz: its 5 images x 4 classes of 'ade20k' are not those"):
        load_counts(tmp_path, results.assign(miou=[results.miou[0], other.miou()]), {"default": "ade20k"})
    (tmp_path / "b-default-0.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"b-default-0\.npz: missing; run finetune@b-default-0"):
        load_counts(tmp_path, results, {"default": "ade20k"})


def test_counts_files_round_trip_and_bad_ones_are_named(tmp_path):
    rng = np.random.default_rng(9)
    counts = {"ade20k": random_counts(rng, 6, 0.5), "cityscapes": random_counts(rng, 0, 0.5)}
    path = tmp_path / "run.npz"
    image_counts.save(path, counts)
    loaded = image_counts.load(path)
    assert set(loaded) == {"ade20k", "cityscapes"} and loaded["cityscapes"].union.shape == (0, K)
    for name in counts:
        for field in image_counts.FIELDS:
            np.testing.assert_array_equal(getattr(loaded[name], field), getattr(counts[name], field))
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]  # no temporary left behind

    (tmp_path / "text.npz").write_text("{}")
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:100])
    for name in ("text.npz", "empty.npz", "cut.npz"):
        with pytest.raises(CountsError, match=f"{name}: not a readable .npz of per-image counts"):
            image_counts.load(tmp_path / name)
    bad = counts["ade20k"]
    np.savez(tmp_path / "swapped.npz", **{"ade20k.keys": bad.keys, "ade20k.intersection": bad.union,
                                          "ade20k.union": bad.intersection})
    with pytest.raises(CountsError, match="swapped.npz: 'ade20k' has counts with 0 <= intersection <= union"):
        image_counts.load(tmp_path / "swapped.npz")
    np.savez(tmp_path / "short.npz", **{"ade20k.keys": bad.keys[:2], "ade20k.intersection": bad.intersection,
                                        "ade20k.union": bad.union})
    with pytest.raises(CountsError, match="short.npz: 'ade20k' needs N distinct keys"):
        image_counts.load(tmp_path / "short.npz")
    np.savez(tmp_path / "partial.npz", **{"ade20k.keys": bad.keys})
    with pytest.raises(CountsError, match="partial.npz: arrays"):
        image_counts.load(tmp_path / "partial.npz")


def test_ranking_json_plots_and_table_carry_the_intervals():
    rng = np.random.default_rng(10)
    runs, results = study(rng, {"default": {"a": 0.8, "b": 0.5, "c": 0.3}, "probe": {"a": 0.3, "b": 0.5, "c": 0.8}},
                          seeds=(0, 1))
    scores, summary, comparison = analyse(runs, results, seeds=(0, 1))
    summary, comparison = summary.reset_index(), comparison.reset_index()
    metrics = json.loads(json.dumps(ranking_metrics(summary, comparison)))
    for setting in ("default", "probe"):
        assert {"tau", "tau_ci_low", "tau_ci_high", "p_tau_below_1"} <= set(metrics["settings"][setting])
        for model in "abc":
            entry = metrics["models"][model][setting]
            assert {"miou", "miou_ci_low", "miou_ci_high"} <= set(entry)
            assert entry["miou_ci_low"] <= entry["miou"] <= entry["miou_ci_high"]
    assert metrics["settings"]["probe"]["tau"] == -1.0
    assert metrics["settings"]["probe"]["p_tau_below_1"] == 1.0
    assert metrics["settings"]["default"]["p_tau_below_1"] == 0.0
    records = plot_records(summary, comparison)
    assert {"rank_ci_low", "rank_ci_high", "miou_ci_low"} <= set(records["miou.json"][0])
    assert {"tau_ci_low", "tau_ci_high", "p_tau_below_1"} <= set(records["tau.json"][1])
    flips = flip_records(summary, scores)
    assert len(flips) == 2 * 3 and {"setting", "model_a", "model_b", "miou_diff", "p_flip"} == set(flips[0])
    table = format_table(summary, comparison, 0.95)
    assert "[95% bootstrap interval]" in table and "P(tau < 1)" in table
    a = summary[(summary.setting == "default") & (summary.model == "a")].iloc[0]
    assert f"{a.miou * 100:.1f}±{a.miou_std * 100:.1f} [{a.miou_ci_low * 100:.1f},{a.miou_ci_high * 100:.1f}] #1 (1-1)" \
        in table
