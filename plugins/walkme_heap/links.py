"""The replay task's extra link: this run's day in the replay report, and where the report is served.

The prefix lives here, not in ``report.py``: the operator (so every DAG parse and task) imports this
module, and the report app imports Airflow's API security, which only the API server needs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from airflow.sdk import BaseOperatorLink

URL_PREFIX = "/walkme-heap"  # the report app's mount point in the API server


class ReplayReportLink(BaseOperatorLink):
    """Links a replay task instance to its pipeline and day in the report page."""

    name = "Replay report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        query = {"pipeline": getattr(operator, "pipeline", "")}
        try:  # the window of this run, from the summary the task returned
            summary = ti_key.xcom_pull(task_ids=ti_key.task_id, key="return_value") or {}
            query["day"] = str(summary.get("window", {}).get("start", ""))[:10]
        except Exception:  # no summary (a failed run): link to the pipeline
            pass
        return f"{URL_PREFIX}/report?{urlencode({k: v for k, v in query.items() if v})}"
