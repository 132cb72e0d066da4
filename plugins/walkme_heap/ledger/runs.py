"""Where a run is recorded: one row per replay (per shard) with its status, counts and dead letters.

Written when a run starts (``running``) and when it ends (``success`` or ``failed`` with the
message); the replay report reads the newest row of each pipeline, window and shard. A running
replay refreshes its record's heartbeat; a try that died (its worker killed, its pod lost) cannot
end its record, so a ``running`` record whose heartbeat is older than the heartbeat timeout is
``abandoned``: marked so when a run starts (``abandon_stale``), and shown so by ``latest``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from walkme_heap.ledger.database import METADATA, TABLE_OPTIONS, LedgerDatabase, long_text, serial_id
from walkme_heap.window import Window

log = logging.getLogger(__name__)
# Airflow 3's default [scheduler] task_instance_heartbeat_timeout: after it, Airflow has given a
# try that stopped heartbeating up for dead. The operator passes the configured value.
HEARTBEAT_TIMEOUT = 300.0

TABLE = sa.Table(
    "walkme_heap_runs",
    METADATA,
    serial_id(),
    sa.Column("pipeline", sa.String(250), nullable=False),
    sa.Column("window_label", sa.String(80), nullable=False),
    sa.Column("window_start", sa.String(40), nullable=False),
    sa.Column("window_end", sa.String(40), nullable=False),
    sa.Column("run_id", sa.String(250)),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("finished_at", sa.String(40)),
    sa.Column("read_rows", sa.Integer()),
    sa.Column("sent", sa.Integer()),
    sa.Column("already_sent", sa.Integer()),
    sa.Column("invalid", sa.Integer()),
    sa.Column("rejected", sa.Integer()),
    sa.Column("skipped", sa.Integer()),
    sa.Column("dead_letters", sa.String(1000)),
    sa.Column("message", sa.String(2000)),
    sa.Column("shard", sa.String(20)),  # added by a later version, as are the two below
    # the running replay's last sign of life (the ledger's clock)
    sa.Column("heartbeat_epoch", sa.Double()),
    # JSON, written by a run that read its whole source: {"missing": [[path, start, end] ...]
    # (files skipped as missing, with the window each was for), "recovered": [path ...] (missing
    # files of earlier runs it found and read), "past_bound": {event day: count}}
    sa.Column("late_data", long_text()),
    # user properties (a pipeline with user_properties; NULL otherwise): users Heap acknowledged,
    # users whose values Heap held already, users Heap refused
    sa.Column("users_updated", sa.Integer()),
    sa.Column("users_unchanged", sa.Integer()),
    sa.Column("users_refused", sa.Integer()),
    **TABLE_OPTIONS,
)
# A running record is stale when its heartbeat, or the start of one an older version wrote (no
# heartbeat; started_at is ISO 8601 UTC from the same clock, so it compares as text), is older
# than the cutoff.
_STALE = (
    "status = 'running' AND ((heartbeat_epoch IS NOT NULL AND heartbeat_epoch < ?) "
    "OR (heartbeat_epoch IS NULL AND started_at < ?))"
)


USER_COLUMNS = ("users_updated", "users_unchanged", "users_refused")


@dataclass(frozen=True)
class MissingFile:
    """A file a run skipped as missing (``on_missing: skip``), with the window it was read for."""

    path: str
    window: Window


@dataclass
class LateData:
    """What a run saw of late data, kept in its record (``late_data``): the files it skipped as
    missing, the missing files of earlier runs it found and read (each with the window it read it
    for), and its events past the bound per event day."""

    missing: list[MissingFile] = field(default_factory=list)
    recovered: list[MissingFile] = field(default_factory=list)
    past_bound: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        def files(entries: list[MissingFile]) -> list[list[str]]:
            return [[m.path, m.window.start.isoformat(), m.window.end.isoformat()] for m in entries]

        data = {"missing": files(self.missing), "recovered": files(self.recovered)}
        return json.dumps({**data, "past_bound": self.past_bound}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> LateData:
        data = json.loads(text) if text else {}

        def files(key: str) -> list[MissingFile]:
            # [path, start, end]; a bare path (a development build's "recovered") is skipped
            return [
                MissingFile(path, Window(datetime.fromisoformat(start), datetime.fromisoformat(end)))
                for path, start, end in (e for e in data.get(key, ()) if isinstance(e, list) and len(e) == 3)
            ]

        return cls(
            missing=files("missing"),
            recovered=files("recovered"),
            past_bound={str(k): int(v) for k, v in (data.get("past_bound") or {}).items()},
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
        self,
        record: int,
        status: str,
        counts: dict[str, Any],
        dead_letters: str | None,
        message: str = "",
        late_data: LateData | None = None,
    ) -> None:
        """End a record. ``late_data``: what a run that read its whole source saw of late data."""
        self.database.write(
            f"UPDATE {TABLE.name} SET status = ?, finished_at = ?, read_rows = ?, sent = ?, "
            "already_sent = ?, invalid = ?, rejected = ?, skipped = ?, dead_letters = ?, message = ?, "
            "late_data = ?, users_updated = ?, users_unchanged = ?, users_refused = ? WHERE id = ?",
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
                None if late_data is None else late_data.to_json(),
                *(counts.get(name) if counts.get("users") else None for name in USER_COLUMNS),
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

    def missing_files(
        self, pipeline: str, within: Window, shard: str | None = None, rerun_of: str | None = None
    ) -> list[MissingFile]:
        """What a run re-checks: files that runs of ``pipeline`` skipped as missing, for windows
        that start within ``within``, and that no later run of the same shard (or an unsharded run)
        has found since; and, for a re-run of window ``rerun_of``, the files its earlier runs found
        (a re-run reads what its window read, whatever the bound now: its dead letters and counts
        replace theirs). A file recorded missing by several runs is one entry per window."""
        rows = self.database.fetch(
            f"SELECT id, shard, window_label, late_data FROM {TABLE.name} "
            "WHERE pipeline = ? AND late_data IS NOT NULL "
            "AND ((window_end > ? AND window_start < ?) OR window_label = ?) ORDER BY id",
            [pipeline, within.start.isoformat(), within.end.isoformat(), rerun_of],
        )
        missing: dict[tuple[str, str, str], tuple[int, MissingFile]] = {}
        recovered: dict[str, int] = {}  # path -> the newest record that found it (this shard's view)
        again: dict[tuple[str, str, str], MissingFile] = {}  # what this window's earlier runs read
        for record, record_shard, label, text in rows:
            data = LateData.from_json(text)
            for entry in data.missing:
                if within.start <= entry.window.start < within.end:
                    missing[_key(entry)] = (record, entry)
            if record_shard not in (None, shard):
                continue
            for entry in data.recovered:
                if label == rerun_of:
                    again[_key(entry)] = entry
                else:
                    recovered[entry.path] = record
        outstanding = {k: e for k, (record, e) in missing.items() if recovered.get(e.path, -1) < record}
        return list({**outstanding, **again}.values())

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

    def past_bound_per_day(self) -> list[tuple[str, str, int]]:
        """(pipeline, event day, events later than the lateness bound), in that order: per window and
        shard, what its newest record that read the whole source found (a re-run of a window
        replaces its earlier count, it does not add to it), summed over windows and shards.

        Newest as ``latest`` picks it, among the records that hold late data: a run still going, or
        one that stopped on an error (neither knows the window's count), leaves the last known one.
        """
        rows = self.database.fetch(
            f"SELECT r.pipeline, r.late_data FROM {TABLE.name} r "
            f"JOIN (SELECT max(id) AS id FROM {TABLE.name} WHERE late_data IS NOT NULL "
            "GROUP BY pipeline, window_label, COALESCE(shard, '')) m ON r.id = m.id"
        )
        counts: dict[tuple[str, str], int] = {}
        for pipeline, text in rows:
            for day, events in LateData.from_json(text).past_bound.items():
                if events:
                    counts[(str(pipeline), day)] = counts.get((str(pipeline), day), 0) + events
        return [(pipeline, day, events) for (pipeline, day), events in sorted(counts.items())]


def _key(entry: MissingFile) -> tuple[str, str, str]:
    return entry.path, entry.window.start.isoformat(), entry.window.end.isoformat()


def _abandoned(heartbeat_timeout: float) -> str:
    return f"abandoned: no heartbeat for over {heartbeat_timeout:.0f} s (the try died)"
