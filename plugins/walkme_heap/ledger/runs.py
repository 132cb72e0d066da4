"""Where a run is recorded: one row per replay (per shard) with its status, counts and dead letters.

Written when a run starts (``running``) and when it ends (``success`` or ``failed`` with the
message); the replay report reads the newest row of each pipeline, window and shard. A running
replay refreshes its record's heartbeat; a try that died (its worker killed, its pod lost) cannot
end its record, so a ``running`` record whose heartbeat is older than the heartbeat timeout is
``abandoned``: marked so when a run starts (``abandon_stale``), and shown so by ``latest``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from walkme_heap.ledger.database import LedgerDatabase, Table
from walkme_heap.window import Window

log = logging.getLogger(__name__)
# Airflow 3's default [scheduler] task_instance_heartbeat_timeout: after it, Airflow has given a
# try that stopped heartbeating up for dead. The operator passes the configured value.
HEARTBEAT_TIMEOUT = 300.0

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
        "heartbeat_epoch {real}",  # the running replay's last sign of life (the ledger's clock)
    ),
    added_columns=("shard", "heartbeat_epoch"),
)
# A running record is stale when its heartbeat, or the start of one an older version wrote (no
# heartbeat; started_at is ISO 8601 UTC from the same clock, so it compares as text), is older
# than the cutoff.
_STALE = (
    "status = 'running' AND ((heartbeat_epoch IS NOT NULL AND heartbeat_epoch < ?) "
    "OR (heartbeat_epoch IS NULL AND started_at < ?))"
)


class RunRecords:
    """The runs table."""

    def __init__(self, database: LedgerDatabase, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.clock = clock

    def _now(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).isoformat()

    def start(self, pipeline: str, window: Window, run_id: str | None, shard: str | None = None) -> int:
        """A ``running`` record, its heartbeat now; returns its id for ``heartbeat`` and ``finish``."""
        now = self.clock()
        with self.database.transaction():
            return self.database.insert(
                f"INSERT INTO {TABLE.name} (pipeline, window_label, window_start, window_end, run_id, "
                "status, started_at, shard, heartbeat_epoch) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                [
                    pipeline,
                    window.label,
                    window.start.isoformat(),
                    window.end.isoformat(),
                    run_id,
                    datetime.fromtimestamp(now, UTC).isoformat(),
                    shard,
                    now,
                ],
            )

    def heartbeat(self, record: int) -> None:
        """The run is alive. A record abandoned too soon (a run that could not beat for longer than
        the timeout, e.g. retrying one batch) is ``running`` again; an ended one is left alone."""
        self.database.write(
            f"UPDATE {TABLE.name} SET heartbeat_epoch = ?, status = 'running', message = NULL "
            "WHERE id = ? AND status IN ('running', 'abandoned')",
            [self.clock(), record],
        )

    def abandon_stale(self, heartbeat_timeout: float = HEARTBEAT_TIMEOUT) -> int:
        """Mark ``abandoned`` every ``running`` record without a heartbeat for ``heartbeat_timeout``
        seconds (its try died and cannot end it); returns how many. Any process may call it."""
        cutoff = self.clock() - heartbeat_timeout
        with self.database.transaction():
            cursor = self.database.execute(
                f"UPDATE {TABLE.name} SET status = 'abandoned', message = ? WHERE {_STALE}",
                [
                    _abandoned(heartbeat_timeout),
                    cutoff,
                    datetime.fromtimestamp(cutoff, UTC).isoformat(),
                ],
            )
            count = max(cursor.rowcount, 0)
        if count:
            log.info(
                "%d run record(s) without a heartbeat for %.0f s marked abandoned", count, heartbeat_timeout
            )
        return count

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

    def finish_failed(self, record: int, counts: dict[str, Any], message: str) -> None:
        """``finish`` as failed after an error that may have broken the connection: on a fresh
        connection when the open one fails. Raises only if that fails too."""
        try:
            self.finish(record, "failed", counts, None, message)
        except Exception:
            self.database.discard()
            self.finish(record, "failed", counts, None, message)

    def latest(self, heartbeat_timeout: float = HEARTBEAT_TIMEOUT) -> list[dict[str, Any]]:
        """The newest run of each pipeline, window and shard, newest windows first; a ``running``
        one without a heartbeat for ``heartbeat_timeout`` seconds is shown ``abandoned`` (read
        only: ``abandon_stale`` writes it)."""
        cutoff = self.clock() - heartbeat_timeout
        records = self.database.fetch_records(
            f"SELECT r.*, CASE WHEN {_STALE} THEN 1 ELSE 0 END AS stale FROM {TABLE.name} r "
            f"JOIN (SELECT max(id) AS id FROM {TABLE.name} "
            "GROUP BY pipeline, window_label, COALESCE(shard, '')) m ON r.id = m.id "
            "ORDER BY r.pipeline, r.window_start DESC, r.shard",
            [cutoff, datetime.fromtimestamp(cutoff, UTC).isoformat()],
        )
        for record in records:
            if record.pop("stale"):
                record.update(status="abandoned", message=_abandoned(heartbeat_timeout))
        return records


def _abandoned(heartbeat_timeout: float) -> str:
    return f"abandoned: no heartbeat for over {heartbeat_timeout:.0f} s (the try died)"
