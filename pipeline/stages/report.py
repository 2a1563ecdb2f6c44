"""report: the study's results as one markdown page, plots/report.md: Kendall's tau per setting, the mIoU table
with the best model of each setting in bold, which differences the bootstrap separates, the zero-shot means, links
to the figures.

It reads only this revision's outputs; `python -m pipeline.tools.report --base main` writes the same page with
the changes against another revision (reading a git revision is the tool's job, not a stage's).
"""
from __future__ import annotations

import json
import os

from pipeline import paths
from pipeline.analysis.report import figure_links, models_of, render, settings_of
from pipeline.atomic import write_text
from pipeline.stages.common import main, parser


def run(args, params) -> None:
    ranking = json.loads(paths.RANKING.read_text())
    flips = json.loads(paths.RANK_FLIPS.read_text())
    base_setting = params.rank.base_setting
    figures = figure_links(settings_of(ranking), models_of(ranking), base_setting, list(params.seeds),
                           lambda path: os.path.relpath(path, paths.REPORT.parent))
    write_text(paths.REPORT, render(ranking, flips, base_setting, params.rank.confidence, figures))
    print(f"written: {paths.REPORT}")


if __name__ == "__main__":
    main(run, parser(__doc__).parse_args())
