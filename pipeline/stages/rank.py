"""rank: per-setting rankings, Kendall's tau against the base setup, training-time cost, plots and figures."""
from __future__ import annotations

from pipeline import paths
from pipeline.analysis import figures
from pipeline.analysis.ranking import (
    compare_settings, format_table, load_results, plot_records, ranking_metrics, summarize,
)
from pipeline.atomic import write_json
from pipeline.stages.common import main, parser


def run(args, params) -> None:
    results = load_results(paths.FINETUNE_METRICS, params.models, params.settings, params.seeds)
    summary = summarize(results)
    base = params.rank.base_setting
    comparison = compare_settings(summary, base, params.rank.tau_variant)
    write_json(paths.RANKING, ranking_metrics(summary, comparison))
    for name, records in plot_records(summary, comparison).items():
        write_json(paths.PLOTS / name, records)
    figures.tau_bars(comparison, base, paths.FIGURES / "tau.png")
    for row in comparison.itertuples():
        if row.setting != base:
            figures.setting_scatter(summary, row.setting, base, row.tau, row.time_ratio,
                                    paths.FIGURES / f"miou_{row.setting}.png")
    print(format_table(summary, comparison))
    print(f"\nwritten: {paths.RANKING}, {paths.PLOTS}/*.json, {paths.FIGURES}/*.png")


if __name__ == "__main__":
    main(run, parser(__doc__).parse_args())
