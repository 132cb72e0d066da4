"""Where each row that is not sent goes: its count in the summary by reason and, for an invalid or
rejected row, its dead letter. One call does both, so the counts and the dead letters agree. A row
that arrived later than the pipeline's lateness bound is skipped, yet dead-lettered too: it is a
valid event nobody will send unless someone replays its day.
"""

from __future__ import annotations

from typing import Any

from walkme_heap.deadletters import DeadLetters
from walkme_heap.dedupe import NewEvents
from walkme_heap.delivery.sender import Rejected
from walkme_heap.mapping.mapper import LATE, MappedChunk
from walkme_heap.sources.base import Chunk
from walkme_heap.summary import ReplaySummary

LATE_MESSAGE = (
    "the event is older than the run's window opened by the pipeline's lateness: it arrived later "
    "than the pipeline allows; replay it with a manual run whose window holds its day and the day "
    "of the file (or load) it arrived in"
)


class Outcomes:
    """Counts into ``summary``; writes dead letters when ``dead_letters`` is kept (not a dry run)."""

    def __init__(self, summary: ReplaySummary, dead_letters: DeadLetters | None) -> None:
        self.summary = summary
        self.dead_letters = dead_letters

    def _invalid(self, reason: str, **letter: Any) -> None:
        self.summary.invalid[reason] += 1
        if self.dead_letters is not None:
            self.dead_letters.add(outcome="invalid", reason=reason, **letter)

    def malformed(self, chunk: Chunk) -> None:
        """Records the parser could not split: invalid, with the parser's message."""
        for record, problem in chunk.malformed:
            self._invalid("malformed_row", origin=chunk.origin, row=record, message=problem)

    def mapped(self, chunk: Chunk, mapped: MappedChunk) -> None:
        """The mapping's invalid rows (dead-lettered with the source row) and skipped rows."""
        summary = self.summary
        summary.invalid.update(mapped.invalid)
        summary.skipped.update(mapped.skipped)
        summary.truncated_values += mapped.truncated_values
        if self.dead_letters is None:
            return
        for position, reason, kind in mapped.rejected:
            if kind == "invalid" or reason == LATE:
                row = chunk.frame.iloc[position]
                self.dead_letters.add(
                    origin=chunk.origin,
                    row=int(chunk.frame.index[position]),
                    outcome=kind,
                    reason=reason,
                    message=LATE_MESSAGE if reason == LATE else "",
                    source=row.to_dict(),
                )

    def new(self, new: NewEvents) -> None:
        """Events that are not new: repeats are skipped, what Heap holds is already sent."""
        self.summary.skipped["duplicate_in_source"] += new.repeats
        self.summary.already_sent += new.already_sent

    def oversized(self, event: dict[str, Any], max_bytes: int) -> None:
        self._invalid(
            "event_too_large",
            origin="",
            row=None,
            message=f"one event alone is over {max_bytes} bytes",
            payload=event,
        )

    def rejected(self, rejected: Rejected) -> None:
        """An event Heap refused (400, isolated by bisection), with Heap's message."""
        self.summary.rejected["rejected_by_heap"] += 1
        if self.dead_letters is not None:
            self.dead_letters.add(
                origin="",
                row=None,
                outcome="rejected",
                reason="rejected_by_heap",
                message=rejected.message,
                payload=rejected.event,
                attempts=rejected.attempts,
            )

    def user_refused(self, user: dict[str, Any], message: str, reason: str, attempts: int = 1) -> None:
        """A user whose properties Heap refused (isolated like an event), or one too large for any
        request: counted by the caller (``users_refused``), dead-lettered here with the user."""
        if self.dead_letters is not None:
            self.dead_letters.add(
                origin="",
                row=None,
                outcome="user_refused",
                reason=f"user_properties_{reason}",
                message=message,
                payload=user,
                attempts=attempts,
            )
