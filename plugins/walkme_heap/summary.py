"""The run's accounting: every row read ends in exactly one bucket, and the buckets reconcile."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ReplaySummary:
    """Counts for one pipeline and window; ``as_dict`` is what goes to XCom (small)."""

    pipeline: str
    window: dict[str, str]
    dry_run: bool = False
    force: bool = False
    origins: int = 0
    read: int = 0
    sent: int = 0  # acknowledged by Heap (in a dry run: would be sent)
    already_sent: int = 0  # acknowledged by an earlier run (the ledger)
    invalid: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)  # refused by Heap (400), isolated
    batches: int = 0
    retries: int = 0
    throttled: int = 0  # 429 answers
    waited_seconds: float = 0.0  # pacing to the rate limits
    unsent: int = 0  # when a run stops: events not acknowledged (sent by the next run)
    truncated_values: int = 0
    seconds: float = 0.0
    dead_letters: str | None = None

    @property
    def total_invalid(self) -> int:
        return sum(self.invalid.values())

    @property
    def total_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def unaccounted(self) -> int:
        """Rows read but in no bucket: must be 0, checked at the end of every run."""
        return (
            self.read
            - self.sent
            - self.already_sent
            - self.total_invalid
            - self.total_rejected
            - self.total_skipped
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "window": self.window,
            "dry_run": self.dry_run,
            "force": self.force,
            "origins": self.origins,
            "read": self.read,
            "sent": self.sent,
            "already_sent": self.already_sent,
            "invalid": self.total_invalid,
            "invalid_by_reason": dict(sorted(self.invalid.items())),
            "rejected": self.total_rejected,
            "skipped": self.total_skipped,
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "batches": self.batches,
            "retries": self.retries,
            "throttled": self.throttled,
            "waited_seconds": round(self.waited_seconds, 1),
            "unsent": self.unsent,
            "truncated_values": self.truncated_values,
            "seconds": round(self.seconds, 3),
            "dead_letters": self.dead_letters,
        }

    def table(self) -> str:
        """A plain-text table for the task log."""
        verb = "would send" if self.dry_run else "sent"
        rows: list[tuple[str, Any]] = [
            ("pipeline", self.pipeline),
            ("window", f"{self.window['start']} .. {self.window['end']}"),
            ("files/queries", self.origins),
            ("rows read", self.read),
            (f"events {verb}", self.sent),
            ("already sent (ledger)", self.already_sent),
            ("batches", self.batches),
        ]
        rows += [(f"invalid: {k}", v) for k, v in sorted(self.invalid.items())]
        rows += [(f"rejected: {k}", v) for k, v in sorted(self.rejected.items())]
        rows += [(f"skipped: {k}", v) for k, v in sorted(self.skipped.items())]
        rows += [
            ("retries / 429s", f"{self.retries} / {self.throttled}"),
            ("waited for rate limits", f"{self.waited_seconds:.1f} s"),
            ("values truncated", self.truncated_values),
            ("seconds", f"{self.seconds:.2f}"),
            ("dead letters", self.dead_letters or "-"),
        ]
        reconciled = (
            self.sent + self.already_sent + self.total_skipped + self.total_invalid + self.total_rejected
        )
        rows.append(
            (
                "reconciliation",
                f"read {self.read} = sent + already sent + skipped + invalid + rejected = {reconciled}",
            )
        )
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)
