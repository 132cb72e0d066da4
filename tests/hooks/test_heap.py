"""The Heap connection: base URL rules, https unless loopback, options, errors."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from walkme_heap.delivery.client import HeapClient, HeapConfigError, HeapRequestError, check_base_url
from walkme_heap.emulator import HeapEmulator
from walkme_heap.hooks.heap import CANARY_EVENT, CANARY_IDENTITY, HeapHook, base_url_from


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


# -- the connection test with an API key (the password field): Heap's auth endpoint, nothing sent ----
KEY = "hk-0123456789abcdef"


def keyed(
    monkeypatch: pytest.MonkeyPatch, host: str, password: str | None, login: str = "main-app"
) -> HeapHook:
    conn(monkeypatch, host=host, login=login, **({} if password is None else {"password": password}))
    return HeapHook(heap_conn_id="heap_test")


def emulator_stats(emulator: HeapEmulator) -> dict:
    return requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()


def emulator_events(emulator: HeapEmulator) -> list:
    return requests.get(f"{emulator.url}/_emulator/events", timeout=5).json()


@pytest.fixture
def keyed_emulator(emulator: HeapEmulator) -> HeapEmulator:
    requests.post(f"{emulator.url}/_emulator/config", json={"api_keys": {"main-app": KEY}}, timeout=5)
    return emulator


def test_with_a_right_key_the_test_checks_credentials_and_sends_nothing(
    keyed_emulator: HeapEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ok, message = keyed(monkeypatch, keyed_emulator.url, KEY).test_connection()
    assert ok, message
    assert "app id and API key accepted by Heap; nothing was sent" in message
    assert KEY not in message and KEY not in caplog.text
    counts = emulator_stats(keyed_emulator)
    assert counts["auth_tokens"] == 1
    assert not {"requests", "accepted_events"} & set(counts)  # no track request at all
    assert emulator_events(keyed_emulator) == []


@pytest.mark.parametrize(
    ("login", "password"),
    [("main-app", "hk-wrong-key"), ("staging-app", KEY)],  # a wrong key; a key for another app id
)
def test_with_a_wrong_key_the_test_fails_naming_the_problem(
    keyed_emulator: HeapEmulator, monkeypatch: pytest.MonkeyPatch, login: str, password: str
) -> None:
    ok, message = keyed(monkeypatch, keyed_emulator.url, password, login).test_connection()
    assert not ok
    assert f"Heap refused app id {login} with this API key" in message and "HTTP 401" in message
    assert "Main Production" in message and "clear the API key" in message
    assert password not in message
    assert emulator_stats(keyed_emulator)["auth_rejected_401"] == 1
    assert emulator_events(keyed_emulator) == []


@pytest.mark.parametrize("password", [None, "", "   "])
def test_without_a_key_the_test_sends_the_canary(
    keyed_emulator: HeapEmulator, monkeypatch: pytest.MonkeyPatch, password: str | None
) -> None:
    ok, message = keyed(monkeypatch, keyed_emulator.url, password).test_connection()
    assert ok and "canary event" in message
    (event,) = emulator_events(keyed_emulator)
    assert (event["identity"], event["event"]) == (CANARY_IDENTITY, CANARY_EVENT)
    assert "auth_requests" not in emulator_stats(keyed_emulator)


def test_with_a_key_plain_http_is_still_refused_before_anything_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ok, message = keyed(monkeypatch, "http://heap.example.com", KEY).test_connection()
    assert not ok and "refusing plain http" in message and KEY not in message


def test_with_a_key_an_unreachable_host_fails_with_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    conn(
        monkeypatch, host="http://127.0.0.1:9", login="main-app", password=KEY, extra={"connect_timeout": 0.5}
    )
    ok, message = HeapHook(heap_conn_id="heap_test").test_connection()
    assert not ok and "could not check the API key" in message and "no answer" in message
    assert KEY not in message


class _Answer(BaseHTTPRequestHandler):
    """Something other than the emulator at the base URL: answers every request with ``reply``
    (which may echo the Authorization header it got, to check the key is redacted)."""

    reply: tuple[int, dict[str, str], bytes] = (500, {}, b"")
    seen: list[str] = []

    def do_POST(self) -> None:
        _Answer.seen.append(self.path)
        status, headers, body = self.reply
        auth = self.headers.get("Authorization", "")
        if b"{echo}" in body:
            user_pass = base64.b64decode(auth.split(" ", 1)[1]).decode()
            body = body.replace(b"{echo}", user_pass.encode())
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def answering(status: int, body: bytes = b"", **headers: str) -> Iterator[str]:
    _Answer.reply, _Answer.seen = (status, headers, body), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "body", "headers", "ok", "expected"),
    [
        (200, b'{"token": "tk-1"}', {}, True, "accepted by Heap; nothing was sent"),
        (200, b"tk-plain-text", {}, True, "accepted by Heap; nothing was sent"),
        (403, b'{"error": "forbidden"}', {}, False, "Heap refused app id main-app with this API key"),
        (500, b'{"error": "down for {echo}"}', {}, False, "HTTP 500: down for main-app:***"),
        (404, b"not found", {}, False, "no Heap auth endpoint at"),
        (302, b"", {"Location": "https://elsewhere.example/login"}, False, "never followed"),
        (200, b"<html><body>Sign in to the Wi-Fi</body></html>", {}, False, "HTML page"),
        (200, b'{"error": "nope"}', {}, False, "answered 200 without a token"),
        (204, b"", {}, False, "answered 204 without a token"),
    ],
)
def test_with_a_key_every_other_answer_is_told_apart(
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    body: bytes,
    headers: dict[str, str],
    ok: bool,
    expected: str,
) -> None:
    with answering(status, body, **headers) as url:
        result, message = keyed(monkeypatch, url, KEY).test_connection()
    assert (result, expected in message) == (ok, True), message
    assert KEY not in message and "tk-" not in message  # neither key nor token is returned
    assert _Answer.seen == ["/api/public/v0/auth_token"]  # one request: no redirect followed, no canary
    if not ok:
        assert "Nothing was sent" in message and (status in (401, 403) or f"HTTP {status}" in message)
