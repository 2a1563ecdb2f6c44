"""What the two resumable training stages (finetune@, align@) share: `--fresh`, torchrun's processes, the
checkpointer. Kept apart from stages/common.py so that the other stages do not import the training code."""
from __future__ import annotations

import argparse
import contextlib
from typing import Iterator

from pipeline.config import Params
from pipeline.stages.common import parser
from pipeline.training.checkpoint import FRESH_ENV, Checkpointer, fresh_requested, run_directory
from pipeline.training.distributed import Processes, close_processes, init_processes


def training_parser(description: str) -> argparse.ArgumentParser:
    p = parser(description)
    p.add_argument("--fresh", action="store_true",
                   help=f"discard this stage's checkpoint and start over (also: {FRESH_ENV}=1 in the environment)")
    return p


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
                        fresh=fresh_requested(args.fresh))
