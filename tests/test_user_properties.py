"""User attributes become Heap user properties: configured and refused as Heap would, the latest
value by event time per identity, only changes sent (the ledger, per app and identity, on SQLite,
PostgreSQL and MariaDB), refused users isolated and dead-lettered, Heap's limits kept, and a run
killed mid-sync sends each user once more at most."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from tests.helpers import FAST_RETRIES, ROOT, FakeClock, configure, dead_letters, received, run_records, stats
from walkme_heap.config import ConfigError, parse_mapping, parse_pipeline
from walkme_heap.deadletters import DeadLetters
from walkme_heap.delivery.client import HeapClient
from walkme_heap.delivery.sender import RetryPolicy
from walkme_heap.emulator import EmulatorSettings, HeapEmulator
from walkme_heap.ledger import Ledger
from walkme_heap.ledger import user_properties as user_store
from walkme_heap.mapping.columns import bind_columns
from walkme_heap.mapping.mapper import Mapper
from walkme_heap.mapping.spec import EventNameSpec, MappingSpec, UserPropertiesSpec
from walkme_heap.mapping.user_properties import (
    LatestUserValues,
    UserPropertyNameError,
    UserValues,
    default_name,
    user_columns,
)
from walkme_heap.replay import DeliveryError, ReplayOptions, replay
from walkme_heap.report import render
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.summary import ReplaySummary
from walkme_heap.window import Window

FIRST = datetime(2024, 3, 10, tzinfo=UTC)
HEADER = ["wm.euId", "created_at", "type", "oType", "oId", "sId", "wm.userVars.plan", "wm.userVars.dept"]
USERS = UserPropertiesSpec()
SPEC = MappingSpec(event_name=EventNameSpec(event_type="complete"), user_properties=USERS)
Row = tuple[str, int, str, str]  # identity, event ms, plan, dept


def day(n: int, days: int = 1) -> Window:
    return Window(FIRST + timedelta(days=n), FIRST + timedelta(days=n + days))


def at(n: int, hour: float) -> int:
    return day(n).start_ms + int(hour * 3_600_000)


def write(path: Path, rows: list[Row], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for n, (who, when, plan, dept) in enumerate(rows):
            writer.writerow([who, when, "play", "wt", "1", f"s-{path.stem}-{n}", plan, dept])
    return path


def run(
    emulator: HeapEmulator,
    ledger: Ledger | None,
    tmp_path: Path,
    app: str,
    path: Path | str,
    window: Window,
    spec: MappingSpec = SPEC,
    chunk_rows: int = 100,
    **options: Any,
) -> ReplaySummary:
    client = HeapClient(emulator.url, app, connect_timeout=2, read_timeout=10)
    letters = DeadLetters(str(tmp_path / "dead"), app, window.label)
    settings = {"retry": FAST_RETRIES, "max_invalid_ratio": 1.0, **options}
    try:
        return replay(
            app,
            CsvSource(str(path), window, chunk_rows=chunk_rows),
            spec,
            window,
            client,
            ReplayOptions(**settings),
            ledger=ledger,
            dead_letters=None if settings.get("dry_run") else letters,
        )
    finally:
        client.close()


def profiles(emulator: HeapEmulator, app: str) -> dict[str, dict[str, Any]]:
    with emulator.state.lock:
        return {who: dict(props) for who, props in emulator.state.users.get(app, {}).items()}


def user_counts(summary: ReplaySummary) -> tuple[int, int, int, int]:
    return summary.users, summary.users_updated, summary.users_unchanged, summary.users_refused


@pytest.fixture
def app(pipeline: str) -> str:
    """A Heap app of its own (user properties are kept per app, in a ledger other tests share)."""
    return pipeline


# -- configuration ---------------------------------------------------------------------------------


def pipeline_config(**user_properties: Any) -> dict[str, Any]:
    return {
        "start_date": "2024-03-10",
        "source": {"type": "csv", "path": "x_{date:%Y-%m-%d}.csv"},
        "mapping": {"preset": "webhook"},
        "user_properties": user_properties,
    }


def test_user_properties_are_off_by_default_and_on_with_their_section(tmp_path: Path) -> None:
    plain = pipeline_config()
    del plain["user_properties"]
    assert parse_pipeline("p", plain, "f", tmp_path).mapping.user_properties is None
    on = parse_pipeline("p", {**plain, "user_properties": None}, "f", tmp_path).mapping.user_properties
    assert on == UserPropertiesSpec()
    spec = parse_pipeline(
        "p",
        pipeline_config(
            columns=["wm.userVars.*", "wm.language"],
            names={"wm.language": "language", "wm.userVars.mail": "email"},
            keep_on_events=True,
            empty_erases=True,
        ),
        "f",
        tmp_path,
    ).mapping.user_properties
    assert spec == UserPropertiesSpec(
        columns=("wm.userVars.*", "wm.language"),
        names=(("wm.language", "language"), ("wm.userVars.mail", "email")),
        keep_on_events=True,
        empty_erases=True,
    )
    # an operator's mapping dict carries it under mapping (no pipeline around it)
    assert parse_mapping({"user_properties": {"keep_on_events": True}}, "op").user_properties == (
        UserPropertiesSpec(keep_on_events=True)
    )


@pytest.mark.parametrize("name", ["id", "ID", "Id", " iD ", "", "x" * 1024])
def test_names_heap_refuses_are_refused_in_configuration(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"key 'user_properties.names' gives column 'wm.userVars.key'"):
        parse_pipeline("p", pipeline_config(names={"wm.userVars.key": name}), "f", tmp_path)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (
            {"columns": ["wm.userVars.ID"]},
            r"'user_properties.columns' selects 'wm.userVars.ID', whose Heap name 'ID'",
        ),
        ({"names": {"User Type": "type"}}, r"renames 'User Type', which user_properties.columns"),
        ({"names": {"wm.userVars.a": "plan", "wm.userVars.b": "plan"}}, r"two columns the Heap name 'plan'"),
        ({"columns": ["wm.userVars.plan", "plan"]}, r"two columns the Heap name 'plan'"),
        ({"keep_on_events": "yes"}, r"keep_on_events' must be bool"),
        ({"colums": ["x"]}, r"'user_properties.colums' is not a known setting"),
    ],
)
def test_configuration_mistakes_are_named(tmp_path: Path, settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_pipeline("p", pipeline_config(**settings), "f", tmp_path)


def test_a_pipeline_without_a_preset_names_its_user_columns(tmp_path: Path) -> None:
    config = pipeline_config()
    config["mapping"] = {"preset": "none", "columns": {"identity": "who", "timestamp": "when"}}
    with pytest.raises(
        ConfigError, match=r"'user_properties.columns' is required when mapping.preset is none"
    ):
        parse_pipeline("p", config, "f", tmp_path)
    twice = pipeline_config()
    twice["mapping"] = {"user_properties": {}}
    with pytest.raises(ConfigError, match=r"'mapping.user_properties' is set twice"):
        parse_pipeline("p", twice, "f", tmp_path)


# -- which columns, which names --------------------------------------------------------------------


def test_heap_names_of_the_presets_columns_and_renames() -> None:
    assert default_name("wm.userVars.plan") == "plan"
    assert default_name("wm_uservars_plan") == "plan"
    assert default_name("User Type") == "User Type"
    headers = ["wm.euId", "created_at", "type", "wm.userVars.plan", "wm.userVars.mail", "wm.language", "oId"]
    bound = bind_columns(SPEC, headers, "f").roles
    renamed = MappingSpec(user_properties=UserPropertiesSpec(names=(("wm.userVars.mail", "email"),)))
    assert user_columns(renamed, headers, bound) == {"wm.userVars.plan": "plan", "wm.userVars.mail": "email"}
    report = MappingSpec(preset="report", user_properties=UserPropertiesSpec())
    report_headers = ["End User ID", "Question Date & Time (UTC)", "User Type", "User Role", "Answer"]
    roles = bind_columns(report, report_headers, "f").roles
    assert user_columns(report, report_headers, roles) == {"User Type": "User Type", "User Role": "User Role"}


def test_user_columns_leave_the_events_unless_kept_there() -> None:
    frame = pd.DataFrame(
        {"wm.euId": ["u1"], "created_at": [str(at(0, 1))], "type": ["play"], "wm.userVars.plan": ["gold"]},
        dtype="string",
    )
    bound = bind_columns(SPEC, list(frame.columns), "f")
    events = Mapper(SPEC, bound).map_chunk(frame, day(0).start_ms, day(0).end_ms)
    assert events.events[0]["properties"] == {"type": "play"}
    assert events.users is not None and events.users.values == {"plan": ["gold"]}
    kept = MappingSpec(user_properties=UserPropertiesSpec(keep_on_events=True))
    events = Mapper(kept, bound).map_chunk(frame, day(0).start_ms, day(0).end_ms)
    assert events.events[0]["properties"] == {"type": "play", "wm.userVars.plan": "gold"}
    plain = Mapper(MappingSpec(), bound).map_chunk(frame, day(0).start_ms, day(0).end_ms)
    assert plain.users is None and plain.events[0]["properties"] == {
        "type": "play",
        "wm.userVars.plan": "gold",
    }


def test_a_column_whose_name_heap_refuses_fails_the_run_before_anything_is_sent(
    emulator: HeapEmulator, tmp_path: Path
) -> None:
    header = [*HEADER, "wm.userVars.Id"]
    path = tmp_path / "day.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, ["u1", at(0, 1), "play", "wt", "1", "s", "gold", "IT", "42"]])
    with pytest.raises(UserPropertyNameError, match=r"'wm.userVars.Id': its Heap name 'Id' is reserved"):
        run(emulator, None, tmp_path, "app", path, day(0))
    assert received(emulator) == [] and stats(emulator).get("user_properties_requests", 0) == 0


# -- the latest value by event time ----------------------------------------------------------------


def chunk(rows: list[tuple[str, int, Any]]) -> UserValues:
    return UserValues([r[0] for r in rows], np.array([r[1] for r in rows]), {"plan": [r[2] for r in rows]})


def test_the_latest_value_by_event_time_wins_across_chunks_whatever_the_order_read() -> None:
    latest = LatestUserValues(USERS)
    latest.add(chunk([("u1", 50, "gold"), ("u1", 10, "free"), ("u2", 5, "team")]))
    latest.add(chunk([("u1", 30, "trial"), ("u2", 7, None), ("u3", 1, None)]))  # blank: no value
    latest.add(chunk([("u2", 5, "team-2")]))  # the same millisecond: the row read last wins
    assert dict(latest.users()) == {"u1": {"plan": ("gold", 50)}, "u2": {"plan": ("team-2", 5)}}
    erasing = LatestUserValues(UserPropertiesSpec(empty_erases=True))
    erasing.add(chunk([("u1", 50, None), ("u1", 10, "free")]))
    assert dict(erasing.users()) == {"u1": {"plan": ("", 50)}}


def test_the_latest_value_across_files_and_chunks_reaches_heap(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, app: str
) -> None:
    """A two-day window over two daily files, read a row a chunk: day 1's file holds late rows of
    day 0, older and newer than day 0's own."""
    write(
        tmp_path / "x_2024-03-10.csv",
        [("u1", at(0, 23), "A", "Sales"), ("u2", at(0, 10), "X", ""), ("u3", at(0, 9), "solo", "IT")],
    )
    write(
        tmp_path / "x_2024-03-11.csv",
        [
            ("u1", at(1, 1), "B", ""),
            ("u1", at(0, 22), "C", "HR"),  # late and older: neither B nor Sales is replaced
            ("u2", at(0, 11), "Y", "Ops"),  # late but newer than X
        ],
    )
    summary = run(
        emulator, ledger, tmp_path, app, tmp_path / "x_{date:%Y-%m-%d}.csv", day(0, 2), chunk_rows=1
    )
    assert user_counts(summary) == (3, 3, 0, 0) and summary.user_requests == 1
    assert profiles(emulator, app) == {
        "u1": {"plan": "B", "dept": "Sales"},
        "u2": {"plan": "Y", "dept": "Ops"},
        "u3": {"plan": "solo", "dept": "IT"},
    }
    assert not any("plan" in str(e.get("properties")) for e in received(emulator))  # not on every event
    record = run_records(ledger, app)[0]
    assert (record["users_updated"], record["users_unchanged"], record["users_refused"]) == (3, 0, 0)


