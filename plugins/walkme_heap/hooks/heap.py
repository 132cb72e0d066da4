"""HeapHook: an Airflow connection -> a configured ``HeapClient``.

Connection fields: ``host`` is the base URL (default ``https://heapanalytics.com``; EU customers
``https://c.eu.heap-api.com``), ``login`` holds the Heap app_id (environment id), ``password`` an
optional Heap API key (only the connection test uses it: Heap's track API takes none), ``extra`` may hold
``region`` (``us`` / ``eu``, used when host is empty), ``max_batch_events``, ``max_batch_bytes``,
``connect_timeout``, ``read_timeout``, ``app_rate_limit`` / ``identity_rate_limit`` (events per
minute; Heap's 15,000 / 1,000 by default) and ``retry_max_seconds`` (per batch, default 300).
Plain ``http`` is refused unless the host is loopback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from airflow.sdk import BaseHook

from walkme_heap.config import DEFAULT_HEAP_CONN_ID
from walkme_heap.delivery.client import HeapClient, HeapConfigError, HeapRequestError
from walkme_heap.heap_api import (
    APP_EVENTS_PER_MINUTE,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRY_SECONDS,
    IDENTITY_EVENTS_PER_MINUTE,
    MAX_EVENTS_PER_REQUEST,
    REGIONS,
)

CANARY_IDENTITY = "walkme-heap-connection-test"
CANARY_EVENT = "walkme-heap connection test"
EXTRA_KEYS = (
    "region",
    "max_batch_events",
    "max_batch_bytes",
    "connect_timeout",
    "read_timeout",
    "app_rate_limit",
    "identity_rate_limit",
    "retry_max_seconds",
)


def _limit(value: Any, default: int) -> int | None:
    """A rate limit from the extra: a number, or 0 / "off" for none (e.g. a private test server)."""
    if value is None:
        return default
    if str(value).strip().lower() in ("0", "off", "none"):
        return None
    return int(value)


def base_url_from(host: str | None, schema: str | None, port: int | None, region: str | None) -> str:
    """The base URL from connection fields: a full URL in host wins, else scheme/host/port."""
    host = (host or "").strip()
    if not host:
        key = (region or "us").lower()
        if key not in REGIONS:
            raise HeapConfigError(f"connection extra 'region' must be us or eu, got {region!r}")
        return REGIONS[key]
    if "://" in host:
        return host
    scheme = schema if schema in ("http", "https") else "https"
    return f"{scheme}://{host}" + (f":{port}" if port else "")


@dataclass(frozen=True)
class HeapSettings:
    """A connection's delivery settings (its extra), checked, with Heap's limits as defaults."""

    region: str | None
    max_batch_events: int
    max_batch_bytes: int
    connect_timeout: float
    read_timeout: float
    app_rate_limit: int | None  # events per minute per app; None: no pacing (a private server)
    identity_rate_limit: int | None
    retry_max_seconds: float


def how_to_define(conn_id: str) -> str:
    """The three ways to define a Heap connection, with the fields it needs (for error messages)."""
    variable = "AIRFLOW_CONN_" + conn_id.upper()
    return (
        f"Define '{conn_id}' (type Heap: Host https://heapanalytics.com, or https://c.eu.heap-api.com in "
        "the EU; Login: your Heap app id, the environment's) in one of three ways: the UI, Admin > "
        f"Connections > +; the CLI, airflow connections add {conn_id} --conn-type heap --conn-host "
        "https://heapanalytics.com --conn-login <your Heap app id>; or an environment variable, "
        f"""{variable}='{{"conn_type": "heap", "host": "https://heapanalytics.com", "login": "<your Heap """
        """app id>"}' in the environment of Airflow's components (restart them). Then clear the task """
        "(a dry run needs no connection)"
    )


