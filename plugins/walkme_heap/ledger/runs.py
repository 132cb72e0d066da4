"""Where a run is recorded: one row per replay (per shard) with its status, counts and dead letters.

Written when a run starts (``running``) and when it ends (``success`` or ``failed`` with the
message); the replay report reads the newest row of each pipeline, window and shard.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from walkme_heap.ledger.database import LedgerDatabase, Table
from walkme_heap.window import Window

TABLE = Table(
    "walkme_heap_runs",
    columns=(
        "id {serial}",
        "pipeline VARCHAR(250) NOT NULL",
        "window_label VARCHAR(80) NOT NULL",
        "window_start VARCHAR(40) NOT NULL",
        "window_end VARCHAR(40) NOT NULL",
        "run_id VARCHAR(250)",
        "status VARCHAR(20) NOT NULL",
        "started_at VARCHAR(40) NOT NULL",
        "finished_at VARCHAR(40)",
        "read_rows INTEGER",
        "sent INTEGER",
        "already_sent INTEGER",
        "invalid INTEGER",
        "rejected INTEGER",
        "skipped INTEGER",
        "dead_letters VARCHAR(1000)",
        "message VARCHAR(2000)",
        "shard VARCHAR(20)",
    ),
    added_columns=("shard",),
)


class RunRecords:
    """The runs table."""

    def __init__(self, database: LedgerDatabase, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.clock = clock

    def _now(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).isoformat()

    def start(self, pipeline: str, window: Window, run_id: str | None, shard: str | None = None) -> int:
        """A ``running`` record; returns its id for ``finish``."""
        with self.database.transaction():
            return self.database.insert(
                f"INSERT INTO {TABLE.name} (pipeline, window_label, window_start, window_end, run_id, "
                "status, started_at, shard) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                [
                    pipeline,
                    window.label,
                    window.start.isoformat(),
                    window.end.isoformat(),
                    run_id,
                    self._now(),
                    shard,
                ],
            )

    def finish(
        self, record: int, status: str, counts: dict[str, Any], dead_letters: str | None, message: str = ""
    ) -> None:
        self.database.write(
            f"UPDATE {TABLE.name} SET status = ?, finished_at = ?, read_rows = ?, sent = ?, "
            "already_sent = ?, invalid = ?, rejected = ?, skipped = ?, dead_letters = ?, message = ? "
            "WHERE id = ?",
            [
                status,
                self._now(),
                counts.get("read"),
                counts.get("sent"),
                counts.get("already_sent"),
                counts.get("invalid"),
                counts.get("rejected"),
                counts.get("skipped"),
                dead_letters,
                message[:2000],
                record,
            ],
        )

    def latest(self) -> list[dict[str, Any]]:
        """The newest run of each pipeline, window and shard, newest windows first."""
        return self.database.fetch_records(
            f"SELECT r.* FROM {TABLE.name} r JOIN (SELECT max(id) AS id FROM {TABLE.name} "
            "GROUP BY pipeline, window_label, COALESCE(shard, '')) m ON r.id = m.id "
            "ORDER BY r.pipeline, r.window_start DESC, r.shard"
        )