# -- only changes, never an older value over a newer one ------------------------------------------


def test_only_changes_are_sent_and_days_run_out_of_order_never_overwrite_a_later_value(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, app: str
) -> None:
    files = {
        0: [("u1", at(0, 5), "A", "Sales"), ("u2", at(0, 5), "free", "IT")],
        1: [("u1", at(1, 5), "B", "Sales"), ("u2", at(1, 5), "free", "IT")],  # u1's plan B: older than day 3
        3: [("u1", at(3, 5), "A", "Sales"), ("u2", at(3, 5), "pro", "IT")],
        4: [("u1", at(4, 5), "C", "Sales"), ("u2", at(4, 5), "pro", "IT")],
    }
    for n, rows in files.items():
        write(tmp_path / f"x_{day(n).label}.csv", rows)
    template = tmp_path / "x_{date:%Y-%m-%d}.csv"

    def replay_day(n: int, **options: Any) -> ReplaySummary:
        return run(emulator, ledger, tmp_path, app, template, day(n), **options)

    assert user_counts(replay_day(0)) == (2, 2, 0, 0)
    assert user_counts(replay_day(0)) == (2, 0, 2, 0)  # the same day again: nothing changed
    assert stats(emulator)["user_properties_requests"] == 1
    third = replay_day(3)  # a backfill ahead: u1 unchanged (A again, now from day 3), u2 plan changed
    assert user_counts(third) == (2, 1, 1, 0) and third.user_values_sent == 1
    assert profiles(emulator, app)["u2"] == {"plan": "pro", "dept": "IT"}
    # day 1 afterwards: u1's plan B is older than the A known from day 3, u2's free older than pro
    assert user_counts(replay_day(1)) == (2, 0, 2, 0)
    assert profiles(emulator, app) == {
        "u1": {"plan": "A", "dept": "Sales"},
        "u2": {"plan": "pro", "dept": "IT"},
    }
    fourth = replay_day(4)
    assert user_counts(fourth) == (2, 1, 1, 0) and profiles(emulator, app)["u1"]["plan"] == "C"
    assert user_counts(replay_day(4)) == (2, 0, 2, 0)
    forced = replay_day(4, force=True)  # force sends the latest values again, still never older ones
    assert user_counts(forced) == (2, 2, 0, 0)
    assert user_counts(replay_day(1, force=True)) == (2, 0, 2, 0)
    assert profiles(emulator, app) == {
        "u1": {"plan": "C", "dept": "Sales"},
        "u2": {"plan": "pro", "dept": "IT"},
    }
    assert stats(emulator).get("user_properties_throttled_429", 0) == 0


