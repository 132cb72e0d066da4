"""WalkMeToHeapOperator: replay one window of WalkMe events into Heap."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import BaseHook, BaseOperator, ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from walkme_heap.config import ConfigError, SourceSpec, parse_mapping, parse_source
from walkme_heap.hooks.heap import HeapHook
from walkme_heap.mapping.columns import MissingColumnsError
from walkme_heap.replay import DeliveryError, ReplayOptions, Source, replay
from walkme_heap.sources.base import SourceError, SourceMissingError
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.sources.jsonl_files import JsonLinesSource
from walkme_heap.sources.sql import SqlSource, table_query
from walkme_heap.window import Window, WindowError, resolve_window

if TYPE_CHECKING:
    from airflow.sdk import Context


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
    :param dry_run: map and count without any HTTP call; the ``dry_run`` param also turns it on.
        Templated.
    :param max_span_days: the longest range a UI run may ask for through ``start`` / ``end``.
    :param config_dir: directory that relative source paths are resolved against.
    """

    template_fields: Sequence[str] = ("source", "dry_run")
    template_fields_renderers = {"source": "json"}
    ui_color = "#e8e0ff"

    def __init__(
        self,
        *,
        pipeline: str,
        source: dict[str, Any],
        mapping: dict[str, Any] | None = None,
        heap_conn_id: str = HeapHook.default_conn_name,
        dry_run: bool | str = False,
        max_span_days: int = 92,
        config_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.source = source
        self.mapping = mapping or {}
        self.heap_conn_id = heap_conn_id
        self.dry_run = dry_run
        self.max_span_days = max_span_days
        self.config_dir = config_dir

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
        dry_run = _truthy(self.dry_run) or _truthy(params.get("dry_run"))
        try:
            source = self._source(source_spec, window, where)
        except SourceError as exc:
            raise AirflowFailException(f"{where}: {exc}; nothing was sent") from None
        client = None
        options = ReplayOptions(dry_run=dry_run)
        if not dry_run:
            hook = HeapHook(heap_conn_id=self.heap_conn_id)
            client = hook.get_conn()
            hook_options = hook.options()
            options.max_events = hook_options["max_batch_events"]
            options.max_bytes = hook_options["max_batch_bytes"]
        self.log.info(
            "%s: replaying %s (%s .. %s)%s",
            where,
            window.label,
            window.start.isoformat(),
            window.end.isoformat(),
            " as a dry run: nothing will be sent" if dry_run else "",
        )
        try:
            summary = replay(self.pipeline, source, spec, window, client, options)
        except MissingColumnsError as exc:
            raise AirflowFailException(f"{where}: {exc}; nothing was sent") from None
        except SourceMissingError as exc:
            raise SourceMissingError(f"{where}: {exc}") from None
        except SourceError as exc:
            raise AirflowFailException(f"{where}: {exc}") from None
        except DeliveryError as exc:
            self.log.error("%s: summary so far:\n%s", where, exc.summary.table())
            raise
        finally:
            if client is not None:
                client.close()
        self.log.info("%s: replay finished\n%s", where, summary.table())
        return summary.as_dict()
