"""Airflow plugin: the replay report page (FastAPI app) and the replay task's extra link."""

from airflow.plugins_manager import AirflowPlugin

from walkme_heap.links import ReplayReportLink
from walkme_heap.report import URL_PREFIX, create_app


class WalkMeHeapPlugin(AirflowPlugin):
    name = "walkme_heap"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "WalkMe to Heap replay report"}]
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