def test_a_dry_run_counts_from_the_ledger_and_writes_nothing(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, app: str
) -> None:
    path = write(tmp_path / "day.csv", [("u1", at(0, 1), "A", "IT"), ("u2", at(0, 2), "B", "")])

    def dry(app_id: str | None) -> ReplaySummary:
        """As the operator runs one: no client, the connection's app (None: no app known)."""
        options = ReplayOptions(dry_run=True, app_id=app_id)
        return replay(app, CsvSource(str(path), day(0)), SPEC, day(0), None, options, ledger=ledger)

    first = dry(app)
    assert user_counts(first) == (2, 2, 0, 0) and "users would be updated" in first.table()
    assert stats(emulator).get("user_properties_requests", 0) == 0
    assert ledger.user_properties.known(app, [user_store.digest("u1"), user_store.digest("u2")]) == {}
    run(emulator, ledger, tmp_path, app, path, day(0))
    assert user_counts(dry(app)) == (2, 0, 2, 0)
    assert user_counts(dry(None)) == (2, 2, 0, 0)  # no app known: nothing to compare with
    assert user_counts(dry(f"{app}-other")) == (2, 2, 0, 0)  # another app holds none of it
    assert stats(emulator)["user_properties_requests"] == 1


# -- refused users, limits ---------------------------------------------------------------------------


