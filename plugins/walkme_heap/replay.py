"""The replay of one window, start to end, as the data flows:

read (``sources``) -> this shard's rows (``sharding``) -> map (``mapping``) -> what is new
(``dedupe``: in-run repeats, the ledger) -> the outbox (``delivery``: pace, batch, send, record)
-> summarise (``summary``); every row that is not sent becomes an outcome (``outcomes``).

No Airflow import: the operator adapts this to a task; tests and benchmarks call it directly.
Every row read ends in exactly one bucket: sent, already sent, skipped, invalid or rejected.

Temporary files (the seen keys of a large window; the dead letters, made by the caller) go to the
pipeline's working folder, where a run first removes what runs that died left (``home``). A run that
did not read the whole window (its ``row_limit`` reached, or a missing file its source skipped)
publishes its dead letters as partial, beside the complete run's (``deadletters``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np

from walkme_heap.deadletters import DeadLetters
from walkme_heap.dedupe import DEFAULT_MEMORY_KEYS, NewEventFilter
from walkme_heap.delivery.batching import Batch
from walkme_heap.delivery.budget import app_budget
from walkme_heap.delivery.client import HeapClient
from walkme_heap.delivery.outbox import DryRunOutbox, Outbox, Undelivered
from walkme_heap.delivery.sender import RetryPolicy
from walkme_heap.delivery.user_properties import UserSync, UserSyncOptions
from walkme_heap.garbage_collection import fewer_collections
from walkme_heap.heap_api import (
    APP_EVENTS_PER_MINUTE,
    DEFAULT_MAX_BATCH_BYTES,
    IDENTITY_EVENTS_PER_MINUTE,
    MAX_EVENTS_PER_REQUEST,
    USER_PROPERTIES_REQUESTS_PER_WINDOW,
)
from walkme_heap.home import default_work_dir, remove_stale_files
from walkme_heap.ledger import Ledger
from walkme_heap.ledger.runs import HEARTBEAT_TIMEOUT, LateData, MissingFile
from walkme_heap.ledger.user_properties import UserPropertyStates
from walkme_heap.mapping.columns import MissingColumnsError, bind_columns
from walkme_heap.mapping.mapper import LATE, Mapper
from walkme_heap.mapping.spec import MappingSpec
from walkme_heap.mapping.timestamps import format_ms
from walkme_heap.mapping.user_properties import LatestUserValues, UserPropertyNameError
from walkme_heap.outcomes import Outcomes
from walkme_heap.progress import PROGRESS_SECONDS, Progress
from walkme_heap.sharding import Shard
from walkme_heap.sources.base import Chunk, Source, SourceError
from walkme_heap.summary import ReplaySummary
from walkme_heap.window import Window

log = logging.getLogger(__name__)


class ReplayError(RuntimeError):
    """The run stopped; ``summary`` says how far it got (everything sent is in the ledger)."""

    def __init__(self, message: str, summary: ReplaySummary) -> None:
        super().__init__(message)
        self.summary = summary


class DeliveryError(ReplayError):
    """Heap did not acknowledge a batch within the retry budget, or refused the request.

    ``retryable`` is False when a later try cannot succeed as configured (a redirect, 401/403/404,
    a refusal of every event): the task fails without Airflow retries.
    """

    def __init__(self, message: str, summary: ReplaySummary, *, retryable: bool = True) -> None:
        super().__init__(message, summary)
        self.retryable = retryable


class TooManyInvalid(ReplayError):
    """Every good event was sent, but more rows than ``max_invalid_ratio`` were invalid."""


@dataclass
class ReplayOptions:
    dry_run: bool = False
    force: bool = False  # ignore the ledger: send the whole window again (Heap drops repeats)
    max_events: int = MAX_EVENTS_PER_REQUEST
    max_bytes: int = DEFAULT_MAX_BATCH_BYTES
    app_limit: int | None = APP_EVENTS_PER_MINUTE
    identity_limit: int | None = IDENTITY_EVENTS_PER_MINUTE
    # add_user_properties requests per 30 s naming one identity (None: no pacing)
    user_requests_per_identity: int | None = USER_PROPERTIES_REQUESTS_PER_WINDOW
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_invalid_ratio: float = 0.1
    run_id: str | None = None
    sample_payloads: int = 3
    pending_events: int = 20_000  # events waiting for budget before reading stops
    row_limit: int | None = None  # a trial run: stop reading after this many rows
    shard: Shard | None = None  # replay only this shard's rows (identities hashed into K shards)
    dedupe_memory_keys: int = DEFAULT_MEMORY_KEYS  # seen keys in memory before they go to disk
    progress_seconds: float = PROGRESS_SECONDS  # at most one progress line this often
    clock: Callable[[], float] = time.monotonic  # pacing, retries and progress (tests inject one)
    sleep: Callable[[float], None] = time.sleep
    # The Heap app whose acknowledgements count as "already sent" when there is no client (a dry
    # run: the connection's app); with a client, the client's. None in a dry run: any app's.
    app_id: str | None = None
    # A running record without a heartbeat this long is abandoned (Airflow's task heartbeat
    # timeout: the operator passes the configured one); the run beats every fifth of it.
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT
    # How late events may arrive: the run also sends the events of this many seconds before its
    # window that its source holds (late arrivals, in the files of later days or loaded later);
    # older ones are ``later_than_lateness`` and dead-lettered. None: events before the window are
    # another run's (``outside_window``), as for a source partitioned by event time.
    lateness_seconds: int | None = None

    def accepted(self, window: Window) -> Window:
        """The event times this run sends: its window, opened ``lateness_seconds`` earlier."""
        if not self.lateness_seconds:
            return window
        return Window(window.start - timedelta(seconds=self.lateness_seconds), window.end)


class _Run:
    """One window's rows through the stages; ``run()`` drives them."""

    def __init__(
        self,
        pipeline: str,
        source: Source,
        spec: MappingSpec,
        window: Window,
        client: HeapClient | None,
        options: ReplayOptions,
        ledger: Ledger | None,
        dead_letters: DeadLetters | None,
        acknowledged: np.ndarray,
        work_dir: Path,
        user_states: UserPropertyStates | None = None,
    ) -> None:
        self.pipeline, self.source, self.spec, self.window = pipeline, source, spec, window
        self.client, self.user_states = client, user_states
        # each identity's latest user attribute values (a pipeline with ``user_properties``)
        self.users = LatestUserValues(spec.user_properties) if spec.user_properties is not None else None
        self.accepted = options.accepted(window)
        self._window_stamp = format_ms(np.array([window.start_ms]))[0]  # as events' timestamps read
        self.options, self.ledger = options, ledger
        shard = options.shard
        self.summary = ReplaySummary(
            pipeline=pipeline,
            window=window.as_dict(),
            dry_run=options.dry_run,
            force=options.force,
            shard=f"{shard.index + 1}/{shard.count}" if shard else None,
        )
        # This process's acknowledgements in the ledger (a retry of the same Airflow run is another
        # process whose earlier sends still count against the shared budget).
        shard_tag = f"#{shard.label}" if shard else ""
        self.run_token = f"{options.run_id or 'walkme-heap'}{shard_tag}#{uuid.uuid4().hex[:12]}"
        self.app_id = client.app_id if client is not None else None
        self.outcomes = Outcomes(self.summary, dead_letters)
        self.new_events = NewEventFilter(acknowledged, options.dedupe_memory_keys, work_dir)
        self.progress = Progress(
            self.summary,
            pending=lambda: self.outbox.pending,
            fraction=getattr(source, "progress", lambda: None),  # a source may not know
            every=options.progress_seconds,
            clock=options.clock,
        )
        self.outbox = (
            self._outbox(client)
            if client is not None
            else DryRunOutbox(
                self.summary,
                options.sample_payloads,
                outcomes=self.outcomes,
                app_id=options.app_id,
                max_events=options.max_events,
                max_bytes=options.max_bytes,
            )
        )

    def _outbox(self, client: HeapClient) -> Outbox:
        options = self.options
        budget = app_budget(
            options.app_limit,
            ledger=self.ledger,
            app_id=client.app_id,
            holder=self.run_token,
            retry_seconds=options.retry.max_seconds,
            clock=options.clock,
            per_identity=options.identity_limit is not None,
        )
        return Outbox(
            client,
            budget=budget,
            identity_limit=options.identity_limit,
            max_events=options.max_events,
            max_bytes=options.max_bytes,
            retry=options.retry,
            pending_events=options.pending_events,
            outcomes=self.outcomes,
            summary=self.summary,
            record=self._record,
            progress=self.progress.tick,
            clock=options.clock,
            sleep=options.sleep,
        )

    def _record(self, batch: Batch) -> None:
        if self.ledger is not None:
            self.ledger.acks.record(
                self.pipeline, self.run_token, batch.events, self.app_id, late_before=self._window_stamp
            )

    def run(self) -> ReplaySummary:
        summary = self.summary
        origins = self.source.origins()
        self.origin_windows: dict[str, Window] = dict(getattr(self.source, "origin_windows", None) or {})
        if self.origin_windows:
            log.info(
                "%d file(s) that earlier runs skipped as missing are here now: read for their own windows",
                len(self.origin_windows),
            )
        # Bind every origin's columns first: a missing column fails before anything is sent. A file
        # that landed after its own run and cannot be read is left for later runs (and logged), so
        # one bad late file does not fail every run within the bound.
        mappers: dict[str, Mapper] = {}
        for origin in origins:
            try:
                headers = self.source.headers(origin)
                mapper = Mapper(self.spec, bind_columns(self.spec, headers, origin))
                mapper.check_user_columns(headers)
                mappers[origin] = mapper
            except (MissingColumnsError, SourceError) as exc:
                # a name Heap refuses is the configuration's problem, not the late file's: it fails
                if origin not in self.origin_windows or isinstance(exc, UserPropertyNameError):
                    raise
                log.warning(
                    "%s landed after its run but cannot be read (%s): not read now; later runs within "
                    "the bound look for it again, and it stays missing in the ledger",
                    origin,
                    exc,
                )
                del self.origin_windows[origin]
                self.source.unread(origin)  # type: ignore[attr-defined]
        origins = [o for o in origins if o in mappers]
        summary.origins = len(origins)
        for chunk, mapper in self._chunks(origins, mappers):
            self._chunk(chunk, mapper)
        try:
            self.outbox.finish()
            if self.users is not None:
                self._send_users(self.users)
        except Undelivered as exc:  # caused by RetriesExhausted, HeapRefused or lasting 429s
            raise DeliveryError(str(exc), summary, retryable=exc.retryable) from exc.__cause__
        self.progress.log()
        summary.invalid = +summary.invalid
        summary.skipped = +summary.skipped
        summary.seconds = self.progress.elapsed()
        summary.waited_seconds = self.outbox.waited_seconds
        if summary.unaccounted:
            raise AssertionError(f"counts do not reconcile: {summary.unaccounted} rows unaccounted")
        if summary.users_unaccounted:
            raise AssertionError(
                f"user counts do not reconcile: {summary.users_unaccounted} users unaccounted"
            )
        return summary

    def _send_users(self, users: LatestUserValues) -> None:
        """After the events: each identity's latest attribute values, what changed, to Heap."""
        options = self.options
        UserSync(
            self.pipeline,
            self.client,
            self.user_states,
            self.summary.app_id,
            UserSyncOptions(
                dry_run=options.dry_run,
                force=options.force,
                max_bytes=options.max_bytes,
                retry=options.retry,
                requests_per_identity=options.user_requests_per_identity,
                progress_seconds=options.progress_seconds,
                clock=options.clock,
                sleep=options.sleep,
            ),
            self.summary,
            self.outcomes,
            heartbeat=self.progress.tick,
        ).send(users)

    def _chunks(self, origins: list[str], mappers: dict[str, Mapper]) -> Iterator[tuple[Chunk, Mapper]]:
        """Every origin's chunks in order; a trial run's ``row_limit`` stops reading early."""
        limit = self.options.row_limit
        for origin in origins:
            for chunk in self.source.chunks(origin):
                if limit is not None:
                    room = limit - self.summary.read
                    if room <= 0:
                        break
                    if len(chunk.frame) > room:
                        chunk = dataclasses.replace(chunk, frame=chunk.frame.iloc[:room], malformed=[])
                yield chunk, mappers[origin]
            if limit is not None and self.summary.read >= limit:
                log.info("row limit %d reached: the rest of the window is not read (a trial run)", limit)
                return

    def _chunk(self, chunk: Chunk, mapper: Mapper) -> None:
        self.progress.tick()  # also while reading what needs no sending (the run record's heartbeat)
        if self.options.shard is not None:
            chunk = self.options.shard.own_rows(chunk, mapper.bound.roles.get("identity"))
        self.summary.read += len(chunk.frame) + len(chunk.malformed)
        self.outcomes.malformed(chunk)
        if chunk.frame.empty:
            return
        window = self.origin_windows.get(chunk.origin, self.window)  # a re-checked file: its own run's
        mapped = mapper.map_chunk(
            chunk.frame,
            self.options.accepted(window).start_ms,
            window.end_ms,
            escaped=chunk.escaped,
            before_window=LATE if self.options.lateness_seconds is not None else "outside_window",
        )
        self.summary.past_bound_days.update(mapped.too_late_days)
        self.outcomes.mapped(chunk, mapped)
        if self.users is not None and mapped.users is not None:
            self.users.add(mapped.users)
            self.summary.user_values_truncated += mapped.truncated_user_values
        if not mapped.events:
            return
        new = self.new_events.select(mapped.events, mapped.hashes)
        self.outcomes.new(new)
        if self.accepted.start < self.window.start:  # new events from the margin: late arrivals
            self.summary.late_events += sum(e["timestamp"] < self._window_stamp for e in new.events)
        try:
            self.outbox.put(new.events)
        except Undelivered as exc:
            raise DeliveryError(str(exc), self.summary, retryable=exc.retryable) from exc.__cause__


