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
    origins: int = 0
    read: int = 0
    sent: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    truncated_values: int = 0
    seconds: float = 0.0

    @property
    def unaccounted(self) -> int:
        """Rows read but in no bucket: must be 0, checked at the end of every run."""
        return self.read - self.sent - sum(self.invalid.values()) - sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "window": self.window,
            "dry_run": self.dry_run,
            "origins": self.origins,
            "read": self.read,
            "sent": self.sent,
            "invalid": sum(self.invalid.values()),
            "invalid_by_reason": dict(sorted(self.invalid.items())),
            "skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "batches": self.batches,
            "truncated_values": self.truncated_values,
            "seconds": round(self.seconds, 3),
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
            ("batches", self.batches),
        ]
        rows += [(f"invalid: {k}", v) for k, v in sorted(self.invalid.items())]
        rows += [(f"skipped: {k}", v) for k, v in sorted(self.skipped.items())]
        rows += [("values truncated", self.truncated_values), ("seconds", f"{self.seconds:.2f}")]
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)