def test_a_user_heap_refuses_is_isolated_and_dead_lettered_and_the_others_are_sent(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, app: str
) -> None:
    rows = [(f"u{n}", at(0, 1 + n), "plan", "IT") for n in range(8)]
    rows[5] = ("u5", at(0, 6), "plan", "refuse-me")
    path = write(tmp_path / "day.csv", rows)
    configure(emulator, poison="refuse-me")
    summary = run(emulator, ledger, tmp_path, app, path, day(0))
    assert user_counts(summary) == (8, 7, 0, 1) and summary.sent == 8  # the events are not affected
    assert sorted(profiles(emulator, app)) == [f"u{n}" for n in range(8) if n != 5]
    letters = [
        d
        for d in dead_letters(tmp_path / "dead" / app / "2024-03-10.jsonl")
        if d["outcome"] == "user_refused"
    ]
    assert len(letters) == 1
    letter = letters[0]
    assert letter["reason"] == "user_properties_rejected_by_heap" and "postBody.users[0]" in letter["message"]
    assert letter["payload"] == {"identity": "u5", "properties": {"plan": "plan", "dept": "refuse-me"}}
    again = run(emulator, ledger, tmp_path, app, path, day(0))  # never recorded: tried again, refused again
    assert user_counts(again) == (8, 0, 7, 1)
    assert (
        "users refused" in again.table()
        and "users 8 = updated + unchanged + refused + unsent = 8" in again.table()
    )


