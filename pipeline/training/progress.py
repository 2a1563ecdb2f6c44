"""Progress of a training or evaluation loop: a live tqdm bar on a terminal, plain lines in a log.

On a terminal (`dvc repro` in a shell passes its terminal to the stage) tqdm draws one bar that redraws in place,
with the step, rate, ETA and the loop's latest values (loss, learning rate). When the output is not a terminal (a
queued `dvc exp run`, CI, a SLURM log file) a redrawn bar would be one endless line of carriage returns, so the
bar draws nowhere and the loop prints the same text as a plain line every `every` steps and at the end, e.g.

    finetune@dinov2-default-0: step 1000/40000 (2%) 00:05:12<3:22:48, 3.20 step/s, loss=0.8123, lr=9.8e-05

Only the main process of a torchrun launch shows progress.
"""
from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

LINE_FORMAT = "{desc}: {unit} {n_fmt}/{total_fmt} ({percentage:.0f}%) {elapsed}<{remaining}, {rate_fmt}{postfix}"


class _Nowhere:
    """A file that drops what tqdm writes (the plain-line mode formats the bar itself)."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or file-like without isatty
        return False


class Progress:
    """`update(n, loss=..., lr=...)` after each unit of work; `write(text)` for an extra line; `close()` at the end.

    `initial` is where a resumed loop starts (the ETA is computed from the rate since then); `enabled=False` (a
    non-main process) shows nothing; `leave=False` removes the bar from the terminal when it closes; `every=0`
    prints no plain lines.
    """

    def __init__(self, desc: str, total: int, *, unit: str = "step", initial: int = 0, every: int = 1,
                 enabled: bool = True, leave: bool = True, stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interactive = enabled and is_terminal(self.stream)
        self.every = max(0, every)
        self.total = total
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                        file=self.stream if self.interactive else _Nowhere(), dynamic_ncols=True, mininterval=0.5,
                        smoothing=0.1, leave=leave)

    def update(self, n: int, **values) -> None:
        """The loop has done `n` units (absolute, not an increment); `values` are shown after the rate."""
        if not self.enabled:
            return
        if values:
            self.bar.set_postfix({k: _short(v) for k, v in values.items()}, refresh=False)
        self.bar.update(n - self.bar.n)
        if not self.interactive and self.every and (n % self.every == 0 or n == self.total):
            self._print(self.line())

    def line(self) -> str:
        """The bar's text as one plain line: description, unit count, percentage, elapsed<ETA, rate, values."""
        return tqdm.format_meter(**(self.bar.format_dict | {"bar_format": LINE_FORMAT, "ncols": None}))

    def write(self, text: str) -> None:
        """A line of its own (a validation result) that does not break the bar."""
        if not self.enabled:
            return
        if self.interactive:
            self.bar.write(text, file=self.stream)
        else:
            self._print(text)

    def close(self) -> None:
        self.bar.close()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.2e}" if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4) else f"{value:.4f}"
    return str(value)
