"""Rankings of models per setting, Kendall's tau against the base setup, training-time cost (paper Fig. 1, Table 3)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from scipy.stats import kendalltau

RESULT_KEYS = ("miou", "train_seconds", "trainable_params")


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
    """Mean and (sample) std of mIoU over seeds per (setting, model), with its rank (1 = best) in the setting."""
    grouped = results.groupby(["setting", "model"], sort=False)
    summary = grouped.agg(
        miou=("miou", "mean"),
        miou_std=("miou", lambda x: x.std(ddof=1) if len(x) > 1 else 0.0),
        train_seconds=("train_seconds", "mean"),
        trainable_params=("trainable_params", "mean"),
        seeds=("seed", "count"),
    ).reset_index()
    summary["rank"] = summary.groupby("setting")["miou"].rank(ascending=False, method="min").astype(int)
    return summary


def kendall_tau(x, y, variant: str = "b") -> float:
    """Kendall's tau between two score vectors over the same models (scipy; NaN when a ranking is constant)."""
    return float(kendalltau(x, y, variant=variant).statistic)


def compare_settings(summary: pd.DataFrame, base_setting: str, variant: str = "b") -> pd.DataFrame:
    """Per setting: tau of its model ranking against the base setting's, and its cost relative to the base."""
    base = summary[summary.setting == base_setting].set_index("model")
    rows = []
    for setting, group in summary.groupby("setting", sort=False):
        group = group.set_index("model").loc[base.index]
        rows.append({
            "setting": setting,
            "tau": kendall_tau(base["miou"], group["miou"], variant),
            "time_ratio": group["train_seconds"].mean() / base["train_seconds"].mean(),
            "trainable_params_m": group["trainable_params"].mean() / 1e6,
            "trainable_params_ratio": group["trainable_params"].mean() / base["trainable_params"].mean(),
            "miou_mean": group["miou"].mean(),
        })
    return pd.DataFrame(rows)


def ranking_metrics(summary: pd.DataFrame, comparison: pd.DataFrame) -> dict:
    """Nested dict with numeric leaves for `dvc metrics`; a NaN tau (constant ranking) is left out, not faked."""
    settings = {
        row.setting: {k: float(v) for k, v in row._asdict().items() if k not in ("Index", "setting") and _finite(v)}
        for row in comparison.itertuples()
    }
    models: dict[str, dict] = {}
    for row in summary.itertuples():
        models.setdefault(row.model, {})[row.setting] = {
            "miou": float(row.miou), "miou_std": float(row.miou_std), "rank": int(row.rank),
        }
    return {"settings": settings, "models": models}


def plot_records(summary: pd.DataFrame, comparison: pd.DataFrame) -> dict[str, list[dict]]:
    """Long-format records for `dvc plots`: mIoU per model per setting, tau and cost per setting."""
    base = comparison.set_index("setting")
    return {
        "miou.json": [
            {"model": r.model, "setting": r.setting, "miou": float(r.miou), "miou_std": float(r.miou_std),
             "rank": int(r.rank)}
            for r in summary.itertuples()
        ],
        "tau.json": [
            {"setting": s, "tau": float(base.loc[s, "tau"])} for s in base.index if _finite(base.loc[s, "tau"])
        ],
        "training_time.json": [
            {"setting": s, "time_ratio": float(base.loc[s, "time_ratio"]),
             "trainable_params_m": float(base.loc[s, "trainable_params_m"])}
            for s in base.index
        ],
    }


def format_table(summary: pd.DataFrame, comparison: pd.DataFrame) -> str:
    """A terminal table: mIoU (mean ± std) per model and setting, then tau and time ratio per setting."""
    cells = summary.assign(cell=[f"{m * 100:5.1f}±{s * 100:3.1f} ({r})" for m, s, r in
                                 zip(summary.miou, summary.miou_std, summary["rank"])])
    table = cells.pivot(index="model", columns="setting", values="cell")[list(comparison.setting)]
    footer = pd.DataFrame(
        [[format_tau(t) for t in comparison.tau], [f"{r:.2f}x" for r in comparison.time_ratio]],
        index=["kendall tau", "train time"], columns=list(comparison.setting),
    )
    return "mIoU % mean±std over seeds (rank)\n" + pd.concat([table, footer]).to_string()


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def format_tau(value: float) -> str:
    return f"{value:+.2f}" if _finite(value) else "n/a"