def test_heaps_limits_are_kept_a_thousand_users_a_request_and_thirty_requests_per_identity(
    ledger: Ledger, tmp_path: Path, app: str
) -> None:
    """2,500 users: three requests. Then each user's values change and three 503s make the same
    users' request go four times: with the emulator's limit of 3 requests per 30 s per identity (on a
    shared made-up clock), the client waits instead of drawing a 429."""
    clock = FakeClock()
    settings = EmulatorSettings(user_properties_limit=3)
    rows = [(f"user-{n:04d}", at(0, n / 200), "A", "IT") for n in range(2500)]
    path = write(tmp_path / "day.csv", rows)
    with HeapEmulator(settings=settings, clock=clock.time) as emulator:
        options = {"clock": clock.monotonic, "sleep": clock.sleep, "user_requests_per_identity": 3}
        first = run(emulator, ledger, tmp_path, app, path, day(0), chunk_rows=1000, **options)
        assert user_counts(first) == (2500, 2500, 0, 0) and first.user_requests == 3
        write(path, [(who, when, "B", dept) for who, when, _, dept in rows[:10]] + rows[10:12])
        configure(emulator, burst_5xx=3)
        second = run(emulator, ledger, tmp_path, app, path, day(0), **options)
        assert user_counts(second) == (12, 10, 2, 0) and second.user_retries == 3
        assert second.user_requests == 4
        assert any(25 <= s <= 31 for s in clock.sleeps), clock.sleeps  # waited for the window
        counts = stats(emulator)
        assert (
            counts.get("user_properties_throttled_429", 0) == 0 and counts["user_properties_errors_5xx"] == 3
        )
        assert profiles(emulator, app)["user-0003"] == {"plan": "B", "dept": "IT"}


def test_a_429_to_add_user_properties_is_waited_out_and_sent_again(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, app: str
) -> None:
    path = write(tmp_path / "day.csv", [("u1", at(0, 1), "A", "IT")])
    run(emulator, ledger, tmp_path, app, path, day(0))  # the events first, so the burst meets the users
    write(path, [("u1", at(0, 1), "B", "IT")])
    configure(emulator, throttle_burst=2)
    summary = run(emulator, ledger, tmp_path, app, path, day(0))
    assert user_counts(summary) == (1, 1, 0, 0) and summary.user_throttled == 2
    assert profiles(emulator, app) == {"u1": {"plan": "B", "dept": "IT"}}


