"""The emulator implements heap-track-api.md strictly: validation, limits, dedupe, faults."""

from __future__ import annotations

import json
import re

import pytest
import requests

from tests.helpers import GOOD_EVENT as GOOD
from walkme_heap.emulator import EmulatorSettings, HeapEmulator
from walkme_heap.emulator.limits import RateLimiter
from walkme_heap.emulator.validation import HeapValidationError, validate_body


def post(emulator: HeapEmulator, body: object, **kw: object) -> requests.Response:
    return requests.post(
        f"{emulator.url}/api/track",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
        timeout=5,
        **kw,
    )


def stats(emulator: HeapEmulator) -> dict:
    return requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event": ""}, "postBody.events[1].event should be a non-empty string"),
        ({"event": "x" * 1025}, "at most 1024"),
        ({"identity": "x" * 256}, "identity should have at most 255"),
        ({"identity": 5}, "identity should be a non-empty string"),
        ({"user_id": "12"}, "exactly one of identity, user_id"),
        ({"timestamp": "2024-03-10 00:00:00"}, "timestamp should be an ISO 8601"),
        ({"timestamp": 1710028800000}, "timestamp should be string"),
        ({"properties": {}}, "properties should be object"),
        ({"properties": {"a": {"b": 1}}}, "should be string or number"),
        ({"properties": {"a": True}}, "should be string or number"),
        ({"properties": {"a": "x" * 1024}}, "fewer than 1024"),
        ({"idempotency_key": "short"}, "at least 8 characters"),
        ({"app_id": "inner"}, "postBody.events[1].app_id is not allowed"),
    ],
)
def test_each_rule_answers_400_naming_the_field(emulator: HeapEmulator, change: dict, message: str) -> None:
    response = post(emulator, {"app_id": "app", "events": [GOOD, {**GOOD, **change}]})
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert response.json()["error"].startswith("postBody.events[1]")
    assert stats(emulator).get("unique_events", 0) == 0  # the whole request is rejected


def test_json_the_fast_parser_refuses_gets_the_standard_verdict(emulator: HeapEmulator) -> None:
    huge = {"app_id": "app", "events": [{**GOOD, "properties": {"n": 2**70}}]}
    assert post(emulator, huge).status_code == 200  # JavaScript takes it as a number
    nan = json.dumps({"app_id": "app", "events": [{**GOOD, "properties": {"n": float("nan")}}]})
    response = requests.post(
        f"{emulator.url}/api/track", data=nan, headers={"Content-Type": "application/json"}, timeout=5
    )
    assert response.status_code == 400 and "finite" in response.json()["error"]


def test_bulk_envelope_rules() -> None:
    for body, message in [
        ({"events": [GOOD]}, "app_id"),
        ({"app_id": "a", "events": []}, "non-empty array"),
        ({"app_id": "a", "events": [GOOD] * 1001}, "at most 1000"),
        ({"app_id": "a", "events": [GOOD], "x": 1}, "postBody.x is not allowed"),
        ([], "postBody should be object"),
    ]:
        with pytest.raises(HeapValidationError, match=message):
            validate_body(body)


def test_single_event_form_and_user_id() -> None:
    app_id, events = validate_body({"app_id": "a", "event": "E", "user_id": "42"})
    assert app_id == "a" and events == [{"event": "E", "user_id": "42"}]


def test_content_type_and_json_are_required(emulator: HeapEmulator) -> None:
    bad = requests.post(f"{emulator.url}/api/track", data=b"{}", timeout=5)
    assert bad.status_code == 400 and "Content-Type" in bad.json()["error"]
    broken = requests.post(
        f"{emulator.url}/api/track",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert broken.status_code == 400


def test_duplicates_are_dropped_and_counted(emulator: HeapEmulator) -> None:
    assert post(emulator, {"app_id": "app", "events": [GOOD, GOOD]}).status_code == 200
    assert post(emulator, {"app_id": "app", "events": [GOOD]}).status_code == 200
    assert post(emulator, {"app_id": "other", "events": [GOOD]}).status_code == 200
    counts = stats(emulator)
    assert (counts["unique_events"], counts["duplicate_events"], counts["accepted_events"]) == (2, 2, 4)
    events = requests.get(f"{emulator.url}/_emulator/events?app_id=app", timeout=5).json()
    assert events == [{"app_id": "app", **GOOD}]


def test_app_limit_answers_429_with_optional_retry_after() -> None:
    settings = EmulatorSettings(app_limit=3, identity_limit=None, retry_after=True)
    with HeapEmulator(settings=settings) as emulator:
        events = [{**GOOD, "idempotency_key": f"key-{i:08d}"} for i in range(3)]
        assert post(emulator, {"app_id": "app", "events": events}).status_code == 200
        throttled = post(emulator, {"app_id": "app", "events": [GOOD]})
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["Retry-After"]) <= 60
        assert post(emulator, {"app_id": "another", "events": [GOOD]}).status_code == 200
        assert stats(emulator)["throttled_429"] == 1


