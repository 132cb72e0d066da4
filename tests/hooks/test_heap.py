"""The Heap connection: base URL rules, https unless loopback, options, errors."""

from __future__ import annotations

import json

import pytest

from walkme_heap.delivery.client import HeapClient, HeapConfigError, HeapRequestError, check_base_url
from walkme_heap.emulator import HeapEmulator
from walkme_heap.hooks.heap import HeapHook, base_url_from


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://heapanalytics.com/", "https://heapanalytics.com"),
        ("https://c.eu.heap-api.com", "https://c.eu.heap-api.com"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://localhost:1", "http://localhost:1"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://127.8.9.10", "http://127.8.9.10"),
    ],
)
def test_accepted_base_urls(url: str, expected: str) -> None:
    assert check_base_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://heapanalytics.com", "refusing plain http to heapanalytics.com"),
        ("http://10.0.0.5:8765", "refusing plain http to 10.0.0.5"),
        ("ftp://x", "must look like https://heapanalytics.com"),
        ("heapanalytics.com", "must look like https://heapanalytics.com"),
        ("https://heapanalytics.com/api/track", "should have no path"),
    ],
)
def test_refused_base_urls(url: str, message: str) -> None:
    with pytest.raises(HeapConfigError, match=message):
        check_base_url(url)


def test_base_url_from_connection_fields() -> None:
    assert base_url_from(None, None, None, None) == "https://heapanalytics.com"
    assert base_url_from("", None, None, "EU") == "https://c.eu.heap-api.com"
    assert base_url_from("127.0.0.1", "http", 8765, None) == "http://127.0.0.1:8765"
    assert base_url_from("heap.example.com", None, None, None) == "https://heap.example.com"
    with pytest.raises(HeapConfigError, match="region"):
        base_url_from(None, None, None, "apac")


def conn(monkeypatch: pytest.MonkeyPatch, **fields: object) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_HEAP_TEST", json.dumps({"conn_type": "heap", **fields}))


def test_hook_builds_a_client(monkeypatch: pytest.MonkeyPatch) -> None:
    conn(monkeypatch, host="", login=" app-1 ", extra={"region": "eu", "read_timeout": 7})
    hook = HeapHook(heap_conn_id="heap_test")
    client = hook.get_conn()
    assert (client.url, client.app_id, client.timeout) == (
        "https://c.eu.heap-api.com/api/track",
        "app-1",
        (5.0, 7.0),
    )
    assert hook.settings().max_batch_events == 1000


def test_hook_refuses_plain_http_and_unknown_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    conn(monkeypatch, host="http://heap.example.com", login="a")
    with pytest.raises(HeapConfigError, match="connection 'heap_test': refusing plain http"):
        HeapHook(heap_conn_id="heap_test").get_conn()
    conn(monkeypatch, host="https://heapanalytics.com", login="a", extra={"max_batch_size": 5})
    with pytest.raises(HeapConfigError, match="unknown extra keys"):
        HeapHook(heap_conn_id="heap_test").get_conn()
    conn(monkeypatch, host="https://heapanalytics.com")
    with pytest.raises(HeapConfigError, match="app_id"):
        HeapHook(heap_conn_id="heap_test").get_conn()


def test_hook_declares_the_provider_contract() -> None:
    assert (HeapHook.conn_name_attr, HeapHook.default_conn_name, HeapHook.conn_type, HeapHook.hook_name) == (
        "heap_conn_id",
        "heap_default",
        "heap",
        "Heap",
    )


def test_client_success_and_errors(emulator: HeapEmulator) -> None:
    client = HeapClient(emulator.url, "app")
    good = b'{"app_id":"app","events":[{"identity":"u","event":"E"}]}'
    assert client.post(good).status_code == 200
    with pytest.raises(HeapRequestError, match=r"HTTP 400: postBody\.events") as info:
        client.post(b'{"app_id":"app","events":[{"event":"E"}]}')
    assert info.value.status == 400
    unreachable = HeapClient("http://127.0.0.1:9", "app", connect_timeout=0.5)
    with pytest.raises(HeapRequestError, match="no answer"):
        unreachable.post(good)
