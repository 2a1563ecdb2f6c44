"""rank: per-setting rankings, Kendall's tau against the base setup, training-time cost, the zero-shot table and
its tau against the fine-tuned ranking, plots and figures."""
from __future__ import annotations

from pipeline import paths
from pipeline.analysis import figures
from pipeline.analysis.ranking import (
    compare_settings, format_table, load_results, plot_records, ranking_metrics, summarize,
)
from pipeline.analysis.zeroshot_ranking import (
    load_zeroshot, zeroshot_markdown, zeroshot_metrics, zeroshot_records, zeroshot_table, zeroshot_vs_finetuned,
)
from pipeline.atomic import write_json, write_text
from pipeline.stages.common import main, parser


def run(args, params) -> None:
    results = load_results(paths.FINETUNE_METRICS, params.models, params.settings, params.seeds)
    summary = summarize(results)
    base = params.rank.base_setting
    comparison = compare_settings(summary, base, params.rank.tau_variant)
    zero_shot = zeroshot_table(load_zeroshot(paths.ZEROSHOT_METRICS, params.towers, params.methods,
                                             params.zeroshot.benchmarks))
    finetuned = summary[summary.setting == base].set_index("model")["miou"]
    taus = zeroshot_vs_finetuned(zero_shot, finetuned, params.rank.tau_variant)
    write_json(paths.RANKING, {**ranking_metrics(summary, comparison), **zeroshot_metrics(zero_shot, taus)})
    write_json(paths.PLOTS / "zeroshot.json", zeroshot_records(zero_shot))
    write_text(paths.PLOTS / "zeroshot.md", zeroshot_markdown(zero_shot, taus))
    for name, records in plot_records(summary, comparison).items():
        write_json(paths.PLOTS / name, records)
    figures.tau_bars(comparison, base, paths.FIGURES / "tau.png")
    for row in comparison.itertuples():
        if row.setting != base:
            figures.setting_scatter(summary, row.setting, base, row.tau, row.time_ratio,
                                    paths.FIGURES / f"miou_{row.setting}.png")
    print(format_table(summary, comparison))
    print("\nZero-shot segmentation mIoU % (SimZSS / LiT)\n" + zeroshot_markdown(zero_shot, taus))
    print(f"\nwritten: {paths.RANKING}, {paths.PLOTS}/*.json, {paths.FIGURES}/*.png")


if __name__ == "__main__":
    main(run, parser(__doc__).parse_args())
