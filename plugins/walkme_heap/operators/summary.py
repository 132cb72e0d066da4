"""The day's summary of a sharded replay: its shards' summaries added up, checked, logged."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from walkme_heap.operators.outlets import announce
from walkme_heap.replay import late_hint, too_many_invalid
from walkme_heap.run_params import row_limit
from walkme_heap.summary import ReplaySummary
from walkme_heap.window import Window

if TYPE_CHECKING:
    from airflow.sdk import Context


class ReplaySummaryOperator(BaseOperator):
    """Add up the summaries of a window's shards (the mapped replay task's return values).

    Fails when a shard's summary is missing, the day's counts do not reconcile (every row read is
    sent, already sent, skipped, invalid or rejected), or more of the day's rows than
    ``max_invalid_ratio`` were invalid or rejected (judged here, on the day: a shard holds all the
    rows without an identity, so its own share says nothing). Returns the day's summary (XCom).
    Sends no metrics: each shard's task sent its own counts, which the metrics backend adds up.
    With an asset outlet (the DAG factory's), its event says the day is in Heap; a dry or trial run
    ends skipped instead (no event; see ``operators.outlets``).

    :param pipeline: the pipeline's name, for messages.
    :param summaries: the shards' summaries: the mapped replay task's output (``replay.output``),
        which Airflow hands over as one list. Templated.
    :param shards: how many shards the window was split into; that many summaries are expected.
    :param max_invalid_ratio: the largest share of the day's rows that may be invalid or rejected.
    """

    template_fields: Sequence[str] = ("summaries",)
    ui_color = "#f0ecff"

    def __init__(
        self, *, pipeline: str, summaries: Any, shards: int, max_invalid_ratio: float = 0.1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.summaries = summaries
        self.shards = shards
        self.max_invalid_ratio = max_invalid_ratio

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
        if total.unaccounted or total.users_unaccounted:
            raise AirflowFailException(
                f"{where}: the shards' counts do not reconcile: {total.unaccounted} rows and "
                f"{total.users_unaccounted} users unaccounted"
            )
        letters = sorted({p.dead_letters for p in parts if p.dead_letters})
        start, end = (datetime.fromisoformat(total.window[k]) for k in ("start", "end"))
        hint = late_hint(self.dag_id, total, Window(start, end))
        if hint:
            self.log.warning("%s: %s", where, hint)
        message = too_many_invalid(total, self.max_invalid_ratio, ", ".join(letters) or None)
        if message:
            raise AirflowFailException(f"{where}: {message}")
        limit = row_limit((context.get("params") or {}).get("limit"))
        announce(self, context, total, limit, parts)  # the day's asset event, or skipped: not in Heap
        return total.as_dict()