def replay(
    pipeline: str,
    source: Source,
    spec: MappingSpec,
    window: Window,
    client: HeapClient | None,
    options: ReplayOptions | None = None,
    *,
    ledger: Ledger | None = None,
    dead_letters: DeadLetters | None = None,
    work_dir: str | Path | None = None,
) -> ReplaySummary:
    """Replay one window. Raises DeliveryError (Heap did not acknowledge) or TooManyInvalid; any
    other error (a ledger write that failed after Heap answered ...) is raised as it came.

    :param work_dir: the pipeline's working folder for temporary files; default
        ``home.default_work_dir(pipeline)``.
    """
    options = options or ReplayOptions()
    if client is None and not options.dry_run:
        raise ValueError("a Heap client is needed unless dry_run is set")
    if client is not None and options.app_id not in (None, client.app_id):
        raise ValueError(f"options.app_id {options.app_id!r} is not the client's app {client.app_id!r}")
    app_id = client.app_id if client is not None else options.app_id
    log.info(
        "pipeline '%s'%s: replaying %s (%s .. %s)%s%s",
        pipeline,
        f" {options.shard.label}" if options.shard else "",
        window.label,
        window.start.isoformat(),
        window.end.isoformat(),
        " as a dry run: nothing will be sent or written" if options.dry_run else "",
        " with force: events already sent are sent again (Heap ignores the repeats)" if options.force else "",
    )
    work = Path(work_dir) if work_dir is not None else default_work_dir(pipeline)
    remove_stale_files(work)  # left by runs of the pipeline that died (the live ones' are locked)
    accepted = options.accepted(window)
    rechecks = _rechecks(pipeline, source, window, ledger, options)
    acknowledged = np.empty(0, dtype=np.uint64)
    if ledger is not None and not options.force:  # a dry run reads it too, for honest counts
        # Per app: Heap accepts any app id silently, and what one app holds is not in another.
        # A re-checked file's events are judged by its own window: their days too.
        days = {day for w in [accepted, *(options.accepted(w) for _, w in rechecks)] for day in w.days()}
        acknowledged = ledger.acks.acknowledged(pipeline, sorted(days), app_id=app_id)
        log.info(
            "already sent: what the ledger holds for %s",
            f"Heap app {app_id}" if app_id is not None else "any Heap app (no app id given)",
        )
    # What Heap holds of users' properties: read by a dry run too (honest counts), written by others.
    user_states = ledger.user_properties if ledger is not None and spec.user_properties is not None else None
    if options.dry_run:  # a dry run writes nothing: no ledger rows, no dead letters
        client, ledger = None, None
        if dead_letters is not None:
            dead_letters.discard()
            dead_letters = None
    run = _Run(
        pipeline, source, spec, window, client, options, ledger, dead_letters, acknowledged, work, user_states
    )
    run.summary.app_id = app_id
    runs = ledger.runs if ledger is not None else None
    record = None
    if runs is not None:
        runs.abandon_stale(options.heartbeat_timeout)  # records of tries that died (earlier ones of this)
        record = runs.start(pipeline, window, options.run_id, run.summary.shard)

        def heartbeat() -> None:
            """Best effort: the acknowledgements, not the heartbeat, must be written, and fail loudly."""
            try:
                runs.heartbeat(record)
            except Exception as exc:
                log.warning("run record %d: heartbeat not written (%s: %s)", record, type(exc).__name__, exc)

        run.progress.also_every(options.heartbeat_timeout / 5, heartbeat)
    try:
        with fewer_collections():
            summary = run.run()
        if run.new_events.seen.spilled:
            log.info(
                "%d distinct event keys were checked for repeats on disk (a large window)",
                len(run.new_events.seen),
            )
        location = None
        if dead_letters is not None:  # a publish that fails fails the run (its record says so)
            partial = _partial(summary, source, options)
            location = dead_letters.commit(partial=bool(partial))
            if partial:
                log.info("dead letters of a partial run (%s): %s; complete runs' are kept", partial, location)
    except BaseException as exc:
        run.summary.seconds = run.progress.elapsed()
        if dead_letters is not None:
            dead_letters.discard()
        if runs is not None and record is not None:
            try:  # on a fresh connection if this error broke the ledger's
                runs.finish_failed(record, run.summary.as_dict(), str(exc))
            except Exception as failure:  # never instead of the run's own error
                log.warning(
                    "run record %d could not be marked failed (%s: %s); it stays 'running' until a "
                    "later run finds it abandoned",
                    record,
                    type(failure).__name__,
                    failure,
                )
        raise
    finally:
        run.new_events.close()
    summary.dead_letters = location
    # A shard is not judged alone: rows without an identity all land in shard 1. The day's summary
    # task applies the bound to the day.
    message = "" if options.shard else too_many_invalid(summary, options.max_invalid_ratio, location)
    if runs is not None and record is not None:
        late_data = None  # a trial run that stopped at its row limit saw only part of its files
        if not (options.row_limit is not None and summary.read >= options.row_limit):
            late_data = LateData(
                missing=[MissingFile(path, part) for path, part in getattr(source, "missing_windows", ())],
                recovered=[MissingFile(path, part) for path, part in getattr(source, "recovered", ())],
                past_bound=dict(sorted(summary.past_bound_days.items())),
            )
        status = "failed" if message else "success"
        runs.finish(record, status, summary.as_dict(), location, message, late_data)
    if message:
        raise TooManyInvalid(message, summary)
    return summary


