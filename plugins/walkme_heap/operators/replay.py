"""WalkMeToHeapOperator: replay one window of WalkMe events into Heap."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException
from airflow.sdk.observability import stats

from walkme_heap.config import (
    DEFAULT_HEAP_CONN_ID,
    DEFAULT_LEDGER_CONN_ID,
    ConfigError,
    parse_mapping,
    parse_source,
)
from walkme_heap.connections import UnusableConnection
from walkme_heap.deadletters import DeadLetters, DeadLettersUnwritable
from walkme_heap.delivery.client import HeapClient, HeapConfigError
from walkme_heap.home import default_dead_letters, default_work_dir
from walkme_heap.hooks.connections import AirflowConnections
from walkme_heap.hooks.heap import HeapHook, how_to_define
from walkme_heap.ledger import Ledger, open_ledger
from walkme_heap.ledger.runs import HEARTBEAT_TIMEOUT
from walkme_heap.links import ReplayReportLink
from walkme_heap.mapping.columns import MissingColumnsError
from walkme_heap.mapping.spec import MappingSpec
from walkme_heap.metrics import emit as emit_metrics
from walkme_heap.operators.lineage import ReplayRecord, replay_lineage
from walkme_heap.operators.outlets import announce
from walkme_heap.replay import DeliveryError, ReplayOptions, TooManyInvalid, late_hint, replay
from walkme_heap.run_params import row_limit, truthy
from walkme_heap.sharding import Shard
from walkme_heap.sources.base import SourceError, SourceMissingError
from walkme_heap.sources.factory import open_source
from walkme_heap.sources.spec import SourceSpec
from walkme_heap.summary import ReplaySummary
from walkme_heap.window import Window, resolve_window

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context


def task_heartbeat_timeout() -> float:
    """Airflow's ``[scheduler] task_instance_heartbeat_timeout``: a try silent for that long is
    failed by the scheduler, so a run record without a heartbeat for as long is abandoned."""
    return conf.getfloat("scheduler", "task_instance_heartbeat_timeout", fallback=HEARTBEAT_TIMEOUT)


class WalkMeToHeapOperator(BaseOperator):
    """Replay the WalkMe events of one window into Heap's bulk track API.

    The window is ``[start, end)`` from the run's ``start`` / ``end`` params when set (a UI run),
    else the run's data interval. Returns a small summary dict (XCom): rows read, events sent,
    invalid and skipped rows by reason, batches, seconds; the counts also go to Airflow's metrics
    when ``[metrics]`` turns them on (``walkme_heap.metrics``). Configuration problems (the window, the
    source, missing columns, too many invalid rows) fail the task without Airflow retries; a day
    whose file is missing and Heap not acknowledging are retried. With an asset outlet (the DAG
    factory's), its event says the window is in Heap; a dry or trial run ends skipped instead (no
    event; see ``operators.outlets``). OpenLineage: ``get_openlineage_facets_on_complete``.

    :param pipeline: the pipeline's name, used in messages and the summary.
    :param source: where rows come from: a ``SourceSpec`` (the DAG factory passes the parsed
        pipeline's), or a dict as in pipelines.yaml: files (``{"type": "csv"|"jsonl", "path": ...,
        "conn_id": ..., "on_missing": "fail"|"skip", "chunk_rows": ...}``; the path may hold
        ``{date:%Y-%m-%d}`` for each day of the window) or a SQL connection (``{"type": "sql",
        "conn_id": ..., "table": ..., "time_column": ..., "time_type": ...}`` or ``"query_file"``,
        optional ``"order_by"``, ``"payload_column"``). Templated (a spec's text settings).
    :param mapping: how rows become events: a ``MappingSpec``, or a dict as in pipelines.yaml
        (preset, columns, event_name, properties, include_non_production).
    :param heap_conn_id: the Heap connection (host = base URL, login = app_id).
    :param ledger_conn_id: a SQL connection (common-sql) for the ledger of acknowledged events; when
        it is not defined, a SQLite file under ``$AIRFLOW_HOME/walkme_heap/`` is used.
    :param dead_letters: where dead letters go (local path or fsspec URL): JSON Lines files per
        pipeline and window, a new version per run on object stores, a partial run's (a trial's
        ``limit``, a skipped missing day) under ``partial/`` (see ``deadletters``). Default
        ``$AIRFLOW_HOME/walkme_heap/dead_letters``. Templated.
    :param dead_letters_conn_id: an Airflow connection for an object-storage dead-letter location.
    :param max_invalid_ratio: fail the task (after every valid event is sent) when more than this
        share of the rows read were invalid or rejected. A shard's task does not judge it: the day's
        summary task does (rows without an identity all land in one shard).
    :param dry_run: map and count without any HTTP call or write; the ``dry_run`` param also turns it
        on. Templated.
    :param force: send the whole window again, ignoring the ledger (Heap drops the repeats by key);
        the ``force`` param also turns it on. Templated.
    :param max_span_days: the longest range a UI run may ask for through ``start`` / ``end``.
    :param config_dir: directory that relative paths of a dict ``source`` are resolved against.
    :param shard: replay only this shard (0-based) of the window's rows, split by a stable hash of
        the identity into ``shards`` parts; set by dynamic task mapping (``expand(shard=...)``).
    :param shards: how many shards the window is split into (1: no split).
    :param lateness_seconds: how late events may arrive: the run also sends the events of this many
        seconds before its window that its source holds (files are read for the run's days, as
        they arrive; a SQL source bounded by event time re-reads that much before the window), and
        counts older ones ``later_than_lateness`` (dead-lettered, with how to replay them). None
        (the default when the operator is used alone): events before the window are another run's
        (``outside_window``). Pipelines set it with ``lateness`` (default 2 days).
    """

    template_fields: Sequence[str] = ("source", "dry_run", "force", "dead_letters")
    operator_extra_links = (ReplayReportLink(),)
    template_fields_renderers = {"source": "json"}
    ui_color = "#e8e0ff"

    def __init__(
        self,
        *,
        pipeline: str,
        source: SourceSpec | dict[str, Any],
        mapping: MappingSpec | dict[str, Any] | None = None,
        heap_conn_id: str = DEFAULT_HEAP_CONN_ID,
        ledger_conn_id: str = DEFAULT_LEDGER_CONN_ID,
        dead_letters: str | None = None,
        dead_letters_conn_id: str | None = None,
        max_invalid_ratio: float = 0.1,
        dry_run: bool | str = False,
        force: bool | str = False,
        max_span_days: int = 92,
        config_dir: str | None = None,
        shard: int | None = None,
        shards: int = 1,
        lateness_seconds: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.source = source
        self.mapping = mapping
        self.heap_conn_id = heap_conn_id
        self.ledger_conn_id = ledger_conn_id
        self.dead_letters = dead_letters
        self.dead_letters_conn_id = dead_letters_conn_id
        self.max_invalid_ratio = max_invalid_ratio
        self.dry_run = dry_run
        self.force = force
        self.max_span_days = max_span_days
        self.config_dir = config_dir
        self.shard = shard
        self.shards = shards
        self.lateness_seconds = lateness_seconds

    # -- what to replay: checked before anything is opened ---------------------------------------------
    def _request(self, context: Context, where: str) -> tuple[Window, SourceSpec, MappingSpec, ReplayOptions]:
        params = dict(context.get("params") or {})
        try:
            window = resolve_window(
                params,
                context.get("data_interval_start"),
                context.get("data_interval_end"),
                max_span=timedelta(days=self.max_span_days),
            )
            source = parse_source(self.source, where, Path(self.config_dir or "."))
            mapping = parse_mapping(self.mapping, where)
            options = ReplayOptions(
                dry_run=truthy(self.dry_run) or truthy(params.get("dry_run")),
                force=truthy(self.force) or truthy(params.get("force")),
                max_invalid_ratio=self.max_invalid_ratio,
                run_id=context.get("run_id"),
                row_limit=row_limit(params.get("limit")),
                shard=Shard.of(self.shard, self.shards),
                heartbeat_timeout=task_heartbeat_timeout(),
                lateness_seconds=self.lateness_seconds,
            )
        except ConfigError as exc:  # its message names the pipeline and the key
            raise AirflowFailException(str(exc)) from None
        except ValueError as exc:  # the window, a param or the shard (WindowError, ParamError ...)
            raise AirflowFailException(f"{where}: {exc}") from None
        return window, source, mapping, options

    # -- what it needs: the source, Heap, the ledger, the dead letters -----------------------------------
    def _heap(self, options: ReplayOptions, where: str) -> tuple[HeapClient, ReplayOptions]:
        """The Heap client, and the options with the connection's batch, rate and retry settings.
        A connection that is missing or unusable fails the task at once (no retry can fix it), with
        what is wrong and how to define it."""
        hook = HeapHook(heap_conn_id=self.heap_conn_id)
        try:
            client = hook.get_conn()
            settings = hook.settings()
        except AirflowNotFoundException:
            # Airflow answers "not found" also for a connection it could not read (a malformed
            # AIRFLOW_CONN_ value, a secrets backend that failed)
            problem = f"Heap connection '{self.heap_conn_id}' is not defined (or could not be read)"
        except (HeapConfigError, ValueError) as exc:  # ValueError: an extra that is no number
            problem = f"Heap {exc}" if str(exc).startswith("connection ") else f"Heap connection: {exc}"
        else:
            return client, replace(
                options,
                max_events=settings.max_batch_events,
                max_bytes=settings.max_batch_bytes,
                app_limit=settings.app_rate_limit,
                identity_limit=settings.identity_rate_limit,
                retry=replace(options.retry, max_seconds=settings.retry_max_seconds),
            )
        raise AirflowFailException(
            f"{where}: {problem}; nothing was sent. {how_to_define(self.heap_conn_id)}"
        )

    def _dry_run_app(self, options: ReplayOptions) -> ReplayOptions:
        """A dry run makes no client, yet its "already sent" is for the app the Heap connection
        names (acknowledgements are per app), and it packs events with the connection's batch caps
        (an event too large for any request is counted as the real run will); without that
        connection, any app's and the default caps."""
        try:
            connection = HeapHook.get_connection(self.heap_conn_id)
        except AirflowNotFoundException:
            self.log.info("Heap connection '%s' is not defined: any app's count as sent", self.heap_conn_id)
            return options
        options = replace(options, app_id=(connection.login or "").strip() or None)  # as HeapClient reads it
        try:
            settings = HeapHook(heap_conn_id=self.heap_conn_id).settings()
        except (HeapConfigError, ValueError) as exc:  # the real run fails on it; a dry run says so
            self.log.warning("dry run: the default batch caps (the Heap connection is unusable: %s)", exc)
            return options
        return replace(options, max_events=settings.max_batch_events, max_bytes=settings.max_batch_bytes)

    def _ledger(self, connections: AirflowConnections) -> Ledger:
        try:
            return open_ledger(self.ledger_conn_id, connections)
        except UnusableConnection as exc:
            raise AirflowFailException(f"ledger {exc}") from None

    def _dead_letters(
        self, window: Window, shard: Shard | None, connections: AirflowConnections, work_dir: Path
    ) -> DeadLetters:
        label = f"{window.label}.{shard.label}" if shard else window.label
        location = self.dead_letters or default_dead_letters()
        letters = DeadLetters(
            location, self.pipeline, label, connections.filesystem(self.dead_letters_conn_id), work_dir
        )
        try:
            letters.check()
        except DeadLettersUnwritable as exc:
            letters.discard()
            raise AirflowFailException(f"pipeline '{self.pipeline}': {exc}; nothing was sent") from None
        return letters

    def execute(self, context: Context) -> dict[str, Any]:
        window, source_spec, mapping, options = self._request(context, f"pipeline '{self.pipeline}'")
        shard = options.shard
        where = f"pipeline '{self.pipeline}'" + (f" {shard.label}" if shard else "")
        if shard is not None:
            context["shard_label"] = f"shard {shard.index + 1} of {shard.count}"  # type: ignore[typeddict-unknown-key]
        self.log.info("%s: source %s", where, source_spec.settings())
        connections = AirflowConnections()
        try:
            source = open_source(source_spec, window, connections, accepted=options.accepted(window))
        except SourceError as exc:
            raise AirflowFailException(f"{where}: {exc}; nothing was sent") from None
        self._lineage = ReplayRecord(source_spec, source)  # what lineage reports when the task ends
        ledger = self._ledger(connections)
        client = None
        try:
            if not options.dry_run:
                client, options = self._heap(options, where)
            else:
                options = self._dry_run_app(options)
            work_dir = default_work_dir(self.pipeline)  # temporary files, removed once their run died
            dead_letters = (
                None if options.dry_run else self._dead_letters(window, shard, connections, work_dir)
            )
            summary = replay(
                self.pipeline,
                source,
                mapping,
                window,
                client,
                options,
                ledger=ledger,
                dead_letters=dead_letters,
                work_dir=work_dir,
            )
        except (SourceError, MissingColumnsError, TooManyInvalid, DeliveryError) as exc:
            self._lineage.summary = getattr(exc, "summary", None)  # what reached Heap before it
            if isinstance(exc, (TooManyInvalid, DeliveryError)):  # stopped with counts: metrics too
                emit_metrics(exc.summary, stats)
            raise self._failure(where, exc, window) from None
        finally:
            if client is not None:
                client.close()
            ledger.close()
        self.log.info("%s: replay finished\n%s", where, summary.table())
        self._warn_late(where, summary, window)
        emit_metrics(summary, stats)  # through Airflow's Stats when [metrics] is on; never fails the task
        self._lineage.summary = summary
        announce(self, context, summary, options.row_limit)  # its asset event, or skipped: not in Heap
        return summary.as_dict()

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage (the provider's listener calls it after ``execute``, in the task's process):
        inputs the window's files or the SQL source's tables, output the Heap app with the count of
        events sent (see ``operators.lineage``). Only the provider calls it: it needs the provider."""
        return replay_lineage(getattr(self, "_lineage", None), self.heap_conn_id, self.log)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage for a failed try: what it read, and what reached Heap before it stopped."""
        return replay_lineage(getattr(self, "_lineage", None), self.heap_conn_id, self.log)

    def _warn_late(self, where: str, summary: ReplaySummary, window: Window) -> None:
        """Events later than the lateness are dead-lettered: say so, with the run that sends them."""
        hint = late_hint(self.dag_id, summary, window, str(timedelta(seconds=self.lateness_seconds or 0)))
        if hint:
            self.log.warning("%s: %s", where, hint)

    def _failure(self, where: str, exc: Exception, window: Window) -> Exception:
        """What the task raises instead: AirflowFailException (no retry) for what a retry cannot fix,
        the error itself, named, for what may succeed later (a missing file, Heap not answering)."""
        if isinstance(exc, MissingColumnsError):
            return AirflowFailException(f"{where}: {exc}; nothing was sent")
        if isinstance(exc, SourceMissingError):  # the file may still arrive: retried
            return SourceMissingError(f"{where}: {exc}")
        if isinstance(exc, SourceError):
            return AirflowFailException(f"{where}: {exc}")
        if isinstance(exc, TooManyInvalid):
            self.log.error("%s: replay finished with too many bad rows\n%s", where, exc.summary.table())
            self._warn_late(where, exc.summary, window)
            return AirflowFailException(f"{where}: {exc}")
        if isinstance(exc, DeliveryError):
            self.log.error("%s: summary so far:\n%s", where, exc.summary.table())
            if not exc.retryable:  # a redirect, 401/403/404, every event refused: fix the setup first
                return AirflowFailException(f"{where}: {exc}")
            return DeliveryError(f"{where}: {exc}", exc.summary)  # Heap may answer later: retried
        return exc
