"""Progress of long loops: a line at each tenth of the work, counted, never clocked, then the time it took.

Lines rather than a redrawn bar: a terminal, ``train.log`` and a SLURM job's output read alike, and a test can count
them. Used by the commands that work for minutes outside training: generating and scoring images, reference
statistics, training the metric classifiers, scoring the checkpoints of a run dir.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType

log = logging.getLogger("dcgan")


class Progress:
    """``with Progress("scoring 10000 images", 10000) as p: ... p.advance(len(batch))``.

    Logs ``what: done/total unit (pct%), rate unit/s, about N s left`` each time another tenth (``parts``) is done,
    and ``what: total unit in S s (rate unit/s)`` at the end. ``enabled=False`` keeps only the closing line.
    """

    def __init__(self, what: str, total: int, unit: str = "images", enabled: bool = True, parts: int = 10) -> None:
        self.what, self.total, self.unit, self.enabled, self.parts = what, max(int(total), 0), unit, enabled, parts
        self.done = 0
        self._next_part = 1
        self._start = time.perf_counter()

    def __enter__(self) -> Progress:
        self._start = time.perf_counter()
        if self.enabled:
            log.info("%s: %d %s ...", self.what, self.total, self.unit)
        return self

    def advance(self, n: int = 1) -> None:
        """``n`` more done; one line when that crossed another tenth (one line however many it crossed)."""
        self.done += n
        if not self.enabled or self.total == 0 or self._next_part >= self.parts:
            return
        if self.done * self.parts < self._next_part * self.total:
            return
        self._next_part = min(self.done * self.parts // self.total + 1, self.parts)
        if self.done >= self.total:
            return  # the closing line says it
        elapsed = time.perf_counter() - self._start
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        log.info(
            "%s: %d/%d %s (%d%%), %.0f %s/s, about %.0f s left",
            self.what, self.done, self.total, self.unit, 100 * self.done // self.total, rate, self.unit, left,
        )  # fmt: skip

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is not None:
            return
        seconds = time.perf_counter() - self._start
        rate = f", {self.done / seconds:.0f} {self.unit}/s" if seconds > 0 and self.done else ""
        log.info("%s: %d %s in %.1f s%s", self.what, self.done, self.unit, seconds, rate)
