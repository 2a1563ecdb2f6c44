"""The compressed `.npz` files the evaluations leave for later stages: written whole or not at all, read back
with an error that names the file."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_path
from pipeline.errors import PipelineError


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_npz(path: Path, error: type[PipelineError], holding: str) -> dict[str, np.ndarray]:
    """Every array of the file; `error` names the file and what it should hold when it cannot be read (a missing
    file stays a FileNotFoundError)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise error(f"{path}: not a readable .npz of {holding} ({type(err).__name__})") from err
