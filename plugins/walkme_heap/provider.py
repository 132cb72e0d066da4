"""Airflow provider metadata: the integration, its hooks, operators, sensor, extra link, plugin and
asset URI scheme (``walkme-heap://``, see ``assets.py``), and the "Heap" connection type with
labelled form fields.

Installed through the ``apache_airflow_provider`` entry point (pyproject.toml). Since Airflow 3.2
the form is declared as data (``conn-fields``, ``ui-field-behaviour``), not as Python widgets.
The extra fields are stored in the connection's extra under these names; HeapHook reads them.
"""

from __future__ import annotations

from typing import Any

from walkme_heap import __version__
from walkme_heap.heap_api import (
    APP_EVENTS_PER_MINUTE,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_RETRY_SECONDS,
    EU_BASE_URL,
    IDENTITY_EVENTS_PER_MINUTE,
    MAX_EVENTS_PER_REQUEST,
    US_BASE_URL,
)

# What Test does with and without a key (shown in the empty API key field). The event's name is
# HeapHook's CANARY_EVENT (a test pins it): not imported, the form is read without importing hooks.
API_KEY_PLACEHOLDER = (
    "With a key, Test checks app id + key at Heap's auth endpoint and sends nothing. "
    "Empty: Test sends one canary event 'walkme-heap connection test', visible in Heap."
)


def _number(label: str, description: str, default: int | float | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["integer", "null"]}
    if default is not None:
        schema["default"] = default
    return {"label": label, "schema": schema, "description": description}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "walkme-heap",
        "name": "WalkMe to Heap",
        "description": "Replay exported WalkMe events into Heap Analytics (server-side bulk track API).",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Heap",
                "external-doc-url": "https://developers.heap.io/reference/server-side-apis-overview",
                "how-to-guide": [],
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": "Heap", "python-modules": ["walkme_heap.hooks.heap"]}],
        "operators": [
            {
                "integration-name": "Heap",
                "python-modules": ["walkme_heap.operators.replay", "walkme_heap.operators.summary"],
            }
        ],
        "sensors": [{"integration-name": "Heap", "python-modules": ["walkme_heap.operators.sensor"]}],
        "extra-links": ["walkme_heap.links.ReplayReportLink"],
        "plugins": [{"name": "walkme_heap", "plugin-class": "walkme_heap.airflow_plugin.WalkMeHeapPlugin"}],
        "asset-uris": [{"schemes": ["walkme-heap"], "handler": "walkme_heap.assets.sanitize_uri"}],
        "connection-types": [
            {
                "hook-class-name": "walkme_heap.hooks.heap.HeapHook",
                "hook-name": "Heap",
                "connection-type": "heap",
                "conn-fields": {
                    "region": {
                        "label": "Region",
                        "schema": {"type": ["string", "null"], "enum": ["us", "eu", None], "default": "us"},
                        "description": f"us: {US_BASE_URL}, eu: {EU_BASE_URL}. "
                        "Used when Base URL is empty; a Base URL wins (custom or the emulator).",
                    },
                    "app_rate_limit": _number(
                        "App rate limit (events/minute)",
                        "Heap's bulk limit per app; 0 turns pacing off.",
                        APP_EVENTS_PER_MINUTE,
                    ),
                    "identity_rate_limit": _number(
                        "Identity rate limit (events/minute)",
                        "Heap's limit per identity per app.",
                        IDENTITY_EVENTS_PER_MINUTE,
                    ),
                    "max_batch_events": _number(
                        "Events per request",
                        f"At most {MAX_EVENTS_PER_REQUEST} (Heap's cap).",
                        MAX_EVENTS_PER_REQUEST,
                    ),
                    "max_batch_bytes": _number(
                        "Bytes per request",
                        "Heap documents no body cap; keep a margin.",
                        DEFAULT_MAX_BATCH_BYTES,
                    ),
                    "retry_max_seconds": _number(
                        "Retry budget per batch (s)",
                        "Then the task fails; the ledger resumes it.",
                        int(DEFAULT_RETRY_SECONDS),
                    ),
                },
                "ui-field-behaviour": {
                    # The password field holds the API key: stored encrypted and masked like any password.
                    "hidden-fields": ["schema", "port", "extra"],
                    "relabeling": {
                        "host": "Base URL (optional)",
                        "login": "App ID",
                        "password": "API key (optional, for Test)",
                    },
                    "placeholders": {
                        "host": f"{US_BASE_URL} (empty: from Region)",
                        "login": "the Heap environment (app) id",
                        # Standard fields take no description in the form: the placeholder says it.
                        "password": API_KEY_PLACEHOLDER,
                    },
                },
            }
        ],
    }
