"""The replay task's extra link: this run's day in the replay report."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from airflow.sdk import BaseOperatorLink

from walkme_heap.report import URL_PREFIX


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
