"""What the training loops (finetune, pretrain, align) share around their optimizer steps: seeding, resuming, the
stop on a non-finite loss, the training curves, the progress line and the checkpoints.

It imports no study's models or losses, so a stage that uses it depends on no other study's code.
"""
from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.errors import NonFiniteLossError
from pipeline.training.checkpoint import Checkpointer, set_rng_state
from pipeline.training.distributed import Processes
from pipeline.training.progress import Progress
from pipeline.training.train_log import TrainLog


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_finite(loss: float, where: str) -> None:
    """Stop on a NaN or infinite loss before the optimizer steps on it."""
    if not math.isfinite(loss):
        raise NonFiniteLossError(f"loss is {loss} at {where}; stopping")


@dataclass
class Trainer:
    """The model and what updates it: what a checkpoint restores besides the data position and the RNG."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


class TrainingLoop:
    """Optimizer steps `start + 1 .. steps` of a run that resumes where its last checkpoint left off.

    Creating it restores the trainer from the checkpointer's last checkpoint (if any), starts the data with
    `loader(skip_batches=...)` past the micro-batches those steps consumed, then restores the RNG states (creating the
    data iterator draws from the global RNG), so the steps that follow are those of an uninterrupted run.
    `extra` is what the resumed checkpoint saved besides the trainer (a fresh run: 0 seconds, no history).
    Run the steps inside `with loop:`; leaving it closes the curves and the progress bar, and adds the checkpoint to
    resume from to a NonFiniteLossError's message.
    """

    def __init__(self, desc: str, steps: int, log_every: int, trainer: Trainer, checkpointer: Checkpointer,
                 loader: Callable[..., DataLoader], micro_batches: int, live_dir: Path | None, procs: Processes,
                 device: torch.device):
        self.desc, self.total, self.log_every, self.device = desc, steps, log_every, device
        self.trainer, self.checkpointer = trainer, checkpointer
        resumed = checkpointer.resume(trainer.model, trainer.optimizer, trainer.schedule, trainer.scaler)
        self.start, self.extra = (resumed.step, resumed.extra) if resumed else (0, {"seconds": 0.0, "history": None})
        self.batches = iter(loader(skip_batches=self.start * micro_batches))
        if resumed:
            set_rng_state(resumed.rng)
        self.log = TrainLog(live_dir, procs, self.extra["history"])
        self.progress = Progress(desc, steps, initial=self.start, every=log_every, enabled=procs.is_main)
        self.untimed_seconds = 0.0

    def steps(self) -> range:
        return range(self.start + 1, self.total + 1)

    def logs(self, step: int) -> bool:
        """Whether optimizer step `step` writes to the curves: every `log_every` steps and the last."""
        return step % self.log_every == 0 or step == self.total

    def report(self, step: int, values: dict[str, float], **shown: float) -> None:
        """After optimizer step `step`: `values` to the curves if it `logs`, `shown` on the progress line."""
        if self.logs(step):
            self.log.log(step, values)
        self.progress.update(step, **shown)

    @contextlib.contextmanager
    def untimed(self) -> Iterator[None]:
        """A block left out of the training seconds (a validation)."""
        started = time.perf_counter()
        yield
        self.untimed_seconds += time.perf_counter() - started

    def checkpoint(self, step: int, **extra) -> None:
        """At the checkpointer's interval and the last step, save the trainer with the seconds, the curves and
        `extra` (what the loop needs back on resuming). Collective: every process calls it."""
        if self.checkpointer.due(step, self.total):
            t = self.trainer
            self.checkpointer.save(step, t.model, t.optimizer, t.schedule, t.scaler,
                                   {"seconds": self.seconds(), "history": self.log.history, **extra})

    def seconds(self) -> float:
        """Training seconds of this run and of those it resumes, untimed blocks excluded."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the steps' queued kernels are part of them
        return self.extra["seconds"] + time.perf_counter() - self.started - self.untimed_seconds

    def __enter__(self) -> TrainingLoop:
        self.started = time.perf_counter()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.progress.close()
        self.log.close()
        if isinstance(error, NonFiniteLossError):
            raise NonFiniteLossError(f"{self.desc}: {error} ({self.checkpointer.last_saved()})") from None

