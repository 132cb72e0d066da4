"""Airflow plugin: the replay report page (FastAPI app), its navigation entry and the replay task's
extra link.

Inside the package, so installing it is enough: registered through the ``airflow.plugins`` entry
point and declared in the provider info (pyproject.toml, ``provider.py``). The project folder's
``plugins/walkme_heap_plugin.py`` exposes it when the package is used from the folder uninstalled.
"""

from __future__ import annotations

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
