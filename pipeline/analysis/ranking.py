"""Rankings of models per setting, Kendall's tau against the base setup, training-time cost (paper Fig. 1, Table 3)."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pandas as pd
from scipy.stats import kendalltau

RESULT_KEYS = ("miou", "train_seconds", "trainable_params")
TAU_KEYS = ("tau", "tau_ci_low", "tau_ci_high", "p_tau_below_1")

MIOU_DECIMALS = 12
"""Decimals the mean mIoU over seeds is rounded to before ranking and tau.

A float mean of equal seed results can differ in its last bits: a pandas groupby mean is 0.19999999999999998 for
seeds (0.1, 0.2, 0.3) and 0.20000000000000004 for (0.2, 0.2, 0.2), so an exact tie would become an order and change
the ranks and tau. That noise is a few ulps (about 1e-16 for values in [0, 1]). One pixel more or less in a
dataset-level confusion matrix moves a mean of mIoUs by far more (at least about 1e-11 for a 1e9-pixel validation
set with 19 classes, over 3 seeds), so 12 decimals remove the noise and keep every real difference.
"""


def read_run_metrics(metrics_dir: Path, stage: str, run: str, keys) -> dict:
    """`<metrics_dir>/<run>.json` of stage instance `<stage>@<run>`, checked to hold `keys`."""
    path = Path(metrics_dir) / f"{run}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; run {stage}@{run} first") from None
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}")
    return data


def load_results(metrics_dir: Path, models, settings, seeds) -> pd.DataFrame:
    """One row per run, for the runs that params lists (stale files of removed models are not read)."""
    rows = []
    for model in models:
        for setting in settings:
            for seed in seeds:
                data = read_run_metrics(metrics_dir, "finetune", f"{model}-{setting}-{seed}", RESULT_KEYS)
                rows.append({"model": model, "setting": setting, "seed": seed, **{k: data[k] for k in RESULT_KEYS}})
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and (sample) std of mIoU over seeds per (setting, model), with its rank (1 = best) in the setting.

    The mean is rounded to `MIOU_DECIMALS`, so that equal results stay tied whatever the order of their seeds.
    """
    grouped = results.groupby(["setting", "model"], sort=False)
    summary = grouped.agg(
        miou=("miou", "mean"),
        miou_std=("miou", lambda x: x.std(ddof=1) if len(x) > 1 else 0.0),
        train_seconds=("train_seconds", "mean"),
        trainable_params=("trainable_params", "mean"),
        seeds=("seed", "count"),
    ).reset_index()
    summary["miou"] = summary["miou"].round(MIOU_DECIMALS)
    summary["rank"] = summary.groupby("setting")["miou"].rank(ascending=False, method="min").astype(int)
    return summary


def kendall_tau(x, y, variant: str = "b") -> float:
    """Kendall's tau between two score vectors over the same models (scipy; NaN when a ranking is constant)."""
    return float(kendalltau(x, y, variant=variant).statistic)


def compare_settings(summary: pd.DataFrame, base_setting: str, variant: str = "b") -> pd.DataFrame:
    """Per setting: tau of its model ranking against the base setting's, and its cost relative to the base.

    Like the zero-shot tau (`zeroshot_ranking.zeroshot_vs_finetuned`), each setting is compared with the base over
    the models both hold; a model that only one of them holds is left out with a warning naming it and the
    setting, and tau is NaN (left out of the metrics) with fewer than two common models. The cost ratios are over
    the same common models. (The rank stage never gets here with a missing model: `load_results` stops first,
    naming the missing run's metrics file.)
    """
    base_all = summary[summary.setting == base_setting].set_index("model")
    rows = []
    for setting, group in summary.groupby("setting", sort=False):
        group = group.set_index("model")
        common = [m for m in base_all.index if m in group.index]
        missing = {f"setting {setting!r}": [m for m in base_all.index if m not in group.index],
                   f"base setting {base_setting!r}": [m for m in group.index if m not in base_all.index]}
        if any(missing.values()):
            lacks = "; ".join(f"{where} lacks model(s) {', '.join(models)}"
                              for where, models in missing.items() if models)
            warnings.warn(f"ranking {setting!r} against {base_setting!r}: {lacks}; tau and cost over the "
                          f"{len(common)} common model(s) {common}", stacklevel=2)
        base, group = base_all.loc[common], group.loc[common]
        rows.append({
            "setting": setting,
            "tau": kendall_tau(base["miou"], group["miou"], variant) if len(common) > 1 else float("nan"),
            "time_ratio": group["train_seconds"].mean() / base["train_seconds"].mean(),
            "trainable_params_m": group["trainable_params"].mean() / 1e6,
            "trainable_params_ratio": group["trainable_params"].mean() / base["trainable_params"].mean(),
            "miou_mean": group["miou"].mean(),
        })
    return pd.DataFrame(rows)


