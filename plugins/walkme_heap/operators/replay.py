"""WalkMeToHeapOperator: replay one window of WalkMe events into Heap."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import BaseHook, BaseOperator, ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from walkme_heap.config import ConfigError, SourceSpec, default_home, parse_mapping, parse_source
from walkme_heap.deadletters import DeadLetters
from walkme_heap.hooks.heap import HeapHook
from walkme_heap.ledger import DEFAULT_LEDGER_CONN_ID, Ledger
from walkme_heap.links import ReplayReportLink
from walkme_heap.mapping.columns import MissingColumnsError
from walkme_heap.replay import DeliveryError, ReplayOptions, Source, TooManyInvalid, replay
from walkme_heap.sharding import Shard
from walkme_heap.sources.base import SourceError, SourceMissingError
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.sources.jsonl_files import JsonLinesSource
from walkme_heap.sources.sql import SqlSource, table_query
from walkme_heap.window import Window, WindowError, resolve_window

if TYPE_CHECKING:
    from airflow.sdk import Context


def _row_limit(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise AirflowFailException(f"param 'limit' must be a whole number of rows, got {value!r}") from None
    if limit < 1:
        raise AirflowFailException(f"param 'limit' must be at least 1, got {limit}")
    return limit


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class WalkMeToHeapOperator(BaseOperator):
    """Replay the WalkMe events of one window into Heap's bulk track API.

    The window is ``[start, end)`` from the run's ``start`` / ``end`` params when set (a UI run),
    else the run's data interval. Returns a small summary dict (XCom): rows read, events sent,
    invalid and skipped rows by reason, batches, seconds.

    :param pipeline: the pipeline's name, used in messages and the summary.
    :param source: where rows come from, as in pipelines.yaml: files (``{"type": "csv"|"jsonl",
        "path": ..., "conn_id": ..., "on_missing": "fail"|"skip", "chunk_rows": ...}``; the path
        may hold ``{date:%Y-%m-%d}`` for each day of the window) or a SQL connection
        (``{"type": "sql", "conn_id": ..., "table": ..., "time_column": ..., "time_type": ...}`` or
        ``"query_file"``, optional ``"order_by"``, ``"payload_column"``). Templated.
    :param mapping: how rows become events, as in pipelines.yaml (preset, columns, event_name,
        properties, include_non_production).
    :param heap_conn_id: the Heap connection (host = base URL, login = app_id).
    :param ledger_conn_id: a SQL connection (common-sql) for the ledger of acknowledged events; when
        it is not defined, a SQLite file under ``$AIRFLOW_HOME/walkme_heap/`` is used.
    :param dead_letters: where dead letters go (local path or fsspec URL): one JSON Lines file per
        pipeline and window. Default ``$AIRFLOW_HOME/walkme_heap/dead_letters``. Templated.
    :param dead_letters_conn_id: an Airflow connection for an object-storage dead-letter location.
    :param max_invalid_ratio: fail the task (after every valid event is sent) when more than this
        share of the rows read were invalid or rejected.
    :param dry_run: map and count without any HTTP call or write; the ``dry_run`` param also turns it
        on. Templated.
    :param force: send the whole window again, ignoring the ledger (Heap drops the repeats by key);
        the ``force`` param also turns it on. Templated.
    :param max_span_days: the longest range a UI run may ask for through ``start`` / ``end``.
    :param config_dir: directory that relative source paths are resolved against.
    :param shard: replay only this shard (0-based) of the window's rows, split by a stable hash of
        the identity into ``shards`` parts; set by dynamic task mapping (``expand(shard=...)``).
    :param shards: how many shards the window is split into (1: no split).
    """

    template_fields: Sequence[str] = ("source", "dry_run", "force", "dead_letters")
    operator_extra_links = (ReplayReportLink(),)
    template_fields_renderers = {"source": "json"}
    ui_color = "#e8e0ff"

    def __init__(
        self,
        *,
        pipeline: str,
        source: dict[str, Any],
        mapping: dict[str, Any] | None = None,
        heap_conn_id: str = HeapHook.default_conn_name,
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.source = source
        self.mapping = mapping or {}
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

    def _fs_factory(self, conn_id: str | None) -> Any:
        if conn_id is None:
            return None

        def factory(url: str) -> tuple[Any, str]:
            path = ObjectStoragePath(url, conn_id=conn_id)
            return path.fs, path.path

        return factory

    def _sql_hook(self, conn_id: str, where: str) -> DbApiHook:
        """The connection's hook, which must be a SQL hook (common-sql's DbApiHook)."""
        try:
            hook = BaseHook.get_hook(conn_id)
        except AirflowNotFoundException:
            raise AirflowFailException(f"{where}: connection '{conn_id}' is not defined") from None
        if not isinstance(hook, DbApiHook):
            raise AirflowFailException(
                f"{where}: connection '{conn_id}' is not a SQL connection: its hook "
                f"{type(hook).__name__} is not a common-sql DbApiHook"
            )
        return hook

    def _source(self, spec: SourceSpec, window: Window, where: str) -> Source:
        """The configured source for this window."""
        if spec.type == "sql":
            hook = self._sql_hook(spec.conn_id or "", where)
            if spec.table:
                query = table_query(spec.table, spec.time_column or "", spec.order_by)
                label = f"{spec.conn_id}:{spec.table}"
            else:
                query = Path(spec.query_file or "").read_text(encoding="utf-8")
                label = f"{spec.conn_id}:{Path(spec.query_file or '').name}"
            return SqlSource(
                hook.get_conn,
                hook.placeholder,
                window,
                query=query,
                time_type=spec.time_type,
                payload_column=spec.payload_column,
                chunk_rows=spec.chunk_rows,
                label=label,
            )
        options = {
            "chunk_rows": spec.chunk_rows,
            "on_missing": spec.on_missing,
            "fs_factory": self._fs_factory(spec.conn_id),
        }
        if spec.type == "jsonl":
            return JsonLinesSource(spec.path or "", window, **options)
        return CsvSource(spec.path or "", window, delimiter=spec.delimiter, **options)

    def _ledger(self) -> Ledger:
        """The ledger's database: the ``ledger_conn_id`` SQL connection, else a local SQLite file."""
        try:
            hook = BaseHook.get_hook(self.ledger_conn_id)
        except AirflowNotFoundException:
            path = default_home() / "ledger.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.log.info("ledger: connection '%s' is not defined; using %s", self.ledger_conn_id, path)
            return Ledger.sqlite(str(path))
        if not isinstance(hook, DbApiHook):
            raise AirflowFailException(
                f"ledger connection '{self.ledger_conn_id}' is not a SQL connection "
                f"({type(hook).__name__} is not a common-sql DbApiHook)"
            )
        return Ledger(hook.get_conn, hook.placeholder)

    def execute(self, context: Context) -> dict[str, Any]:
        where = f"pipeline '{self.pipeline}'"
        params = dict(context.get("params") or {})
        try:
            window = resolve_window(
                params,
                context.get("data_interval_start"),
                context.get("data_interval_end"),
                max_span=timedelta(days=self.max_span_days),
            )
            source_spec = parse_source(self.source, where, Path(self.config_dir or "."))
            spec = parse_mapping(self.mapping, where)
        except WindowError as exc:
            raise AirflowFailException(f"{where}: {exc}") from None
        except ConfigError as exc:  # its message names the pipeline and the key
            raise AirflowFailException(str(exc)) from None
        try:
            shard = (
                None if self.shards == 1 and self.shard in (None, 0) else Shard(self.shard or 0, self.shards)
            )
        except ValueError as exc:
            raise AirflowFailException(f"{where}: {exc}") from None
        if shard is not None:
            where = f"{where} {shard.label}"
            context["shard_label"] = f"shard {shard.index + 1} of {shard.count}"  # type: ignore[typeddict-unknown-key]
        dry_run = _truthy(self.dry_run) or _truthy(params.get("dry_run"))
        force = _truthy(self.force) or _truthy(params.get("force"))
        try:
            source = self._source(source_spec, window, where)
        except SourceError as exc:
            raise AirflowFailException(f"{where}: {exc}; nothing was sent") from None
        client = None
        options = ReplayOptions(
            dry_run=dry_run,
            force=force,
            max_invalid_ratio=self.max_invalid_ratio,
            run_id=context.get("run_id"),
            row_limit=_row_limit(params.get("limit")),
            shard=shard,
        )
        if not dry_run:
            hook = HeapHook(heap_conn_id=self.heap_conn_id)
            client = hook.get_conn()
            hook.apply(options)
        ledger = self._ledger()
        dead_letters = None
        if not dry_run:
            location = self.dead_letters or str(default_home() / "dead_letters")
            label = f"{window.label}.{shard.label}" if shard else window.label
            dead_letters = DeadLetters(
                location, self.pipeline, label, self._fs_factory(self.dead_letters_conn_id)
            )
        self.log.info(
            "%s: replaying %s (%s .. %s)%s%s",
            where,
            window.label,
            window.start.isoformat(),
            window.end.isoformat(),
            " as a dry run: nothing will be sent or written" if dry_run else "",
            " with force: events already sent are sent again (Heap ignores the repeats)" if force else "",
        )
        try:
            summary = replay(
                self.pipeline, source, spec, window, client, options, ledger=ledger, dead_letters=dead_letters
            )
        except MissingColumnsError as exc:
            raise AirflowFailException(f"{where}: {exc}; nothing was sent") from None
        except SourceMissingError as exc:
            raise SourceMissingError(f"{where}: {exc}") from None
        except SourceError as exc:
            raise AirflowFailException(f"{where}: {exc}") from None
        except TooManyInvalid as exc:
            self.log.error("%s: replay finished with too many bad rows\n%s", where, exc.summary.table())
            raise AirflowFailException(f"{where}: {exc}") from None
        except DeliveryError as exc:
            self.log.error("%s: summary so far:\n%s", where, exc.summary.table())
            raise DeliveryError(f"{where}: {exc}", exc.summary) from None
        finally:
            if client is not None:
                client.close()
            ledger.close()
        self.log.info("%s: replay finished\n%s", where, summary.table())
        return summary.as_dict()
