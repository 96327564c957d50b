"""Progress that suits where it goes: bars on a terminal, plain lines in a job log or CI output.

A progress bar redraws itself in place with carriage returns; in a job log every redraw is kept, megabytes per
run. So bars are shown only on a terminal, and elsewhere the training loops print one line per epoch and
``prepare`` one line per tenth of its samples.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional, TextIO

from tqdm import tqdm


def interactive(stream: Optional[TextIO] = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``, where tqdm draws) is a terminal.

    A progress bar redraws itself in place with carriage returns; in a job log or CI output every redraw is
    kept, megabytes per run. So bars are shown only on a terminal, and the loops print one line per epoch
    (or per tenth of the work) elsewhere.
    """
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


class ProgressBar:
    """A tqdm bar over batches that shows the loss and samples/s, or a plain iterator when disabled.

    The bar is drawn only on a terminal (``interactive``): in a job log its redraws would
    pile up, so there the loops print one line per epoch instead (``line_based``).

    Args:
        batches: the iterable of batches.
        total: number of batches.
        samples_per_batch: global batch size, for the samples/s figure.
        description: bar label.
        enabled: report progress (rank 0 only under DDP).
        initial: batches already done (a run resumed in the middle of an epoch).
    """

    def __init__(
        self,
        batches: Iterable[Any],
        total: int,
        samples_per_batch: int,
        description: str,
        enabled: bool = True,
        initial: int = 0,
    ) -> None:
        self.bar = tqdm(
            batches,
            total=total,
            initial=initial,
            desc=description,
            disable=not (enabled and interactive()),
            dynamic_ncols=True,
            leave=False,
        )
        self.line_based = enabled and not interactive()
        self.samples_per_batch = samples_per_batch
        self.started = time.perf_counter()
        self.steps = 0

    def __iter__(self) -> Iterator[Any]:
        return iter(self.bar)

    def update(self, **values: float) -> float:
        """Record one finished step, show ``values`` and return the running samples/s."""
        self.steps += 1
        rate = self.steps * self.samples_per_batch / max(time.perf_counter() - self.started, 1e-9)
        if self.steps % 5 == 1 or self.steps == self.bar.total:
            self.bar.set_postfix({**{k: f"{v:.4g}" for k, v in values.items()}, "samples/s": f"{rate:.1f}"})
        return rate

    def close(self) -> None:
        self.bar.close()


class SampleCounter:
    """Finished samples: a tqdm bar on a terminal; elsewhere (a job log, CI), where every redraw of a bar would be
    kept, one line at each tenth of the total.

    Args:
        total: samples in all.
        done: samples finished before (a resumed run).
        description: label of the bar and the lines.
        enabled: report progress at all.
        log: receives the lines.
    """

    def __init__(self, total: int, done: int, description: str, enabled: bool, log: Callable[[str], None]) -> None:
        self.bar = tqdm(
            total=total, initial=done, unit="sample", desc=description, disable=not (enabled and interactive())
        )
        self.lines = enabled and not interactive()
        self.total, self.done, self.description, self.log = total, done, description, log
        self.tenths = self._tenths()

    def _tenths(self) -> int:
        return self.done * 10 // max(self.total, 1)

    def update(self, count: int) -> None:
        """Count ``count`` more finished samples."""
        self.bar.update(count)
        self.done += count
        if self.lines and self._tenths() > self.tenths:
            self.tenths = self._tenths()
            self.log(f"{self.description}: {self.done}/{self.total} samples")

    def close(self) -> None:
        self.bar.close()
