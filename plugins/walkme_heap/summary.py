"""The run's accounting: every row read ends in exactly one bucket, and the buckets reconcile."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

USER_COUNTS = (
    "users",
    "users_updated",
    "users_unchanged",
    "users_refused",
    "users_unsent",
    "user_values_sent",
    "user_requests",
    "user_retries",
    "user_throttled",
    "user_values_truncated",
    "user_values_stale",
)


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
    # New events from the lateness margin before the window (late arrivals within the bound, not
    # in the ledger): part of ``sent`` (or of ``unsent`` when the run stops), not a bucket of its own.
    late_events: int = 0
    # Events later than the lateness bound, per UTC event day (skipped ``later_than_lateness``)
    past_bound_days: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    dead_letters: str | None = None
    shard: str | None = None  # "2/4" for one shard of a day; None for a whole window
    # The Heap app sent to, whose acknowledgements "already sent" counts (acknowledgements are per
    # app); None in a dry run that knows no app: then any app's. An app id, not personal data.
    app_id: str | None = None
    # The newest event time Heap acknowledged in the run (ISO text as sent, ``format_ms``): how
    # fresh Heap's data is (the lag metric). Not a count: outside the reconciliation.
    newest_sent: str | None = None
    # User properties (a pipeline with ``user_properties``), outside the rows' reconciliation: users
    # with attribute values in the window = updated + unchanged + refused + unsent.
    users: int = 0
    users_updated: int = 0  # acknowledged by Heap (in a dry run: would be sent)
    users_unchanged: int = 0  # Heap holds their values already (or newer ones): nothing sent
    users_refused: int = 0  # refused by Heap (400, isolated) or too large: dead-lettered
    users_unsent: int = 0  # when a run stops: sent when the day runs again
    user_values_sent: int = 0  # property values in the acknowledged users
    user_requests: int = 0
    user_retries: int = 0
    user_throttled: int = 0  # 429 answers to add_user_properties
    user_values_truncated: int = 0  # attribute values cut to 1023 characters (per row read)
    # acknowledged values older than another run's meanwhile: Heap may hold them; sent again later
    user_values_stale: int = 0

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
    def oldest_late_day(self) -> str | None:
        """The oldest day of an event later than the lateness bound (where a manual run starts)."""
        return min(self.past_bound_days) if self.past_bound_days else None

    @property
    def users_unaccounted(self) -> int:
        """Users with values but in no bucket: must be 0, checked at the end of every run."""
        return self.users - self.users_updated - self.users_unchanged - self.users_refused - self.users_unsent

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
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "skipped": self.total_skipped,
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "batches": self.batches,
            "retries": self.retries,
            "throttled": self.throttled,
            "waited_seconds": round(self.waited_seconds, 1),
            "unsent": self.unsent,
            "truncated_values": self.truncated_values,
            "late_events": self.late_events,
            "oldest_late_day": self.oldest_late_day,
            "past_bound_by_day": dict(sorted(self.past_bound_days.items())),
            "seconds": round(self.seconds, 3),
            "dead_letters": self.dead_letters,
            "shard": self.shard,
            "app_id": self.app_id,
            "newest_sent": self.newest_sent,
            **{name: getattr(self, name) for name in USER_COUNTS},
        }

    def _user_rows(self) -> list[tuple[str, Any]]:
        """The user properties' lines of ``table`` (none when the pipeline syncs none)."""
        if not (self.users or self.user_values_truncated):
            return []
        verb = "would be updated" if self.dry_run else "updated"
        return [
            ("users with attribute values", self.users),
            (f"users {verb} (add_user_properties)", f"{self.users_updated} ({self.user_values_sent} values)"),
            ("users unchanged (ledger)", self.users_unchanged),
            ("users refused", self.users_refused),
            *([("users unsent", self.users_unsent)] if self.users_unsent else []),
            (
                "user requests / retries / 429s",
                f"{self.user_requests} / {self.user_retries} / {self.user_throttled}",
            ),
            ("user values truncated", self.user_values_truncated),
            *(
                [("user values maybe stale (sent again later)", self.user_values_stale)]
                if self.user_values_stale
                else []
            ),
        ]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReplaySummary:
        """Back from ``as_dict`` (an XCom); totals without reasons land in an ``unknown`` reason."""

        def reasons(total_key: str, by_reason_key: str) -> Counter[str]:
            counter = Counter({k: int(v) for k, v in (data.get(by_reason_key) or {}).items()})
            missing = int(data.get(total_key) or 0) - sum(counter.values())
            if missing:
                counter["unknown"] += missing
            return counter

        return cls(
            pipeline=data["pipeline"],
            window=dict(data["window"]),
            dry_run=bool(data.get("dry_run")),
            force=bool(data.get("force")),
            origins=int(data.get("origins") or 0),
            read=int(data.get("read") or 0),
            sent=int(data.get("sent") or 0),
            already_sent=int(data.get("already_sent") or 0),
            invalid=reasons("invalid", "invalid_by_reason"),
            skipped=reasons("skipped", "skipped_by_reason"),
            rejected=reasons("rejected", "rejected_by_reason"),
            batches=int(data.get("batches") or 0),
            retries=int(data.get("retries") or 0),
            throttled=int(data.get("throttled") or 0),
            waited_seconds=float(data.get("waited_seconds") or 0.0),
            unsent=int(data.get("unsent") or 0),
            truncated_values=int(data.get("truncated_values") or 0),
            late_events=int(data.get("late_events") or 0),
            past_bound_days=Counter(
                {str(k): int(v) for k, v in (data.get("past_bound_by_day") or {}).items()}
            ),
            seconds=float(data.get("seconds") or 0.0),
            dead_letters=data.get("dead_letters"),
            shard=data.get("shard"),
            app_id=data.get("app_id"),
            newest_sent=data.get("newest_sent"),
            **{name: int(data.get(name) or 0) for name in USER_COUNTS},
        )

    @classmethod
    def combine(cls, parts: list[ReplaySummary]) -> ReplaySummary:
        """The day's summary from its shards' summaries: counts add up, time is the longest shard's.

        Every shard reads the same files or query, so ``origins`` is one shard's, not their sum.
        """
        if not parts:
            raise ValueError("no summaries to combine")
        first = parts[0]
        if {(p.pipeline, p.window["start"], p.window["end"]) for p in parts} != {
            (first.pipeline, first.window["start"], first.window["end"])
        }:
            raise ValueError("summaries of different pipelines or windows cannot be combined")
        total = cls(
            pipeline=first.pipeline, window=dict(first.window), dry_run=first.dry_run, force=first.force
        )
        total.origins = max(p.origins for p in parts)
        for part in parts:
            for name in (
                "read",
                "sent",
                "already_sent",
                "batches",
                "retries",
                "throttled",
                "unsent",
                *USER_COUNTS,
            ):
                setattr(total, name, getattr(total, name) + getattr(part, name))
            total.truncated_values += part.truncated_values
            total.late_events += part.late_events
            total.past_bound_days.update(part.past_bound_days)
            total.waited_seconds = max(total.waited_seconds, part.waited_seconds)
            total.seconds = max(total.seconds, part.seconds)
            total.invalid.update(part.invalid)
            total.skipped.update(part.skipped)
            total.rejected.update(part.rejected)
        letters = sorted({p.dead_letters for p in parts if p.dead_letters})
        total.dead_letters = "; ".join(letters) or None
        total.shard = f"{len(parts)} shards"
        total.app_id = ", ".join(sorted({p.app_id for p in parts if p.app_id})) or None
        total.newest_sent = max((p.newest_sent for p in parts if p.newest_sent), default=None)
        return total

    def table(self) -> str:
        """A plain-text table for the task log."""
        verb = "would send" if self.dry_run else "sent"
        rows: list[tuple[str, Any]] = [
            ("pipeline", self.pipeline),
            ("window", f"{self.window['start']} .. {self.window['end']}"),
            ("Heap app", self.app_id or "any (no app id given)"),
            ("files/queries", self.origins),
            *([("shard", self.shard)] if self.shard else []),
            ("rows read", self.read),
            (f"events {verb}", self.sent),
            ("already sent (ledger)", self.already_sent),
            *([("new late events (within the bound)", self.late_events)] if self.late_events else []),
            ("batches", self.batches),
        ]
        rows += [(f"invalid: {k}", v) for k, v in sorted(self.invalid.items())]
        rows += [(f"rejected: {k}", v) for k, v in sorted(self.rejected.items())]
        rows += [(f"skipped: {k}", v) for k, v in sorted(self.skipped.items())]
        rows += [
            ("retries / 429s", f"{self.retries} / {self.throttled}"),
            ("waited for rate limits", f"{self.waited_seconds:.1f} s"),
            ("values truncated", self.truncated_values),
            *self._user_rows(),
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
        if self.users:
            rows.append(
                (
                    "users reconciliation",
                    f"users {self.users} = updated + unchanged + refused + unsent = "
                    f"{self.users - self.users_unaccounted}",
                )
            )
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)
