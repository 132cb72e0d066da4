"""Airflow plugin: the replay report page (FastAPI app) and the replay task's extra link."""

from functools import cached_property
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from walkme_heap.links import URL_PREFIX, ReplayReportLink


class WalkMeHeapPlugin(AirflowPlugin):
    name = "walkme_heap"
    external_views = [
        {
            "name": "WalkMe to Heap replays",
            "href": f"{URL_PREFIX}/report",
            "destination": "nav",
            "category": "browse",
            "url_route": "walkme-heap-report",
        }
    ]
    operator_extra_links = [ReplayReportLink()]

    @cached_property
    def fastapi_apps(self) -> list[dict[str, Any]]:
        """Built when first asked for, by the API server: every task and DAG processor loads plugins
        too, and need not import the report's app and Airflow's API security with them."""
        from walkme_heap.report import create_app

        return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "WalkMe to Heap replay report"}]