def ranking_metrics(summary: pd.DataFrame, comparison: pd.DataFrame) -> dict:
    """Nested dict with numeric leaves for `dvc metrics`; a NaN tau (constant ranking) is left out, not faked.

    `summary` and `comparison` carry the bootstrap's intervals (`bootstrap.with_intervals`, `.tau_intervals`).
    """
    settings = {
        row.setting: {k: float(v) for k, v in row._asdict().items() if k not in ("Index", "setting") and _finite(v)}
        for row in comparison.itertuples()
    }
    models: dict[str, dict] = {}
    for row in summary.itertuples():
        models.setdefault(row.model, {})[row.setting] = {
            "miou": float(row.miou), "miou_std": float(row.miou_std), "miou_ci_low": float(row.miou_ci_low),
            "miou_ci_high": float(row.miou_ci_high), "rank": int(row.rank),
        }
    return {"settings": settings, "models": models}


def plot_records(summary: pd.DataFrame, comparison: pd.DataFrame) -> dict[str, list[dict]]:
    """Long-format records for `dvc plots`: mIoU and rank per model per setting, tau and cost per setting, each
    with its bootstrap interval."""
    base = comparison.set_index("setting")
    return {
        "miou.json": [
            {"model": r.model, "setting": r.setting, "miou": float(r.miou), "miou_std": float(r.miou_std),
             "miou_ci_low": float(r.miou_ci_low), "miou_ci_high": float(r.miou_ci_high), "rank": int(r.rank),
             "rank_ci_low": int(r.rank_ci_low), "rank_ci_high": int(r.rank_ci_high)}
            for r in summary.itertuples()
        ],
        "tau.json": [
            {"setting": s, **{k: float(base.loc[s, k]) for k in TAU_KEYS if _finite(base.loc[s, k])}}
            for s in base.index if _finite(base.loc[s, "tau"])
        ],
        "training_time.json": [
            {"setting": s, "time_ratio": float(base.loc[s, "time_ratio"]),
             "trainable_params_m": float(base.loc[s, "trainable_params_m"])}
            for s in base.index
        ],
    }


def format_table(summary: pd.DataFrame, comparison: pd.DataFrame, confidence: float) -> str:
    """A terminal table: mIoU (mean ± std, interval) and rank (interval) per model and setting, then tau
    (interval), P(tau < 1) and the time ratio per setting."""
    cells = summary.assign(cell=[
        f"{r.miou * 100:4.1f}±{r.miou_std * 100:.1f} [{r.miou_ci_low * 100:.1f},{r.miou_ci_high * 100:.1f}] "
        f"#{r.rank} ({r.rank_ci_low}-{r.rank_ci_high})" for r in summary.itertuples()])
    table = cells.pivot(index="model", columns="setting", values="cell")[list(comparison.setting)]
    footer = pd.DataFrame(
        [[f"{format_tau(r.tau)} [{format_tau(r.tau_ci_low)}, {format_tau(r.tau_ci_high)}]"
          for r in comparison.itertuples()],
         [f"{p:.2f}" if _finite(p) else "n/a" for p in comparison.p_tau_below_1],
         [f"{r:.2f}x" for r in comparison.time_ratio]],
        index=["kendall tau", "P(tau < 1)", "train time"], columns=list(comparison.setting),
    )
    return (f"mIoU % mean±std over seeds [{confidence:.0%} bootstrap interval] #rank (rank interval)\n"
            + pd.concat([table, footer]).to_string())


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def format_tau(value: float) -> str:
    return f"{value:+.2f}" if _finite(value) else "n/a"
