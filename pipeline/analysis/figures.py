"""PNG figures of the study: Kendall's tau per setting (paper Fig. 1), mIoU per setting vs the base (Figs. 3-9),
every model's rank per setting with its bootstrap interval."""
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
    """Paper Figure 1, with the bootstrap interval of each tau as a whisker and P(tau < 1) next to it."""
    rows = comparison[comparison.setting != base_setting].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(6, 0.45 * max(len(rows), 1) + 1.2))
    colours = ["tab:green" if t >= 0.7 else "tab:orange" if t >= 0.4 else "tab:red" for t in rows.tau.fillna(0)]
    ax.barh(rows.setting, rows.tau.fillna(0), color=colours)
    shown = rows[rows.tau.notna() & rows.tau_ci_low.notna()]
    # Drawn from the interval's ends, not as +- errors: a percentile interval need not contain the headline tau.
    ax.hlines(shown.index, shown.tau_ci_low, shown.tau_ci_high, color="black", linewidth=1)
    ax.plot(pd.concat([shown.tau_ci_low, shown.tau_ci_high]), pd.concat([shown.index.to_series()] * 2), "|",
            color="black", markersize=8)
    for y, row in rows.iterrows():
        label = "τ n/a" if pd.isna(row.tau) else f"τ={row.tau:.2f}"
        if pd.notna(row.p_tau_below_1):
            label += f" [{row.tau_ci_low:.2f}, {row.tau_ci_high:.2f}]  P(τ<1)={row.p_tau_below_1:.2f}"
        ax.text(1.03, y, f"{label}  time {row.time_ratio:.1f}×", transform=ax.get_yaxis_transform(), va="center",
                fontsize=8)
    ax.set_xlim(-1, 1)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("Kendall's τ against the default setup (whiskers: bootstrap interval)")
    ax.set_title("Performance ranking impact of settings")
    save(fig, path)


def rank_intervals(summary: pd.DataFrame, comparison: pd.DataFrame, confidence: float, path: Path) -> None:
    """One panel per setting: each model's rank (dot) and its bootstrap interval (bar), best first. Models whose
    intervals overlap are not separated by the evaluation: the ranking does not tell them apart."""
    settings = list(comparison.setting)
    ncols = min(4, len(settings))
    nrows = -(-len(settings) // ncols)
    models = summary.model.nunique()
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, (0.3 * models + 1.1) * nrows), squeeze=False,
                             sharex=True)
    for ax, row in zip(axes.flat, comparison.itertuples()):
        group = summary[summary.setting == row.setting].sort_values(["rank", "model"]).reset_index(drop=True)
        ax.hlines(group.index, group.rank_ci_low - 0.2, group.rank_ci_high + 0.2, color="tab:blue", linewidth=5,
                  alpha=0.35)
        ax.plot(group["rank"], group.index, "o", color="tab:blue")
        ax.set_yticks(group.index, group.model, fontsize=8)
        ax.set_ylim(len(group) - 0.5, -0.5)
        ax.set_xticks(range(1, models + 1))
        ax.set_xlim(0.5, models + 0.5)
        ax.grid(axis="x", linewidth=0.5, alpha=0.5)
        tau = "" if pd.isna(row.tau) else f"  τ={row.tau:.2f}"
        if pd.notna(row.tau_ci_low):
            tau += f" [{row.tau_ci_low:.2f}, {row.tau_ci_high:.2f}]"
        ax.set_title(f"{row.setting}{tau}", fontsize=9)
    for ax in axes.flat[len(settings):]:
        ax.set_visible(False)
    fig.supxlabel(f"rank (1 = best) with its {confidence:.0%} bootstrap interval")
    fig.tight_layout()
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