def test_heap_refusing_every_request_stops_the_run_with_the_users_unsent(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, app: str
) -> None:
    path = write(tmp_path / "day.csv", [("u1", at(0, 1), "A", "IT"), ("u2", at(0, 1), "A", "IT")])
    run(emulator, ledger, tmp_path, app, path, day(0))
    write(path, [("u1", at(0, 1), "B", "IT"), ("u2", at(0, 1), "B", "IT")])
    configure(emulator, burst_5xx=1000)
    with pytest.raises(DeliveryError, match="add_user_properties") as failure:
        run(
            emulator,
            ledger,
            tmp_path,
            app,
            path,
            day(0),
            retry=RetryPolicy(base_seconds=0.01, max_seconds=0.3),
        )
    summary = failure.value.summary
    assert (summary.users, summary.users_updated, summary.users_unsent) == (2, 0, 2)
    assert summary.users_unaccounted == 0
    configure(emulator, burst_5xx=0)
    assert user_counts(run(emulator, ledger, tmp_path, app, path, day(0))) == (2, 2, 0, 0)


# -- a run killed mid-sync ----------------------------------------------------------------------------

CHILD = """
import sys
from tests.helpers import open_ledger_of_kind
from tests.test_user_properties import SPEC, day
from walkme_heap.delivery.client import HeapClient
from walkme_heap.delivery.sender import RetryPolicy
from walkme_heap.replay import DeliveryError, ReplayOptions, replay
from walkme_heap.sources.csv_files import CsvSource

path, url, kind, sqlite_path, app = sys.argv[1:6]
ledger = open_ledger_of_kind(kind, sqlite_path)
client = HeapClient(url, app, read_timeout=60)
replay(app, CsvSource(path, day(0), chunk_rows=1000), SPEC, day(0), client, ReplayOptions(), ledger=ledger)
"""


def test_sigkill_mid_sync_then_rerun_sends_each_changed_user_once_more_at_most(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, app: str
) -> None:
    """Killed while Heap holds the second of three add_user_properties requests (applied, its
    answer not yet given): the re-run sends that request's users again and the last one's, not the
    first's."""
    rows = [(f"user-{n:04d}", at(0, n / 200), "A", "IT") for n in range(2500)]
    path = write(tmp_path / "day.csv", rows)
    configure(emulator, slow_burst=100, slow_burst_ms=1500)  # every answer 1.5 s after it is applied
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(path),
            emulator.url,
            ledger.database.dialect.name,
            str(tmp_path / "ledger.db"),
            app,
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while stats(emulator).get("user_properties_users_updated", 0) < 2000:
        assert child.poll() is None, child.stdout.read().decode() if child.stdout else ""
        assert time.monotonic() < deadline, "the replay never reached its second add_user_properties request"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    configure(emulator, slow_burst=0)
    again = run(emulator, ledger, tmp_path, app, path, day(0))
    assert user_counts(again) == (2500, 1500, 1000, 0)
    assert again.already_sent == 2500
    received_users = stats(emulator)["user_properties_users_updated"]
    assert received_users == 2500 + 1000  # the request in flight, and only it, went twice
    assert all(p == {"plan": "A", "dept": "IT"} for p in profiles(emulator, app).values())
    assert len(profiles(emulator, app)) == 2500


# -- the summary, the run record, the report ----------------------------------------------------------


def test_user_counts_travel_with_the_summary_and_add_up_over_shards() -> None:
    window = {"start": "2024-03-10T00:00:00+00:00", "end": "2024-03-11T00:00:00+00:00"}
    part = ReplaySummary(
        "p", window, users=5, users_updated=3, users_unchanged=1, users_refused=1, user_requests=2
    )
    back = ReplaySummary.from_dict(part.as_dict())
    assert user_counts(back) == (5, 3, 1, 1) and back.user_requests == 2
    total = ReplaySummary.combine([part, back])
    assert user_counts(total) == (10, 6, 2, 2) and total.users_unaccounted == 0
    assert "users with attribute values" not in ReplaySummary("p", window).table()


