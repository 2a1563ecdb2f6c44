"""The study's results as one markdown page for a pull request, with the changes against a base revision.

    python -m pipeline.tools.report --base main                     # to stdout: paste it, or let CI post it
    python -m pipeline.tools.report --base main -o report.md        # to a file (figure links relative to it)
    gh pr comment --body-file <(python -m pipeline.tools.report --base origin/main \
        --link-prefix https://github.com/ORG/REPO/blob/$(git rev-parse HEAD)/)

The page (pipeline/analysis/report.py) holds Kendall's tau per setting and its change, the mIoU table with the
best model of each setting in bold and each change in points, what moved beyond the base revision's bootstrap
intervals (another draw of the validation images and seeds), the zero-shot means and links to the figures.
The current results are the workspace's (`dvc repro` writes them; its `report` stage writes the same page without
a base to plots/report.md); the base's `metrics/ranking.json` is read at `--base`, any revision `dvc metrics diff`
takes: a branch, a tag, a commit or an experiment name.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from pipeline import paths
from pipeline.analysis.report import figure_links, models_of, render, settings_of
from pipeline.atomic import write_text
from pipeline.errors import PipelineError
from pipeline.stages.common import main, parser


def read_at(path: Path | str, rev: str) -> str:
    """`path` (git- or DVC-tracked) as revision `rev` holds it, through DVC (which also resolves experiment names)."""
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        return dvc.api.read(str(path), rev=rev)
    except (DvcException, FileNotFoundError) as err:
        raise PipelineError(f"--base {rev}: cannot read {path} there ({type(err).__name__}: {err})") from None


def base_confidence(rev: str, default: float, params_file: str) -> float:
    """The level of the base revision's intervals: rank.confidence of its params file (`default` where it has none)."""
    try:
        value = (yaml.safe_load(read_at(params_file, rev)) or {}).get("rank", {}).get("confidence", default)
    except (PipelineError, yaml.YAMLError, AttributeError):
        return default
    return float(value) if isinstance(value, (int, float)) else default


def run(args: argparse.Namespace, params) -> None:
    for path in (paths.RANKING, paths.RANK_FLIPS):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run `dvc repro rank` first")
    current = json.loads(paths.RANKING.read_text())
    flips = json.loads(paths.RANK_FLIPS.read_text())
    base = json.loads(read_at(paths.RANKING, args.base)) if args.base else None
    out_dir = Path(args.output).parent if args.output != "-" else Path(".")

    def href(path: str) -> str:
        return args.link_prefix + path if args.link_prefix else os.path.relpath(path, out_dir)

    base_setting = params.rank.base_setting
    figures = figure_links(settings_of(current), models_of(current), base_setting, list(params.seeds), href)
    confidence = params.rank.confidence
    page = render(current, flips, base_setting, confidence, figures, base, args.base,
                  base_confidence(args.base, confidence, args.params) if args.base else None)
    if args.output == "-":
        sys.stdout.write(page)
    else:
        write_text(args.output, page)
        print(f"written: {args.output} ({len(page):,} characters)", file=sys.stderr)


if __name__ == "__main__":
    p = parser(__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--base", help="revision to compare with (branch, tag, commit, experiment); default: none")
    p.add_argument("-o", "--output", default="-", help="markdown file to write; - (default) for stdout")
    p.add_argument("--link-prefix", default="",
                   help="prefix of the figure links (e.g. a repository URL at the commit); default: links relative "
                        "to the output file")
    main(run, p.parse_args())
