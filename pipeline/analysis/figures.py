"""PNG figures of the study: Kendall's tau per setting (paper Fig. 1), mIoU per setting vs the base (Figs. 3-9)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.atomic import atomic_path  # noqa: E402


def save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def tau_bars(comparison: pd.DataFrame, base_setting: str, path: Path) -> None:
    rows = comparison[comparison.setting != base_setting]
    fig, ax = plt.subplots(figsize=(6, 0.45 * max(len(rows), 1) + 1.2))
    colours = ["tab:green" if t >= 0.7 else "tab:orange" if t >= 0.4 else "tab:red" for t in rows.tau.fillna(0)]
    ax.barh(rows.setting, rows.tau.fillna(0), color=colours)
    for y, (tau, ratio) in enumerate(zip(rows.tau, rows.time_ratio)):
        label = "n/a" if pd.isna(tau) else f"{tau:.2f}"
        ax.text(0.02 if pd.isna(tau) or tau >= 0 else -0.02, y, f" τ={label}  time {ratio:.1f}×",
                va="center", ha="left" if pd.isna(tau) or tau >= 0 else "right", fontsize=8)
    ax.set_xlim(-1, 1)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("Kendall's τ against the default setup")
    ax.set_title("Performance ranking impact of settings")
    save(fig, path)


def setting_scatter(summary: pd.DataFrame, setting: str, base_setting: str, tau: float, ratio: float,
                    path: Path) -> None:
    base = summary[summary.setting == base_setting].set_index("model")
    other = summary[summary.setting == setting].set_index("model").loc[base.index]
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.errorbar(base.miou * 100, other.miou * 100, xerr=base.miou_std * 100, yerr=other.miou_std * 100,
                fmt="o", capsize=3)
    for model in base.index:
        ax.annotate(model, (base.miou[model] * 100, other.miou[model] * 100), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    low = min(base.miou.min(), other.miou.min()) * 100 - 2
    high = max(base.miou.max(), other.miou.max()) * 100 + 2
    ax.plot([low, high], [low, high], color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel(f"mIoU % ({base_setting})")
    ax.set_ylabel(f"mIoU % ({setting})")
    tau_text = "n/a" if pd.isna(tau) else f"{tau:.2f}"
    ax.set_title(f"{setting}: τ={tau_text}, training time {ratio:.1f}×", fontsize=10)
    save(fig, path)
