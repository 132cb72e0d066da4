"""A run's progress in the task log: events sent of the (estimated) total, the rate and an ETA.

The total is estimated from the share of the source read so far (bytes of files, rows of a query)
and the events known so far; identities never appear in these lines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from walkme_heap.summary import ReplaySummary

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 10.0  # at most one line this often while a run goes on


@dataclass
class _Periodic:
    every: float
    action: Callable[[], None]
    last: float


class Progress:
    """Logs a line at most every ``every`` seconds (``tick``), or now (``log``).

    :param pending: events waiting for the rate limits now.
    :param fraction: the share of the source read so far, when the source can tell.
    """

    def __init__(
        self,
        summary: ReplaySummary,
        *,
        pending: Callable[[], int],
        fraction: Callable[[], float | None],
        every: float = PROGRESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.summary, self.pending, self.fraction = summary, pending, fraction
        self.every, self.clock = every, clock
        self.started = self.last = clock()
        self._also: list[_Periodic] = []

    def also_every(self, seconds: float, action: Callable[[], None]) -> None:
        """Run ``action`` from ``tick`` too, at most every ``seconds`` (the run record's heartbeat):
        ticks come after each acknowledged batch and while waiting for the limits."""
        self._also.append(_Periodic(seconds, action, self.clock()))

    def elapsed(self) -> float:
        return self.clock() - self.started

    def tick(self) -> None:
        now = self.clock()
        for periodic in self._also:
            if now - periodic.last >= periodic.every:
                periodic.last = now
                periodic.action()
        if now - self.last >= self.every:
            self.log()

    def log(self) -> None:
        now = self.clock()
        self.last = now
        summary, pending = self.summary, self.pending()
        rate = summary.sent / max(now - self.started, 1e-9)
        fraction = self.fraction()
        known = summary.sent + pending
        if fraction:
            total = max(known, round(known / fraction))
            eta = f"{(total - summary.sent) / rate:.0f} s" if rate else "unknown"
            of = f"of about {total} ({100 * summary.sent / total if total else 100:.0f}%)"
        else:
            of, eta = f"of {known} known so far", "unknown"
        log.info(
            "progress: %d events sent %s, %.0f events/s, ETA %s; %d rows read, %d already sent, "
            "%d waiting for rate limits",
            summary.sent,
            of,
            rate,
            eta,
            summary.read,
            summary.already_sent,
            pending,
        )
