"""The emulator implements heap-track-api.md's add_user_properties strictly: both forms, validation,
the per-identity limit with 429, the profiles it holds, its own counters, the faults."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.helpers import GOOD_EVENT, FakeClock, configure, stats
from walkme_heap.emulator import EmulatorSettings, HeapEmulator
from walkme_heap.emulator.limits import UserPropertiesLimiter
from walkme_heap.emulator.process import EmulatorProcess

PATH = "/api/add_user_properties"
USER = {"identity": "u1", "properties": {"plan": "gold", "seats": 5}}


def post(emulator: HeapEmulator | EmulatorProcess, body: object, **kw: Any) -> requests.Response:
    return requests.post(
        f"{emulator.url}{PATH}",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
        timeout=5,
        **kw,
    )


def users(emulator: HeapEmulator, app_id: str | None = None) -> dict[str, Any]:
    query = f"?app_id={app_id}" if app_id else ""
    return requests.get(f"{emulator.url}/_emulator/users{query}", timeout=5).json()


def bulk(*entries: dict[str, Any], app_id: str = "app") -> dict[str, Any]:
    return {"app_id": app_id, "users": list(entries)}


def test_single_form_sets_properties_and_creates_a_user_without_events(emulator: HeapEmulator) -> None:
    answer = post(emulator, {"app_id": "app", **USER})
    assert answer.status_code == 200 and answer.json() == {"updated": 1, "created": 1}
    assert users(emulator) == {"app": {"u1": {"plan": "gold", "seats": 5}}}
    with emulator.state.lock:
        assert emulator.state.users == {"app": {"u1": {"plan": "gold", "seats": 5}}}
        assert emulator.state.events == []  # a user with no events


def test_bulk_form_overwrites_a_property_of_the_same_name_and_keeps_the_others(
    emulator: HeapEmulator,
) -> None:
    first = post(emulator, bulk(USER, {"identity": "u2", "properties": {"plan": "free"}}))
    assert first.status_code == 200 and first.json() == {"updated": 2, "created": 2}
    again = post(emulator, bulk({"identity": "u1", "properties": {"plan": "platinum", "role": "admin"}}))
    assert again.status_code == 200 and again.json() == {"updated": 1, "created": 0}
    single = post(emulator, {"app_id": "app", "identity": "u2", "properties": {"seats": 1}})
    assert single.status_code == 200
    assert post(emulator, bulk(USER, app_id="other")).status_code == 200
    assert users(emulator, "app") == {
        "app": {
            "u1": {"plan": "platinum", "seats": 5, "role": "admin"},
            "u2": {"plan": "free", "seats": 1},
        }
    }
    assert users(emulator, "other") == {"other": {"u1": {"plan": "gold", "seats": 5}}}
    assert users(emulator, "nowhere") == {}


# (change to a good bulk user, a part of the 400 message naming the field)
USER_RULES: list[tuple[dict[str, Any], str]] = [
    ({"identity": ""}, "identity should be a non-empty string"),
    ({"identity": 5}, "identity should be a non-empty string"),
    ({"identity": None}, "identity should be a non-empty string"),
    ({"identity": "x" * 256}, "identity should have at most 255 characters"),
    ({"properties": {}}, "properties should be object"),
    ({"properties": []}, "properties should be object"),
    ({"properties": "plan=gold"}, "properties should be object"),
    ({"properties": None}, "properties should be object"),
    ({"properties": {"a": {"b": 1}}}, "properties['a'] should be string or number"),
    ({"properties": {"a": [1, 2]}}, "properties['a'] should be string or number"),
    ({"properties": {"a": True}}, "properties['a'] should be string or number"),
    ({"properties": {"a": None}}, "properties['a'] should be string or number"),
    ({"properties": {"a": "x" * 1024}}, "properties['a'] should have fewer than 1024 characters"),
    ({"properties": {"k" * 1024: 1}}, "properties key should have fewer than 1024 characters"),
    ({"properties": {"id": "7"}}, "properties['id'] is reserved (any casing of id)"),
    ({"user_id": "42"}, "user_id is not allowed"),
    ({"app_id": "inner"}, "app_id is not allowed"),
    ({"event": "E"}, "event is not allowed"),
]


@pytest.mark.parametrize(("change", "message"), USER_RULES)
def test_each_rule_answers_400_naming_the_user_and_field(
    emulator: HeapEmulator, change: dict[str, Any], message: str
) -> None:
    answer = post(emulator, bulk(USER, {"identity": "u2", "properties": {"plan": "free"}, **change}))
    assert answer.status_code == 400
    assert answer.json()["error"] == f"postBody.users[1].{message}"
    assert users(emulator) == {}  # one bad user fails the whole request
    assert stats(emulator)["user_properties_rejected_400"] == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"identity": "u1", "properties": {"plan": "gold"}}, "postBody.app_id should be a non-empty string"),
        ({"app_id": "", **USER}, "postBody.app_id should be a non-empty string"),
        ({"app_id": 5, **USER}, "postBody.app_id should be a non-empty string"),
        ({"app_id": "app", "properties": {"plan": "gold"}}, "postBody.identity is required"),
        ({"app_id": "app", "identity": "u1"}, "postBody.properties is required"),
        ({"app_id": "app", "identity": "x" * 256, "properties": {"a": 1}}, "at most 255 characters"),
        ({"app_id": "app", "identity": "u1", "properties": {}}, "postBody.properties should be object"),
        ({"app_id": "app", **USER, "timestamp": "2024-03-10T00:00:00Z"}, "postBody.timestamp is not allowed"),
        (
            {"app_id": "app", "identity": "u1", "properties": {"Id": 1}},
            "postBody.properties['Id'] is reserved",
        ),
        ({"app_id": "app", "users": []}, "postBody.users should be a non-empty array"),
        ({"app_id": "app", "users": USER}, "postBody.users should be a non-empty array"),
        ({"app_id": "app", "users": [USER], "identity": "u1"}, "postBody.identity is not allowed"),
        ({"app_id": "app", "users": ["u1"]}, "postBody.users[0] should be object"),
        ({"app_id": "app", "users": [{"properties": {"a": 1}}]}, "postBody.users[0].identity is required"),
        ({"app_id": "app", "users": [{"identity": "u1"}]}, "postBody.users[0].properties is required"),
        ({"users": [USER]}, "postBody.app_id should be a non-empty string"),
        (["app", USER], "postBody should be object"),
    ],
)
def test_envelope_and_single_form_rules(emulator: HeapEmulator, body: object, message: str) -> None:
    answer = post(emulator, body)
    assert answer.status_code == 400 and message in answer.json()["error"]
    assert users(emulator) == {}


def test_an_identity_named_twice_in_one_request_is_refused(emulator: HeapEmulator) -> None:
    """Which of two updates of one user Heap would keep is undocumented: the emulator refuses."""
    twice = bulk(USER, {"identity": "u2", "properties": {"a": 1}}, {"identity": "u1", "properties": {"a": 2}})
    answer = post(emulator, twice)
    assert answer.status_code == 400
    assert answer.json()["error"] == "postBody.users[2].identity repeats postBody.users[0]"
    assert users(emulator) == {}


def test_content_type_and_json_are_required(emulator: HeapEmulator) -> None:
    plain = requests.post(f"{emulator.url}{PATH}", data=json.dumps({"app_id": "a", **USER}), timeout=5)
    assert plain.status_code == 400 and "Content-Type" in plain.json()["error"]
    broken = requests.post(
        f"{emulator.url}{PATH}", data=b"{not json", headers={"Content-Type": "application/json"}, timeout=5
    )
    assert broken.status_code == 400 and broken.json()["error"] == "postBody is not JSON"
    nan = requests.post(
        f"{emulator.url}{PATH}",
        data=json.dumps({"app_id": "a", "identity": "u1", "properties": {"n": float("nan")}}),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert nan.status_code == 400 and "finite" in nan.json()["error"]
    assert stats(emulator)["user_properties_rejected_400"] == 3


def test_a_thousand_users_pass_a_thousand_and_one_are_refused(emulator: HeapEmulator) -> None:
    many = [{"identity": f"user-{i:04d}", "properties": {"n": i}} for i in range(1001)]
    refused = post(emulator, bulk(*many))
    assert refused.status_code == 400
    assert refused.json()["error"] == "postBody.users should have at most 1000 items"
    assert users(emulator) == {}
    accepted = post(emulator, bulk(*many[:1000]))
    assert accepted.status_code == 200 and accepted.json() == {"updated": 1000, "created": 1000}
    assert len(users(emulator, "app")["app"]) == 1000


@pytest.mark.parametrize("name", ["id", "ID", "Id", "iD"])
def test_id_in_any_casing_is_reserved(emulator: HeapEmulator, name: str) -> None:
    answer = post(emulator, bulk({"identity": "u1", "properties": {"plan": "gold", name: "7"}}))
    assert answer.status_code == 400
    assert answer.json()["error"] == f"postBody.users[0].properties['{name}'] is reserved (any casing of id)"


def test_email_and_names_that_merely_contain_id_are_ordinary_properties(emulator: HeapEmulator) -> None:
    properties = {"email": "ada@example.com", "Email": "x", "user_id": "7", "idx": 1, " id": 2, "uid": "u"}
    assert post(emulator, bulk({"identity": "u1", "properties": properties})).status_code == 200
    assert users(emulator, "app")["app"]["u1"] == properties


def test_values_at_the_documented_bounds_are_accepted(emulator: HeapEmulator) -> None:
    properties = {"k" * 1023: "x" * 1023, "n": -3, "f": 0.25, "big": 2**70}
    assert post(emulator, bulk({"identity": "x" * 255, "properties": properties})).status_code == 200
    assert users(emulator, "app")["app"]["x" * 255] == properties


def test_the_31st_request_in_30_seconds_gets_429_with_retry_after_then_the_window_frees_it() -> None:
    clock = FakeClock()
    settings = EmulatorSettings(retry_after=True)
    with HeapEmulator(settings=settings, clock=clock.time) as emulator:
        for i in range(30):  # every half second, the last one 14.5 s after the first
            single = {"app_id": "app", "identity": "u1", "properties": {"n": i}}
            assert post(emulator, single).status_code == 200, i
            clock.advance(0.5)
        throttled = post(emulator, {"app_id": "app", "identity": "u1", "properties": {"n": 30}})
        assert throttled.status_code == 429 and throttled.json() == {"error": "rate limit exceeded"}
        assert throttled.headers["Retry-After"] == "15"  # the first request leaves the window then
        assert users(emulator, "app")["app"]["u1"] == {"n": 29}  # nothing of a refused request applied
        other = post(emulator, {"app_id": "app", "identity": "u2", "properties": {"n": 1}})
        assert other.status_code == 200  # per identity ...
        elsewhere = post(emulator, {"app_id": "app-2", "identity": "u1", "properties": {"n": 1}})
        assert elsewhere.status_code == 200  # ... per app_id
        track = requests.post(
            f"{emulator.url}/api/track",
            json={"app_id": "app", "events": [GOOD_EVENT]},
            timeout=5,
        )
        assert track.status_code == 200  # track's budgets are not this endpoint's
        clock.advance(15.0)  # 30 s after the first request: it left the window
        assert post(emulator, {"app_id": "app", "identity": "u1", "properties": {"n": 31}}).status_code == 200
        again = post(emulator, {"app_id": "app", "identity": "u1", "properties": {"n": 32}})
        assert again.status_code == 429 and again.headers["Retry-After"] == "1"  # sliding: 0.5 s more
        clock.advance(0.5)
        assert post(emulator, {"app_id": "app", "identity": "u1", "properties": {"n": 33}}).status_code == 200
        counts = stats(emulator)
    assert counts["user_properties_requests"] == 36
    assert counts["user_properties_throttled_429"] == 2
    assert counts["user_properties_users_updated"] == 34
    assert "throttled_429" not in counts and counts["requests"] == 1


def test_429_without_retry_after_unless_asked() -> None:
    clock = FakeClock()
    with HeapEmulator(settings=EmulatorSettings(user_properties_limit=1), clock=clock.time) as emulator:
        assert post(emulator, bulk(USER)).status_code == 200
        throttled = post(emulator, bulk(USER))
        assert throttled.status_code == 429 and "Retry-After" not in throttled.headers


def test_a_bulk_request_counts_once_per_identity_and_one_identity_over_refuses_it_whole() -> None:
    clock = FakeClock()
    with HeapEmulator(settings=EmulatorSettings(user_properties_limit=2), clock=clock.time) as emulator:
        a, b, c = ({"identity": name, "properties": {"p": 1}} for name in ("a", "b", "c"))
        assert post(emulator, bulk(a, b)).status_code == 200
        assert post(emulator, bulk(a, c)).status_code == 200  # a: 2 of 2, b: 1, c: 1
        refused = post(emulator, bulk(b, c, a))
        assert refused.status_code == 429
        assert post(emulator, bulk(b, c)).status_code == 200  # the refused request counted nothing
        assert set(users(emulator, "app")["app"]) == {"a", "b", "c"}
        counts = stats(emulator)
    assert counts["user_properties_users_updated"] == 6 and counts["user_properties_throttled_429"] == 1


@pytest.mark.parametrize("off", [None, 0])
def test_the_limit_can_be_turned_off(off: int | None) -> None:
    with HeapEmulator(settings=EmulatorSettings(user_properties_limit=off)) as emulator:
        assert all(post(emulator, bulk(USER)).status_code == 200 for _ in range(40))


def test_the_limit_can_be_changed_through_config(emulator: HeapEmulator) -> None:
    configure(emulator, user_properties_limit=2)
    assert [post(emulator, bulk(USER)).status_code for _ in range(3)] == [200, 200, 429]
    configure(emulator, user_properties_limit=0)
    assert post(emulator, bulk(USER)).status_code == 200
    assert stats(emulator)["settings"]["user_properties_limit"] == 0
    for bad in (-1, "30", 2.5, True):
        answer = requests.post(
            f"{emulator.url}/_emulator/config", json={"user_properties_limit": bad}, timeout=5
        )
        assert answer.status_code == 400 and "user_properties_limit" in answer.json()["error"]


def test_the_default_limit_is_the_documented_one(emulator: HeapEmulator) -> None:
    assert stats(emulator)["settings"]["user_properties_limit"] == 30


def test_the_limit_from_the_command_line() -> None:
    with EmulatorProcess("--user-properties-limit", "off") as process:
        assert all(post(process, bulk(USER)).status_code == 200 for _ in range(31))
        assert process.stats()["settings"]["user_properties_limit"] is None
    with EmulatorProcess("--user-properties-limit", "1", "--retry-after") as process:
        assert post(process, bulk(USER)).status_code == 200
        throttled = post(process, bulk(USER))
        assert throttled.status_code == 429 and 1 <= int(throttled.headers["Retry-After"]) <= 30


def test_sliding_window_of_thirty_seconds() -> None:
    limiter = UserPropertiesLimiter(3)
    assert limiter.admit("a", ["u"], now=0.0) is None
    assert limiter.admit("a", ["u", "v"], now=10.0) is None
    assert limiter.admit("a", ["u"], now=20.0) is None
    assert limiter.admit("a", ["v", "u"], now=29.0) == pytest.approx(1.0)  # u is full, v is not
    assert limiter.admit("a", ["v"], now=29.0) is None  # the refused request counted nothing
    assert limiter.admit("a", ["u"], now=30.0) is None
    assert limiter.admit("a", ["u"], now=30.0) == pytest.approx(10.0)
    assert limiter.admit("b", ["u"], now=30.0) is None


def test_counters_are_separate_from_track(emulator: HeapEmulator) -> None:
    assert post(emulator, bulk(USER, {"identity": "u2", "properties": {"a": 1}})).status_code == 200
    assert post(emulator, {"app_id": "app", **USER}).status_code == 200
    assert post(emulator, bulk({"identity": "u1", "properties": {"id": 1}})).status_code == 400
    counts = stats(emulator)
    assert {k: v for k, v in counts.items() if k.startswith("user_properties_")} == {
        "user_properties_requests": 3,
        "user_properties_users_updated": 3,
        "user_properties_users_created": 2,
        "user_properties_rejected_400": 1,
    }
    assert not {"requests", "accepted_events", "rejected_400"} & set(counts)


def test_fault_injection_applies_to_this_endpoint(emulator: HeapEmulator) -> None:
    configure(emulator, burst_5xx=2)
    assert [post(emulator, bulk(USER)).status_code for _ in range(3)] == [503, 503, 200]
    configure(emulator, throttle_burst=1, retry_after=True)
    storm = post(emulator, bulk(USER))
    assert storm.status_code == 429 and storm.headers["Retry-After"] == "1"
    configure(emulator, drop_rate=1.0)
    with pytest.raises(requests.ConnectionError, match="closed connection without response"):
        post(emulator, bulk(USER))
    configure(emulator, drop_rate=0.0, drop_after_accept_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        post(emulator, bulk({"identity": "late", "properties": {"a": 1}}))
    assert "late" in users(emulator, "app")["app"]  # processed, then unanswered
    configure(emulator, drop_after_accept_rate=0.0, poison="bad-user")
    poisoned = post(emulator, bulk(USER, {"identity": "bad-user", "properties": {"a": 1}}))
    assert poisoned.status_code == 400
    assert poisoned.json()["error"] == "postBody.users[1] was rejected (poisoned user)"
    single = post(emulator, {"app_id": "app", "identity": "bad-user", "properties": {"a": 1}})
    assert single.json()["error"] == "postBody was rejected (poisoned user)"
    configure(emulator, poison=None, intercept={"status": 403, "body": "blocked"})
    blocked = post(emulator, bulk(USER))
    assert (blocked.status_code, blocked.text) == (403, "blocked")
    configure(emulator, intercept=None, max_body_bytes=50)
    assert post(emulator, bulk(USER, {"identity": "u2", "properties": {"a": 1}})).status_code == 413
    counts = stats(emulator)
    assert counts["user_properties_errors_5xx"] == 2
    assert counts["user_properties_throttled_429"] == 1
    assert counts["user_properties_dropped"] == 1
    assert counts["user_properties_dropped_after_accept"] == 1
    assert counts["user_properties_intercepted"] == 1
    assert counts["user_properties_rejected_413"] == 1
    assert counts["user_properties_rejected_400"] == 2
    assert not {"errors_5xx", "dropped", "intercepted", "rejected_413"} & set(counts)


def test_reset_forgets_the_profiles_and_the_limit_windows() -> None:
    with HeapEmulator(settings=EmulatorSettings(user_properties_limit=1)) as emulator:
        assert post(emulator, bulk(USER)).status_code == 200
        assert post(emulator, bulk(USER)).status_code == 429
        requests.post(f"{emulator.url}/_emulator/reset", timeout=5)
        assert users(emulator) == {}
        assert post(emulator, bulk(USER)).status_code == 200
