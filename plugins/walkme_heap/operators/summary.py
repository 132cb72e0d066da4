"""The day's summary of a sharded replay: its shards' summaries added up, checked, logged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from walkme_heap.summary import ReplaySummary

if TYPE_CHECKING:
    from airflow.sdk import Context


class ReplaySummaryOperator(BaseOperator):
    """Add up the summaries of a window's shards (the mapped replay task's return values).

    Fails when a shard's summary is missing or the day's counts do not reconcile (every row read is
    sent, already sent, skipped, invalid or rejected). Returns the day's summary (XCom).

    :param pipeline: the pipeline's name, for messages.
    :param summaries: the shards' summaries: the mapped replay task's output (``replay.output``),
        which Airflow hands over as one list. Templated.
    :param shards: how many shards the window was split into; that many summaries are expected.
    """

    template_fields: Sequence[str] = ("summaries",)
    ui_color = "#f0ecff"

    def __init__(self, *, pipeline: str, summaries: Any, shards: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.summaries = summaries
        self.shards = shards

    def execute(self, context: Context) -> dict[str, Any]:
        parts = [ReplaySummary.from_dict(s) for s in list(self.summaries or []) if s]
        where = f"pipeline '{self.pipeline}'"
        if len(parts) != self.shards:
            raise AirflowFailException(
                f"{where}: {len(parts)} of {self.shards} shard summaries arrived; the day is not complete"
            )
        try:
            total = ReplaySummary.combine(parts)
        except ValueError as exc:
            raise AirflowFailException(f"{where}: {exc}") from None
        self.log.info("%s: the day's replay over %d shards\n%s", where, self.shards, total.table())
        if total.unaccounted:
            raise AirflowFailException(
                f"{where}: the shards' counts do not reconcile: {total.unaccounted} rows unaccounted"
            )
        return total.as_dict()
