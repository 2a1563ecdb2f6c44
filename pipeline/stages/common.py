"""What every stage CLI shares: params loading and turning expected errors into one clear line."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from pipeline.config import ConfigError, Params, load_params

PARAMS_FILE = "params.yaml"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default=PARAMS_FILE, help="params file (default: %(default)s)")
    return p


def main(stage: Callable[[argparse.Namespace, Params], None], args: argparse.Namespace) -> None:
    """Load and validate params, run the stage; expected errors exit 1 with a one-line message."""
    from pipeline.datasets.specs import DataError

    expected: tuple[type[Exception], ...] = (ConfigError, DataError, FileNotFoundError)
    try:
        from pipeline.networks.weights import CheckpointError

        expected += (CheckpointError,)
    except ImportError:
        pass
    try:
        params = load_params(args.params)
        stage(args, params)
    except expected as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