def test_identity_limit_answers_429_without_retry_after() -> None:
    with HeapEmulator(settings=EmulatorSettings(identity_limit=2)) as emulator:
        two = [{**GOOD, "idempotency_key": f"key-{i:08d}"} for i in range(2)]
        assert post(emulator, {"app_id": "app", "events": two}).status_code == 200
        throttled = post(emulator, {"app_id": "app", "events": [GOOD]})
        assert throttled.status_code == 429 and "Retry-After" not in throttled.headers
        assert post(emulator, {"app_id": "app", "events": [{**GOOD, "identity": "u2"}]}).status_code == 200


def test_sliding_window_frees_budget_after_sixty_seconds() -> None:
    limiter = RateLimiter(app_limit=10, identity_limit=None)
    assert limiter.admit("a", ["u"] * 6, now=0.0) is None
    assert limiter.admit("a", ["u"] * 4, now=30.0) is None
    assert limiter.admit("a", ["u"], now=59.0) == pytest.approx(1.0)
    assert limiter.admit("a", ["u"] * 6, now=60.5) is None
    assert limiter.admit("a", ["u"], now=61.0) == pytest.approx(29.0)


def test_fault_injection(emulator: HeapEmulator) -> None:
    requests.post(f"{emulator.url}/_emulator/config", json={"burst_5xx": 2}, timeout=5)
    body = {"app_id": "app", "events": [GOOD]}
    assert [post(emulator, body).status_code for _ in range(3)] == [503, 503, 200]
    requests.post(f"{emulator.url}/_emulator/config", json={"drop_rate": 1.0}, timeout=5)
    with pytest.raises(requests.ConnectionError, match="closed connection without response"):
        post(emulator, body)
    requests.post(f"{emulator.url}/_emulator/config", json={"drop_rate": 0.0, "poison": "u1"}, timeout=5)
    poisoned = post(emulator, body)
    assert poisoned.status_code == 400 and "events[0]" in poisoned.json()["error"]
    bad = requests.post(f"{emulator.url}/_emulator/config", json={"nope": 1}, timeout=5)
    assert bad.status_code == 400


def test_body_size_cap(emulator: HeapEmulator) -> None:
    requests.post(f"{emulator.url}/_emulator/config", json={"max_body_bytes": 100}, timeout=5)
    assert post(emulator, {"app_id": "app", "events": [GOOD]}).status_code == 413


def test_jsonl_record(tmp_path) -> None:
    path = tmp_path / "received.jsonl"
    with HeapEmulator(jsonl_path=path) as emulator:
        post(emulator, {"app_id": "app", "events": [GOOD, GOOD]})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"app_id": "app", **GOOD}]


def test_only_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        HeapEmulator(host="0.0.0.0")


def test_intercept_answers_every_track_request_instead_of_heap(emulator: HeapEmulator) -> None:
    """A proxy, WAF or wrong host in between: its answer, nothing validated or recorded."""
    body = {"app_id": "app", "events": [GOOD]}
    location = f"{emulator.url}/_emulator/health"
    intercept = {"status": 301, "headers": {"Location": location}, "body": "moved"}
    requests.post(f"{emulator.url}/_emulator/config", json={"intercept": intercept}, timeout=5)
    answer = post(emulator, body, allow_redirects=False)
    assert (answer.status_code, answer.headers["Location"], answer.text) == (301, location, "moved")
    assert answer.headers["Content-Type"] == "text/html"
    assert stats(emulator)["intercepted"] == 1 and "accepted_events" not in stats(emulator)
    bad = requests.post(f"{emulator.url}/_emulator/config", json={"intercept": {"status": "x"}}, timeout=5)
    assert bad.status_code == 400
    requests.post(f"{emulator.url}/_emulator/config", json={"intercept": None}, timeout=5)
    assert post(emulator, body).status_code == 200