def _rechecks(
    pipeline: str, source: Source, window: Window, ledger: Ledger | None, options: ReplayOptions
) -> list[tuple[str, Window]]:
    """Files earlier runs skipped as missing whose windows are within this run's lateness bound
    (and those an earlier run of this window found): handed to a file source to look for again (a
    report that landed after its day's run)."""
    if ledger is None or options.lateness_seconds is None or not hasattr(source, "recheck"):
        return []
    shard = f"{options.shard.index + 1}/{options.shard.count}" if options.shard else None
    missing = ledger.runs.missing_files(pipeline, options.accepted(window), shard, rerun_of=window.label)
    files = [(m.path, m.window) for m in missing]
    if files:
        log.info("%d file(s) earlier runs skipped as missing are looked for again", len(files))
    source.recheck(files)
    return files


def late_replay_params(window: Window, oldest_late_day: str | None) -> dict[str, str]:
    """The ``start`` / ``end`` params of the manual run that sends the events a run found later than
    its lateness: from the oldest one's day through the whole last day of this run's window (``end``
    is exclusive, so a window ending mid-day still reads the file of its last day)."""
    last_day = (window.end - timedelta(microseconds=1)).date()
    start = oldest_late_day or window.start.date().isoformat()
    return {"start": start, "end": (last_day + timedelta(days=1)).isoformat()}


