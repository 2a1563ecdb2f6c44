"""Zero-shot (SimZSS / LiT) results per tower and method, and how the zero-shot ranking of towers relates to
their fine-tuned ranking (beyond both papers)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pipeline.analysis.ranking import format_tau, kendall_tau, read_run_metrics


def load_zeroshot(metrics_dir: Path, towers, methods, benchmarks) -> pd.DataFrame:
    """One row per (tower, method, benchmark) with its dataset-level mIoU (`miou_<benchmark>`) and the mIoU of a
    uniformly random class per pixel on the same images (`chance_miou_<benchmark>`)."""
    rows = []
    for tower in towers:
        for method in methods:
            keys = [f"{prefix}miou_{b}" for b in benchmarks for prefix in ("", "chance_")]
            data = read_run_metrics(metrics_dir, "zeroshot", f"{tower}-{method}", keys)
            rows += [{"tower": tower, "method": method, "benchmark": b, "miou": data[f"miou_{b}"],
                      "chance": data[f"chance_miou_{b}"]} for b in benchmarks]
    return pd.DataFrame(rows)


def _with_means(table: pd.DataFrame, without_background) -> pd.DataFrame:
    """`table` with the mean over its benchmarks, and over those of `without_background`, as two more columns."""
    no_background = [b for b in table.columns if b in set(without_background)]
    return table.assign(mean=table.mean(axis=1), mean_without_background=table[no_background].mean(axis=1))


def zeroshot_table(results: pd.DataFrame, without_background) -> pd.DataFrame:
    """Rows (tower, method), a column per benchmark, their mean and the mean of the benchmarks `without_background`
    (the papers' headline: the background threshold does not enter it)."""
    table = results.pivot_table(index=["tower", "method"], columns="benchmark", values="miou", sort=False)
    return _with_means(table[list(dict.fromkeys(results.benchmark))], without_background)


def chance_row(results: pd.DataFrame, without_background) -> pd.Series:
    """The chance mIoU per benchmark and its means, as a row of `zeroshot_table` (all runs score the same images)."""
    chance = results.groupby("benchmark", sort=False)["chance"].first().to_frame().T
    return _with_means(chance, without_background).iloc[0]


def zeroshot_vs_finetuned(table: pd.DataFrame, finetuned: pd.DataFrame, variant: str = "b") -> dict[str, float]:
    """Kendall's tau, per method, between the towers' mean zero-shot mIoU and their fine-tuned mIoU
    (`finetuned`: model -> miou of the base setting); NaN with fewer than two towers in both."""
    taus = {}
    for method in table.index.get_level_values("method").unique():
        zero_shot = table.xs(method, level="method")["mean"]
        common = [t for t in zero_shot.index if t in finetuned.index]
        taus[method] = (kendall_tau(zero_shot[common], finetuned[common], variant) if len(common) > 1
                        else float("nan"))
    return taus


def zeroshot_metrics(table: pd.DataFrame, taus: dict[str, float], chance: pd.Series) -> dict:
    """For ranking.json: mean zero-shot mIoU per tower-method, over all benchmarks and over those without
    background, the chance level of the latter, and the taus (a NaN tau is left out, not faked)."""
    return {
        "zeroshot": {f"{tower}-{method}": float(row["mean"]) for (tower, method), row in table.iterrows()},
        "zeroshot_without_background": {f"{tower}-{method}": float(row["mean_without_background"])
                                        for (tower, method), row in table.iterrows()},
        "zeroshot_chance_without_background": float(chance["mean_without_background"]),
        "zeroshot_vs_finetuned_tau": {method: tau for method, tau in taus.items() if math.isfinite(tau)},
    }


def zeroshot_records(table: pd.DataFrame) -> list[dict]:
    return [{"run": f"{tower}-{method}", "tower": tower, "method": method, "miou": float(row["mean"])}
            for (tower, method), row in table.iterrows()]


def zeroshot_markdown(table: pd.DataFrame, taus: dict[str, float], chance: pd.Series) -> str:
    """mIoU % per tower and method over the benchmarks, the chance level, then tau against the fine-tuned ranking."""
    columns = list(table.columns)
    header = [c.replace("mean_without_background", "mean without background") for c in columns]
    lines = ["| tower | method | " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(columns)]
    for (tower, method), row in [*table.iterrows(), (("chance", "uniform"), chance)]:
        lines.append(f"| {tower} | {method} | " + " | ".join(f"{row[c] * 100:.1f}" for c in columns) + " |")
    lines.append("")
    lines += [f"Kendall's tau, zero-shot ({method}) vs fine-tuned ranking of the towers: {format_tau(tau)}"
              for method, tau in taus.items()]
    return "\n".join(lines) + "\n"