class HeapHook(BaseHook):
    """Reach Heap's server-side track API through an Airflow connection.

    :param heap_conn_id: the Airflow connection holding the base URL (host), the app_id (login)
        and options (extra).
    """

    conn_name_attr = "heap_conn_id"
    default_conn_name = DEFAULT_HEAP_CONN_ID
    conn_type = "heap"
    hook_name = "Heap"

    def __init__(self, heap_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.heap_conn_id = heap_conn_id
        self._conn: Any = None

    def _connection(self) -> Any:
        """The connection, looked up once per hook (a task asks for it several times)."""
        if self._conn is None:
            self._conn = self.get_connection(self.heap_conn_id)
        return self._conn

    def settings(self) -> HeapSettings:
        """The connection's extra, checked: unknown keys are refused (typos would be silent).

        Keys may carry the UI form's prefix (``extra__heap__region``); empty form fields are None.
        """
        raw = self._connection().extra_dejson or {}
        if not isinstance(raw, dict):
            raise HeapConfigError(
                f"connection '{self.heap_conn_id}': its extra must be a JSON object, got {type(raw).__name__}"
            )
        extra = {k.removeprefix("extra__heap__"): v for k, v in raw.items() if v not in (None, "")}
        unknown = sorted(set(extra) - set(EXTRA_KEYS))
        if unknown:
            raise HeapConfigError(
                f"connection '{self.heap_conn_id}': unknown extra keys {unknown}; "
                f"known: {', '.join(EXTRA_KEYS)}"
            )

        def number(key: str, kind: Callable[[Any], Any], default: Any) -> Any:
            """The extra's ``key`` read by ``kind`` (absent: ``default``); no number names the key."""
            value = extra.get(key)
            try:
                return default if value is None else kind(value)
            except (TypeError, ValueError):
                raise HeapConfigError(
                    f"connection '{self.heap_conn_id}': extra '{key}' must be a number, got {value!r}"
                ) from None

        def limit(key: str, default: int) -> int | None:
            return number(key, lambda v: _limit(v, default), default)

        return HeapSettings(
            region=extra.get("region"),
            max_batch_events=number("max_batch_events", int, MAX_EVENTS_PER_REQUEST),
            max_batch_bytes=number("max_batch_bytes", int, DEFAULT_MAX_BATCH_BYTES),
            connect_timeout=number("connect_timeout", float, DEFAULT_CONNECT_TIMEOUT),
            read_timeout=number("read_timeout", float, DEFAULT_READ_TIMEOUT),
            app_rate_limit=limit("app_rate_limit", APP_EVENTS_PER_MINUTE),
            identity_rate_limit=limit("identity_rate_limit", IDENTITY_EVENTS_PER_MINUTE),
            retry_max_seconds=number("retry_max_seconds", float, DEFAULT_RETRY_SECONDS),
        )

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection, writing into Heap only when nothing else can check it.

        With an API key (the password field): Heap's auth endpoint checks app id and key and nothing
        is sent. Without one: one canary event, since Heap accepts a wrong app_id silently; it is named
        ``walkme-heap connection test`` for the identity ``walkme-heap-connection-test``: look for it
        in Heap to confirm the app id. Neither the key nor Heap's token is logged or returned.
        """
        try:
            client = self.get_conn()
        except HeapConfigError as exc:
            return False, str(exc)
        api_key = (self._connection().password or "").strip()
        if api_key:
            return self._check_api_key(client, api_key)
        sent_at = datetime.now(UTC)
        event = {
            "identity": CANARY_IDENTITY,
            "event": CANARY_EVENT,
            "timestamp": sent_at.isoformat(timespec="milliseconds"),
            "idempotency_key": f"walkme-heap-canary-{sent_at:%Y%m%dT%H%M%S%f}",
            "properties": {"source": "walkme-heap connection test"},
        }
        body = orjson.dumps({"app_id": client.app_id, "events": [event]})
        try:
            client.post(body)
        except HeapRequestError as exc:
            return False, f"Heap refused the canary event: {exc}"
        finally:
            client.close()
        return True, (
            f"Heap accepted the canary event '{CANARY_EVENT}' (identity {CANARY_IDENTITY}) for app "
            f"{client.app_id} at {client.base_url}. Heap accepts unknown app ids silently: find the "
            "event in that Heap environment to confirm the app id."
        )

    @staticmethod
    def _check_api_key(client: HeapClient, api_key: str) -> tuple[bool, str]:
        """The test with an API key: a token request (writes nothing); the client redacts the key."""
        try:
            client.check_api_key(api_key)
        except HeapRequestError as exc:
            if exc.status in (401, 403):
                return False, (
                    f"{exc.message} (HTTP {exc.status}). Nothing was sent. To test a connection whose "
                    "app id has no API key, clear the API key: the test then sends a canary event."
                )
            return False, f"could not check the API key at {client.base_url}: {exc}. Nothing was sent."
        finally:
            client.close()
        return True, (
            f"app id and API key accepted by Heap; nothing was sent (app {client.app_id} at "
            f"{client.base_url}; Heap's token was discarded)."
        )

    def get_conn(self) -> HeapClient:
        """A client with one pooled HTTP session for this connection."""
        conn = self._connection()
        settings = self.settings()
        base_url = base_url_from(conn.host, conn.schema, conn.port, settings.region)
        try:
            return HeapClient(
                base_url,
                conn.login or "",
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
            )
        except HeapConfigError as exc:
            raise HeapConfigError(f"connection '{self.heap_conn_id}': {exc}") from None