def late_hint(dag_id: str, summary: ReplaySummary, window: Window, lateness: str = "") -> str:
    """The warning for events a run found later than its lateness ("" when none): how many, where
    they are kept, and the manual run that sends them."""
    count = summary.skipped.get(LATE, 0)
    if not count:
        return ""
    params = late_replay_params(window, summary.oldest_late_day)
    letters = summary.dead_letters or ("a dry run keeps none" if summary.dry_run else "none kept")
    return (
        f"{count} event(s) arrived later than the pipeline's lateness{f' ({lateness})' if lateness else ''} "
        f"allows: not sent, kept in the dead letters ({letters}). "
        "To send them, trigger a manual run from their day through this window's last day: "
        f"airflow dags trigger {dag_id} --conf '{json.dumps(params)}'"
    )


def _partial(summary: ReplaySummary, source: Source, options: ReplayOptions) -> str:
    """Why this run did not read the whole window ("" when it did): its dead letters must not
    replace a complete run's."""
    if options.row_limit is not None and summary.read >= options.row_limit:
        return f"a trial run: its row limit of {options.row_limit} was reached"
    missing = list(getattr(source, "missing", None) or ())
    if missing:
        return f"{len(missing)} missing file(s) skipped: {', '.join(map(str, missing[:3]))}" + (
            " ..." if len(missing) > 3 else ""
        )
    return ""


def too_many_invalid(summary: ReplaySummary, max_ratio: float, dead_letters: str | None) -> str:
    """The failure message when more rows than ``max_ratio`` were invalid or rejected, else ""."""
    bad = summary.total_invalid + summary.total_rejected
    if not summary.read or bad / summary.read <= max_ratio:
        return ""
    return (
        f"{bad} of {summary.read} rows ({bad / summary.read:.1%}) were invalid or rejected, "
        f"over max_invalid_ratio {max_ratio:.1%}; every valid event was sent. "
        f"Dead letters: {dead_letters or 'not kept'}"
    )
