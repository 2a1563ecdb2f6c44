"""validate: check the whole params.yaml before any other stage runs.

Every other stage depends on this stage's output, so `dvc repro` and `dvc exp run` run it first: a bad params.yaml
(an unknown key, with the closest allowed one; an unknown model, setting, tower or method; a missing per-id config)
stops the pipeline here with the project's own message, before DVC deletes any stage's outputs to re-run it.
It writes two outputs. `params.validated` only records that the check passed and never changes. params.resolved/
holds each matrix run's params, resolved (pipeline.stage_params): a run depends on its own file, which changes only
when a value the run reads changes. So editing params re-runs this stage, and downstream only the stages whose
params changed.
`make repro` runs this command before `dvc repro` too: DVC itself fails first, and without naming the typo, when a
key that dvc.yaml interpolates (`models`, `pretrain.dataset`, ...) is missing.

Deliberately light (no torch, no stages.common): it runs at the start of every pipeline.
"""
from __future__ import annotations

import argparse
import sys

from pipeline.atomic import sweep_temporaries, write_text
from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.stage_params import RESOLVED, write_all

OUTPUT = "params.validated"  # dvc.yaml: the validate stage's output, a dependency of every other stage
CONTENT = "params.yaml passed pipeline.config's checks (python -m pipeline.stages.validate)\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = p.parse_args(argv)
    sweep_temporaries()
    try:
        params = load_params(args.params)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    write_text(OUTPUT, CONTENT)
    changed = write_all(params)
    runs = len(params.models) * len(params.settings) * len(params.seeds)
    print(f"{args.params}: valid ({runs} finetune runs, {len(params.towers) * len(params.methods)} alignments); "
          f"{RESOLVED}/: {changed} run(s) with changed params")


if __name__ == "__main__":
    main()