def test_the_report_shows_a_runs_users() -> None:
    run_row = {
        "pipeline": "p",
        "window_label": "2024-03-10",
        "window_start": "2024-03-10T00:00:00+00:00",
        "status": "success",
        "users_updated": 40,
        "users_unchanged": 2,
        "users_refused": 1,
    }
    page = render(
        {
            "days": [
                run_row,
                {
                    **run_row,
                    "users_updated": None,
                    "users_unchanged": None,
                    "users_refused": None,
                    "window_label": "2024-03-09",
                },
            ],
            "sent_per_day": [],
            "ledgers": ["x"],
        },
        None,
        None,
    )
    assert '<td data-col="users">40 / 2 / 1</td>' in page
    assert '<td data-col="users"></td>' in page


def test_the_emulator_profiles_are_what_get_users_returns(emulator: HeapEmulator, tmp_path: Path) -> None:
    path = write(tmp_path / "day.csv", [("u1", at(0, 1), "A", "IT")])
    run(emulator, None, tmp_path, "app", path, day(0))
    assert requests.get(f"{emulator.url}/_emulator/users", timeout=5).json() == {
        "app": {"u1": {"plan": "A", "dept": "IT"}}
    }


def test_two_runs_at_once_never_leave_an_older_value_in_heap_unnoticed(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, app: str
) -> None:
    """Day 1's run records plan "new" while day 0's request with "old" is out (two days of a
    backfill at once): Heap applies "old" last. Day 0's run warns and marks the value unknown, and
    the next run of day 1 sends "new" again."""
    write(tmp_path / "x_2024-03-10.csv", [("u1", at(0, 1), "old", "IT")])
    write(tmp_path / "x_2024-03-11.csv", [("u1", at(1, 1), "new", "IT")])
    template = tmp_path / "x_{date:%Y-%m-%d}.csv"

    class Interleaved(HeapClient):
        """Runs day 1 completely just before day 0's add_user_properties request goes out."""

        fired = False

        def post(self, body: bytes, path: str = "/api/track") -> Any:
            if path == "/api/add_user_properties" and not Interleaved.fired:
                Interleaved.fired = True
                assert user_counts(run(emulator, ledger, tmp_path, app, template, day(1))) == (1, 1, 0, 0)
            return super().post(body, path)

    client = Interleaved(emulator.url, app)
    first = replay(
        app, CsvSource(str(template), day(0)), SPEC, day(0), client, ReplayOptions(), ledger=ledger
    )
    client.close()
    assert user_counts(first) == (1, 1, 0, 0) and first.user_values_stale == 1
    assert "maybe stale" in first.table()
    assert profiles(emulator, app)["u1"]["plan"] == "old"  # what Heap applied last
    again = run(emulator, ledger, tmp_path, app, template, day(1))
    assert user_counts(again) == (1, 1, 0, 0) and again.user_values_sent == 1  # plan only: dept is known
    assert profiles(emulator, app)["u1"] == {"plan": "new", "dept": "IT"}
    assert user_counts(run(emulator, ledger, tmp_path, app, template, day(1))) == (1, 0, 1, 0)
    assert user_counts(run(emulator, ledger, tmp_path, app, template, day(0))) == (1, 0, 1, 0)


def test_columns_kept_out_of_events_stay_out_of_profiles_and_odd_header_bytes_are_replaced(
    emulator: HeapEmulator, tmp_path: Path
) -> None:
    path = tmp_path / "day.csv"
    header = b"wm.euId,created_at,type,wm.userVars.ssn,wm.userVars.pl\xffan,wm.env\n"
    path.write_bytes(header + f"u1,{at(0, 1)},play,123-45-6789,gold,0\n".encode())
    spec = MappingSpec(
        event_name=EventNameSpec(event_type="complete"),
        exclude_properties=("wm.userVars.ssn",),
        user_properties=UserPropertiesSpec(columns=("wm.*",)),
    )
    summary = run(emulator, None, tmp_path, "app", path, day(0), spec=spec)
    assert user_counts(summary) == (1, 1, 0, 0)
    assert profiles(emulator, "app") == {"u1": {"pl\ufffdan": "gold"}}  # no ssn, no wm.env (the environment)
