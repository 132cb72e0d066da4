"""The Asset outlet of the task that ends a pipeline's window: its event means "the window is in Heap".

Airflow emits an event for every asset outlet of a task that succeeds, and has no way to withhold
one. A run whose window is not in Heap (a dry run, a trial run cut at its row limit) therefore ends
*skipped* when its task declares an asset outlet: no event, so no downstream DAG starts on a day
that is not there. Its summary is still pushed (XCom) and logged. A task without asset outlets (a
shard of a sharded day, the operator used alone) is unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowSkipException

from walkme_heap.assets import event_extra, not_in_heap
from walkme_heap.summary import ReplaySummary

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context

RETURN_KEY = "return_value"  # the XCom key of a task's return value (Airflow's XCOM_RETURN_KEY)


def announce(
    task: BaseOperator,
    context: Context,
    window: ReplaySummary,
    row_limit: int | None,
    parts: Sequence[ReplaySummary] | None = None,
) -> None:
    """Give the task's asset events the window's counts, or skip the task (no event) when the window
    is not in Heap.

    :param window: the window's summary (what the task returns).
    :param row_limit: the run's ``limit`` param.
    :param parts: the summaries judged (a sharded day's shards); default the window's alone.
    """
    assets = [outlet for outlet in task.outlets if isinstance(outlet, Asset)]
    if not assets:
        return
    reason = not_in_heap(parts or [window], row_limit)
    if reason:
        context["ti"].xcom_push(key=RETURN_KEY, value=window.as_dict())  # the report, the summary task
        raise AirflowSkipException(
            f"pipeline '{window.pipeline}': {reason}, so the window is not announced as in Heap "
            f"(no event for {', '.join(a.name for a in assets)}); the summary is this task's XCom"
        )
    extra = event_extra(window)
    for asset in assets:
        context["outlet_events"][asset].extra = extra
