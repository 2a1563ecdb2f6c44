"""rank: per-setting rankings, Kendall's tau against the base setup, training-time cost, their bootstrap intervals
over the validation images and seeds, the zero-shot table and its tau against the fine-tuned ranking, plots and
figures."""
from __future__ import annotations

from pipeline import paths
from pipeline.analysis import figures
from pipeline.analysis.bootstrap import bootstrap_scores, flip_records, load_counts, tau_intervals, with_intervals
from pipeline.analysis.ranking import (
    compare_settings, format_table, load_results, plot_records, ranking_metrics, summarize,
)
from pipeline.analysis.zeroshot_ranking import (
    chance_row, load_zeroshot, zeroshot_markdown, zeroshot_metrics, zeroshot_records, zeroshot_table,
    zeroshot_vs_finetuned,
)
from pipeline.atomic import check_writable, write_json, write_text
from pipeline.datasets.specs import has_background
from pipeline.stages.common import main, parser


def run(args, params) -> None:
    cfg = params.rank
    check_writable(files=[paths.RANKING, paths.RANK_FLIPS, paths.PLOTS / "zeroshot.json"], folders=[paths.FIGURES])
    results = load_results(paths.FINETUNE_METRICS, params.models, params.settings, params.seeds)
    eval_datasets = {s: params.setup_for(s).eval_dataset for s in params.settings}
    scores = bootstrap_scores(load_counts(paths.FINETUNE_COUNTS, results, eval_datasets), eval_datasets,
                              params.seeds, cfg.resamples, cfg.bootstrap_seed)
    summary = with_intervals(summarize(results), scores, cfg.confidence)
    base = cfg.base_setting
    comparison = tau_intervals(compare_settings(summary, base, cfg.tau_variant), scores, base, cfg.tau_variant,
                               cfg.confidence)
    benchmarks = params.zeroshot.benchmarks
    without_background = [b for b in benchmarks if not has_background(b)]
    zero_shot_runs = load_zeroshot(paths.ZEROSHOT_METRICS, params.towers, params.methods, benchmarks)
    zero_shot = zeroshot_table(zero_shot_runs, without_background)
    chance = chance_row(zero_shot_runs, without_background)
    finetuned = summary[summary.setting == base].set_index("model")["miou"]
    taus = zeroshot_vs_finetuned(zero_shot, finetuned, cfg.tau_variant)
    write_json(paths.RANKING, {**ranking_metrics(summary, comparison), **zeroshot_metrics(zero_shot, taus, chance)})
    write_json(paths.RANK_FLIPS, flip_records(summary, scores))
    write_json(paths.PLOTS / "zeroshot.json", zeroshot_records(zero_shot))
    write_text(paths.PLOTS / "zeroshot.md", zeroshot_markdown(zero_shot, taus, chance))
    for name, records in plot_records(summary, comparison).items():
        write_json(paths.PLOTS / name, records)
    figures.tau_bars(comparison, base, paths.FIGURES / "tau.png")
    figures.rank_intervals(summary, comparison, cfg.confidence, paths.FIGURES / "ranks.png")
    for row in comparison.itertuples():
        if row.setting != base:
            figures.setting_scatter(summary, row.setting, base, row.tau, row.time_ratio,
                                    paths.FIGURES / f"miou_{row.setting}.png")
    print(format_table(summary, comparison, cfg.confidence))
    print("\nZero-shot segmentation mIoU % (SimZSS / LiT)\n" + zeroshot_markdown(zero_shot, taus, chance))
    print(f"\nwritten: {paths.RANKING}, {paths.RANK_FLIPS}, {paths.PLOTS}/*.json, {paths.FIGURES}/*.png")


if __name__ == "__main__":
    main(run, parser(__doc__).parse_args())
