"""What every stage CLI shares: params loading and turning expected errors into one clear line."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from pipeline.atomic import sweep_temporaries
from pipeline.config import Params, load_params
from pipeline.errors import PipelineError

PARAMS_FILE = "params.yaml"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default=PARAMS_FILE, help="params file (default: %(default)s)")
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
