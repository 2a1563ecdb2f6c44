"""Training curves for dvclive, written by the main process only.

DVC deletes a stage's plots before re-running it, so the history is also kept in the training
checkpoint and replayed when a killed run resumes: the curves come out whole.
"""
from __future__ import annotations

from dvclive import Live

from pipeline.training.distributed import Processes


class TrainLog:
    def __init__(self, live_dir, procs: Processes, history: list | None = None):
        self.live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) \
            if live_dir is not None and procs.is_main else None
        self.history: list = []
        for step, values in history or []:
            self.log(step, values)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.history.append([step, dict(values)])
        if self.live is not None:
            self.live.step = step
            for name, value in values.items():
                self.live.log_metric(name, value)

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
