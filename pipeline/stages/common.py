"""What every stage CLI shares: params loading and turning expected errors into one clear line."""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Callable, Iterator

from pipeline.atomic import sweep_temporaries
from pipeline.config import Params, load_params
from pipeline.errors import PipelineError
from pipeline.training.checkpoint import FRESH_ENV, Checkpointer, fresh_requested, run_directory
from pipeline.training.distributed import Processes, close_processes, init_processes

PARAMS_FILE = "params.yaml"


def parser(description: str, training: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default=PARAMS_FILE, help="params file (default: %(default)s)")
    if training:
        p.add_argument("--fresh", action="store_true",
                       help=f"discard this stage's checkpoint and start over (also: {FRESH_ENV}=1 in the environment)")
    return p


def main(stage: Callable[[argparse.Namespace, Params], None], args: argparse.Namespace) -> None:
    """Sweep killed stages' temporaries, load and validate params, run the stage; errors the user can fix exit 1
    with a one-line message."""
    sweep_temporaries()
    try:
        params = load_params(args.params)
        stage(args, params)
    except (PipelineError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def processes() -> Iterator[Processes]:
    """This process's place among torchrun's (or 0 of 1); leaves the process group on the way out."""
    procs = init_processes()
    try:
        yield procs
    finally:
        close_processes(procs)


def checkpointer(args: argparse.Namespace, params: Params, stage: str, procs: Processes, workers: int,
                 fingerprint: dict) -> Checkpointer:
    directory = run_directory(params.checkpoint.dir, stage, fingerprint)
    return Checkpointer(directory, fingerprint, params.checkpoint.every, procs, workers,
                        fresh=fresh_requested(getattr(args, "fresh", False)))
