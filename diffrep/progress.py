"""Progress lines for long jobs: units done/total, items, rate, ETA, skips by reason."""

from __future__ import annotations

import logging
import time
from collections import Counter

log = logging.getLogger("diffrep")


def format_seconds(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Tracks work units (shards) and items (images) and formats one-line reports.

    The rate counts only items done in this run; the ETA extrapolates the per-unit time
    of this run over the units left.
    """

    def __init__(self, job: str, total_units: int, unit: str = "shards", item: str = "images"):
        self.job, self.total_units, self.unit, self.item = job, total_units, unit, item
        self.units_done = 0
        self.items_done = 0
        self.skipped: Counter = Counter()
        self.failed = 0
        self.start = time.monotonic()
        self._last_report = 0.0
        self._reported: tuple | None = None

    def update(self, items: int, skipped: dict[str, int] | None = None, units: int = 1) -> None:
        self.units_done += units
        self.items_done += items
        self.skipped.update(skipped or {})

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.items_done / elapsed
        left = self.total_units - self.units_done - self.failed
        eta = elapsed / self.units_done * left if self.units_done else float("nan")
        pct = 100.0 * self.units_done / max(self.total_units, 1)
        skipped = " ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        failed = f" | failed {self.failed}" if self.failed else ""
        return (f"{self.job}: {self.unit} {self.units_done}/{self.total_units} ({pct:.0f}%) | "
                f"{self.items_done} {self.item} | {rate:.1f} {self.item}/s | "
                f"elapsed {format_seconds(elapsed)} | ETA {format_seconds(eta)} | "
                f"skipped {skipped}{failed}")

    def report(self, every_s: float = 0.0) -> None:
        """Log a progress line, at most once per `every_s` seconds."""
        now = time.monotonic()
        if now - self._last_report >= every_s:
            self._last_report = now
            self._reported = self._counts()
            log.info(self.line())

    def finish(self) -> None:
        """Log the final line, unless the last progress line already said the same."""
        if self._reported != self._counts():
            self._reported = self._counts()
            log.info(self.line())

    def _counts(self) -> tuple:
        return self.units_done, self.items_done, self.failed, sum(self.skipped.values())


class PartTimes:
    """Wall seconds spent in each named part of a job (the parts a benchmark breaks its
    wall into): `with times.part("rerank"): ...` adds that block's seconds to "rerank"."""

    def __init__(self):
        self.seconds: Counter = Counter()

    def part(self, name: str) -> _Timed:
        return _Timed(self.seconds, name)

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in sorted(self.seconds.items())}


class _Timed:
    def __init__(self, seconds: Counter, name: str):
        self.seconds, self.name = seconds, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.seconds[self.name] += time.perf_counter() - self.start
