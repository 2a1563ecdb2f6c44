"""Resumable training: a checkpoint every N optimizer steps, in a folder DVC does not delete.

`<checkpoint.dir>/<stage>/<params key>/last.pt` holds everything an uninterrupted run would still have in memory:
model, optimizer, schedule, grad scaler, every process's RNG states, the optimizer step (which
fixes the data position: the stream skips the micro-batches already consumed), the logged
history and running sums. It is written by the main process to a temporary file and renamed, so
a kill leaves the previous checkpoint whole.

The folder is keyed by the params that determine the run, so a run with other params (another
experiment, a fix after a divergence) starts its own. The checkpoint also records those params and
the digests of the run's inputs (starting weights, shards): one whose record differs (an upstream
stage re-ran, a file was copied in) or that was written by another number of processes or loader
workers is refused, never silently resumed. The stage deletes its folder once its outputs are written.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.datasets.shards import file_sha256
from pipeline.errors import CheckpointError
from pipeline.networks.weights import key_listing, load_strict
from pipeline.training.distributed import Processes

FORMAT = 1
FRESH_ENV = "PIPELINE_FRESH"
KEYS = ("format", "fingerprint", "step", "world_size", "workers", "model", "optimizer", "schedule", "scaler", "rng",
        "extra")


@dataclass
class Resumed:
    step: int
    extra: dict
    rng: dict  # this process's RNG states: set them (set_rng_state) once the data iterator exists, as it draws one


def fresh_requested(flag: bool) -> bool:
    """--fresh, or PIPELINE_FRESH=1 in the environment (for `PIPELINE_FRESH=1 dvc repro ...`)."""
    return flag or os.environ.get(FRESH_ENV, "") not in ("", "0")


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                    gauss], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def weights_sha256(path: str | os.PathLike) -> str:
    """The digest of the weights a run starts from, for its fingerprint; a missing file is a CheckpointError."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    return file_sha256(path)


def run_directory(base: str | os.PathLike, stage: str, fingerprint: dict) -> Path:
    """`base/stage/<key>`: the key is a digest of the fingerprint's params (not of its input digests)."""
    params = json.dumps(fingerprint["params"], sort_keys=True, default=str)
    return Path(base) / stage / hashlib.sha256(params.encode()).hexdigest()[:12]


def differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """'key: <saved> in the checkpoint, <current> now' for every leaf that differs."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return out


class Checkpointer:
    """Saves and restores one stage's training state; `every` 0 saves nothing and resumes nothing."""

    def __init__(self, directory: str | os.PathLike, fingerprint: dict, every: int, procs: Processes,
                 workers: int, fresh: bool = False):
        self.directory, self.every, self.procs, self.workers = Path(directory), every, procs, workers
        self.fingerprint = json.loads(json.dumps(fingerprint))  # tuples -> lists, as they come back from a load
        self.path = self.directory / "last.pt"
        if fresh and procs.is_main and self.directory.exists():
            print(f"starting fresh: removing {self.directory}")
            shutil.rmtree(self.directory)
        procs.barrier()

    def resume(self, model, optimizer, schedule, scaler) -> Resumed | None:
        """Load the last checkpoint into the given objects, or None when there is none to resume.

        The RNG states are returned, not set: creating a DataLoader iterator draws from the global RNG.
        """
        if self.every == 0 or not self.path.exists():
            return None
        state = self.read()
        self.check(state)
        load_strict(model, state["model"], str(self.path))
        try:
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{self.path}: optimizer, schedule or scaler state does not fit this run ({err}); "
                                  f"{self.advice}") from err
        if self.procs.is_main:
            print(f"resuming from {self.path} at optimizer step {state['step']}")
        return Resumed(state["step"], state["extra"], state["rng"][self.procs.rank])

    def read(self) -> dict:
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a truncated or foreign file
            raise CheckpointError(f"{self.path}: unreadable training checkpoint, truncated or not written by this "
                                  f"pipeline ({type(err).__name__}: {err}); {self.advice}") from err
        if not isinstance(state, dict) or set(KEYS) - set(state):
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            missing = sorted(set(KEYS) - set(state)) if isinstance(state, dict) else list(KEYS)
            raise CheckpointError(f"{self.path}: not a training checkpoint of this pipeline: missing "
                                  f"{key_listing(missing)} (found {found}); {self.advice}")
        return state

    def check(self, state: dict) -> None:
        if state["format"] != FORMAT:
            raise CheckpointError(f"{self.path}: checkpoint format {state['format']}, expected {FORMAT}; {self.advice}")
        changed = differences(state["fingerprint"], self.fingerprint)
        if changed:
            raise CheckpointError(f"{self.path} was written by a run with other params or inputs, so it is not "
                                  f"resumed: {'; '.join(changed)}. Restore them to resume, or {self.advice}")
        layout = (state["world_size"], state["workers"])
        if layout != (self.procs.world_size, self.workers):
            raise CheckpointError(
                f"{self.path} was written by {layout[0]} process(es) x {layout[1]} loader worker(s), this run has "
                f"{self.procs.world_size} x {self.workers}: the data order would differ. Resume with the same "
                f"layout, or {self.advice}")

    @property
    def advice(self) -> str:
        return f"re-run with --fresh (or {FRESH_ENV}=1 dvc repro ...) to discard {self.directory} and start over"

    def due(self, step: int, last_step: int) -> bool:
        return self.every > 0 and (step % self.every == 0 or step == last_step)

    def save(self, step: int, model, optimizer, schedule, scaler, extra: dict) -> None:
        """Collective: every process must call it (the RNG states of all processes are saved)."""
        rngs = self.procs.gather_objects(rng_state())
        if not self.procs.is_main:
            return
        state = {"format": FORMAT, "fingerprint": self.fingerprint, "step": step,
                 "world_size": self.procs.world_size, "workers": self.workers, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                 "scaler": scaler.state_dict(), "rng": rngs, "extra": extra}
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def last_saved(self) -> str:
        return f"the last good checkpoint is kept in {self.path}" if self.path.exists() else "no checkpoint was saved"

    def finish(self) -> None:
        """The stage's outputs are written: its checkpoints are no longer needed."""
        if self.procs.is_main and self.directory.exists():
            shutil.rmtree(self.directory)
            with contextlib.suppress(OSError):  # the stage's folder, unless other params' checkpoints are in it
                self.directory.parent.rmdir()