@pytest.mark.parametrize(
    ("form", "pattern"),
    [
        ("seconds", r"^\d+$"),
        ("date", r"^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$"),
        ("date-0000", r"^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d -0000$"),
        ("date-nozone", r"^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d$"),
        ("zero", r"^0$"),
    ],
)
def test_retry_after_forms(form: str, pattern: str) -> None:
    settings = EmulatorSettings(app_limit=1, identity_limit=None, retry_after=True, retry_after_form=form)
    with HeapEmulator(settings=settings) as emulator:
        assert post(emulator, {"app_id": "app", "events": [GOOD]}).status_code == 200
        throttled = post(emulator, {"app_id": "app", "events": [GOOD]})
    assert throttled.status_code == 429
    assert re.match(pattern, throttled.headers["Retry-After"])


def test_retry_after_form_is_checked(emulator: HeapEmulator) -> None:
    bad = requests.post(f"{emulator.url}/_emulator/config", json={"retry_after_form": "soon"}, timeout=5)
    assert bad.status_code == 400 and "retry_after_form" in bad.json()["error"]


AUTH = "/api/public/v0/auth_token"


def test_auth_token_issues_a_token_for_a_known_app_id_and_key_and_records_nothing(
    emulator: HeapEmulator,
) -> None:
    configured = requests.post(
        f"{emulator.url}/_emulator/config", json={"api_keys": {"main-app": "secret-key"}}, timeout=5
    )
    assert configured.status_code == 200 and configured.json()["api_keys"] == {"main-app": "***"}
    answer = requests.post(f"{emulator.url}{AUTH}", auth=("main-app", "secret-key"), timeout=5)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "expires_in"} and len(body["access_token"]) >= 32
    assert body["expires_in"] == 300  # "expires in about 5 minutes"
    again = requests.post(f"{emulator.url}{AUTH}", auth=("main-app", "secret-key"), timeout=5)
    assert again.json()["access_token"] != body["access_token"]
    counts = stats(emulator)
    assert (counts["auth_requests"], counts["auth_tokens"]) == (2, 2)
    assert not {"requests", "accepted_events", "auth_rejected_401"} & set(counts)
    assert counts["settings"]["api_keys"] == {"main-app": "***"}  # the key never shows
    assert requests.get(f"{emulator.url}/_emulator/events", timeout=5).json() == []


@pytest.mark.parametrize(
    ("headers", "auth", "reason"),
    [
        ({}, ("main-app", "wrong-key"), "invalid app_id or api_key"),
        ({}, ("other-app", "secret-key"), "invalid app_id or api_key"),
        ({}, ("", "secret-key"), "invalid app_id or api_key"),
        ({}, None, "missing or malformed"),
        ({"Authorization": "Bearer secret-key"}, None, "missing or malformed"),
        ({"Authorization": "Basic not*base64"}, None, "missing or malformed"),
        ({"Authorization": "Basic bWFpbi1hcHA="}, None, "missing or malformed"),  # "main-app", no colon
    ],
)
def test_auth_token_refuses_with_401(
    emulator: HeapEmulator, headers: dict[str, str], auth: tuple[str, str] | None, reason: str
) -> None:
    """Heap documents no status for a refusal: the emulator chose 401 (a client takes 403 too)."""
    requests.post(
        f"{emulator.url}/_emulator/config", json={"api_keys": {"main-app": "secret-key"}}, timeout=5
    )
    answer = requests.post(f"{emulator.url}{AUTH}", headers=headers, auth=auth, timeout=5)
    assert answer.status_code == 401 and reason in answer.json()["error"]
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    assert "access_token" not in answer.json()
    assert (stats(emulator)["auth_requests"], stats(emulator)["auth_rejected_401"]) == (1, 1)


def test_auth_token_without_configured_keys_refuses_every_key(emulator: HeapEmulator) -> None:
    answer = requests.post(f"{emulator.url}{AUTH}", auth=("app", "key"), timeout=5)
    assert answer.status_code == 401


@pytest.mark.parametrize("keys", [["a"], {"app": 5}, {"app": ""}, {"": "k"}, None])
def test_api_keys_setting_is_checked(emulator: HeapEmulator, keys: object) -> None:
    bad = requests.post(f"{emulator.url}/_emulator/config", json={"api_keys": keys}, timeout=5)
    assert bad.status_code == 400 and "api_keys" in bad.json()["error"]


def test_api_keys_from_the_command_line() -> None:
    from walkme_heap.emulator.process import EmulatorProcess

    with EmulatorProcess("--api-key", "main-app:secret:with-colon") as emulator:
        ok = requests.post(f"{emulator.url}{AUTH}", auth=("main-app", "secret:with-colon"), timeout=5)
        assert ok.status_code == 200 and ok.json()["access_token"]
        assert emulator.stats()["settings"]["api_keys"] == {"main-app": "***"}
