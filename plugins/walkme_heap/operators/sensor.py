"""Wait for a day's export (``source.on_missing: wait``): a sensor in reschedule mode before the replay.

Reports are produced hours after their day ends, so a scheduled run may start before its file
exists. Instead of failing and retrying (``fail``) or replaying an empty day that is never looked
at again (``skip``), the DAG's first task checks, every ``wait_poke`` and without holding a worker
slot between checks (reschedule mode), that every day of the window has a non-empty file; after
``wait_timeout`` it fails, naming the missing file, and nothing was sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException

from walkme_heap.config import ConfigError, parse_source
from walkme_heap.hooks.connections import AirflowConnections
from walkme_heap.sources.base import SourceError, SourceMissingError
from walkme_heap.sources.factory import open_source
from walkme_heap.sources.spec import SourceSpec
from walkme_heap.window import resolve_window

if TYPE_CHECKING:
    from airflow.sdk import Context


class WalkMeExportSensor(BaseSensorOperator):
    """Succeed once every day of the run's window has its export file (non-empty), as the replay
    task would find it; fail at once when the source cannot be used at all (a bad path template,
    an unusable connection).

    :param pipeline: the pipeline's name, for messages.
    :param source: the files to wait for: a ``SourceSpec`` or a dict as in pipelines.yaml (csv or
        jsonl). Templated, like the replay task's.
    :param max_span_days: the longest range a UI run may ask for through ``start`` / ``end``.
    :param config_dir: directory that relative paths of a dict ``source`` are resolved against.

    ``mode`` defaults to ``reschedule``; ``poke_interval`` and ``timeout`` are the pipeline's
    ``wait_poke`` and ``wait_timeout``.
    """

    template_fields: Sequence[str] = ("source",)
    ui_color = "#fff3c4"

    def __init__(
        self,
        *,
        pipeline: str,
        source: SourceSpec | dict[str, Any],
        max_span_days: int = 92,
        config_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.source = source
        self.max_span_days = max_span_days
        self.config_dir = config_dir

    def poke(self, context: Context) -> bool:
        where = f"pipeline '{self.pipeline}'"
        try:
            window = resolve_window(
                dict(context.get("params") or {}),
                context.get("data_interval_start"),
                context.get("data_interval_end"),
                max_span=timedelta(days=self.max_span_days),
            )
            spec = parse_source(self.source, where, Path(self.config_dir or "."))
            source = open_source(spec, window, AirflowConnections())
            found = source.origins()  # type: ignore[attr-defined]
        except SourceMissingError as exc:
            self.log.info("%s: waiting for the export: %s", where, exc)
            return False
        except (SourceError, ConfigError, ValueError) as exc:  # waiting cannot fix these
            raise AirflowFailException(f"{where}: {exc}") from None
        self.log.info("%s: the export is there (%d file(s) for %s)", where, len(found), window.label)
        return True
