"""Late data: a scheduled sequence of days delivers late events by itself, exactly once, and never
drops one silently. Files are partitioned by arrival day (an event of 23:59 in the next day's file);
a SQL table is loaded in batches (a row loaded after its day's run)."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FAST_RETRIES, PG_DSN, SPEC, dead_letters, postgres_connection, received
from walkme_heap.config import ConfigError, parse_pipeline
from walkme_heap.deadletters import DeadLetters
from walkme_heap.delivery.client import HeapClient
from walkme_heap.emulator import HeapEmulator
from walkme_heap.ledger import Ledger
from walkme_heap.mapping.spec import EventNameSpec, MappingSpec
from walkme_heap.replay import ReplayOptions, replay
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.sources.factory import open_source
from walkme_heap.sources.spec import SourceSpec
from walkme_heap.window import Window

DAY_MS = 86_400_000
FIRST = datetime(2024, 3, 10, tzinfo=UTC)
LATENESS = 2 * 86_400
HEADER = ["wm.euId", "created_at", "type", "oType", "oId", "sId", "ctx.title"]


def day(n: int) -> Window:
    return Window(FIRST + timedelta(days=n), FIRST + timedelta(days=n + 1))


def ms(day_index: int, hour: float) -> int:
    return day(day_index).start_ms + int(hour * 3_600_000)


# Each event: (arrival day, event day, hour). Arrival decides the file; the bound is 2 days.
EVENTS = [
    *((d, d, h) for d in range(4) for h in (1, 9, 17)),  # on time
    (1, 0, 23.99),  # 23:59 of day 0, filed with day 1: one day late
    (2, 0, 12),  # two days late: still within the bound of day 2's run (opened to day 0)
    (3, 0, 5),  # three days late: beyond the bound of day 3's run (opened to day 1)
    (3, 2, 22),
]
WITHIN = [e for e in EVENTS if e[0] - e[1] <= 2]
BEYOND = [e for e in EVENTS if e[0] - e[1] > 2]


def write_files(folder: Path) -> str:
    for arrival in range(4):
        with (folder / f"webhooks_{day(arrival).label}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            for n, (filed, event_day, hour) in enumerate(EVENTS):
                if filed == arrival:
                    writer.writerow([f"user-{n}", ms(event_day, hour), "play", "wt", "1", f"s-{n}", "t"])
    return str(folder / "webhooks_{date:%Y-%m-%d}.csv")


def run_day(
    emulator: HeapEmulator,
    ledger: Ledger,
    tmp_path: Path,
    pipeline: str,
    source: Any,
    window: Window,
    **options: Any,
) -> Any:
    client = HeapClient(emulator.url, "app", connect_timeout=2, read_timeout=5)
    letters = DeadLetters(str(tmp_path / "dead"), pipeline, window.label)
    settings = {"retry": FAST_RETRIES, "max_invalid_ratio": 1.0, "lateness_seconds": LATENESS, **options}
    try:
        return replay(
            pipeline,
            source,
            SPEC,
            window,
            client,
            ReplayOptions(**settings),
            ledger=ledger,
            dead_letters=letters,
        )
    finally:
        client.close()


def skipping(template: str, window: Window) -> CsvSource:
    """The window's files, a missing one skipped (replayed as empty, and recorded missing)."""
    return CsvSource(template, window, on_missing="skip")


def run_before_its_file_lands(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str, template: str, n: int
) -> Any:
    """Day ``n``'s run while its file is not there yet (skipped); then the file lands."""
    path = tmp_path / f"webhooks_{day(n).label}.csv"
    path.rename(tmp_path / "held_back.csv")
    summary = run_day(emulator, ledger, tmp_path, pipeline, skipping(template, day(n)), day(n))
    (tmp_path / "held_back.csv").rename(path)
    return summary


def identities(emulator: HeapEmulator) -> Counter[str]:
    return Counter(e["identity"] for e in received(emulator))


@pytest.mark.parametrize("order", ["scheduled", "backfill in reverse"])
def test_a_sequence_of_days_sends_late_events_exactly_once_and_dead_letters_the_rest(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str, order: str
) -> None:
    template = write_files(tmp_path)
    days = list(range(4)) if order == "scheduled" else [3, 2, 1, 0]
    summaries = {
        d: run_day(emulator, ledger, tmp_path, pipeline, CsvSource(template, day(d)), day(d)) for d in days
    }

    sent = identities(emulator)
    assert sent == Counter(f"user-{EVENTS.index(e)}" for e in WITHIN)  # each once, no hand re-run
    for d, summary in summaries.items():  # every row of every file accounted for, per run
        assert (
            summary.read
            == sum(1 for e in EVENTS if e[0] == d)
            == summary.sent + summary.already_sent + (summary.total_skipped + summary.total_invalid)
        )
    late = summaries[3]
    assert late.skipped == {"later_than_lateness": 1}
    assert late.oldest_late_day == day(0).label
    assert summaries[1].late_events == 1 and summaries[2].late_events == 1
    (letter,) = [
        d for d in dead_letters(Path(late.dead_letters or "")) if d["reason"] == "later_than_lateness"
    ]
    assert letter["outcome"] == "skipped" and letter["source"]["wm.euId"] == f"user-{EVENTS.index(BEYOND[0])}"
    assert "manual run" in letter["message"]

    # the command the log gives: a manual run from the late event's day to day 3's end sends it, once
    manual = Window(day(0).start, day(3).end)
    again = run_day(emulator, ledger, tmp_path, pipeline, CsvSource(template, manual), manual)
    assert again.sent == 1 and identities(emulator) == sent + Counter([letter["source"]["wm.euId"]])


def test_without_a_lateness_bound_events_before_the_window_stay_another_runs(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str
) -> None:
    """The operator used alone keeps today's meaning: a source partitioned by event time."""
    template = write_files(tmp_path)
    summary = run_day(
        emulator, ledger, tmp_path, pipeline, CsvSource(template, day(1)), day(1), lateness_seconds=None
    )
    assert summary.skipped == {"outside_window": 1} and summary.sent == 3


# -- SQL ----------------------------------------------------------------------------------------------
def _load(connect: Any, placeholder: str, rows: list[tuple[Any, ...]]) -> None:
    with connect() as conn:
        cursor = conn.cursor()
        marks = ", ".join([placeholder] * 4)
        cursor.executemany(f"INSERT INTO late_events VALUES ({marks})", rows)
        conn.commit()


class _Sql:
    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        if kind == "sqlite":
            path = tmp_path / "w.db"
            self.connect = lambda: sqlite3.connect(path)
            self.placeholder = "?"
        else:
            import psycopg

            postgres_connection().close()
            self.connect = lambda: psycopg.connect(PG_DSN)
            self.placeholder = "%s"
        with self.connect() as conn:
            cursor = conn.cursor()
            cursor.execute("DROP TABLE IF EXISTS late_events")
            cursor.execute(
                'CREATE TABLE late_events (uid TEXT, created_at BIGINT, loaded_at BIGINT, "sId" TEXT)'
            )
            conn.commit()

    def source(self, spec: SourceSpec, window: Window) -> Any:
        class Conns:
            def sql(inner, conn_id: str) -> Any:  # noqa: N805
                return type(
                    "Sql", (), {"connect": staticmethod(self.connect), "placeholder": self.placeholder}
                )

            def filesystem(inner, conn_id: str | None) -> Any:  # noqa: N805
                return None

        accepted = Window(window.start - timedelta(seconds=LATENESS), window.end)
        return open_source(spec, window, Conns(), accepted=accepted)  # type: ignore[arg-type]


SQL_MAPPING = MappingSpec(
    columns={"identity": ["uid"], "timestamp": ["created_at"], "session_id": ["sId"]},
    event_name=EventNameSpec(constant="E"),
)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sql_by_event_time_finds_rows_loaded_after_their_days_run(
    emulator: HeapEmulator, tmp_path: Path, pipeline: str, kind: str
) -> None:
    db = _Sql(kind, tmp_path)
    spec = SourceSpec(
        type="sql", conn_id="w", table="late_events", time_column="created_at", time_type="epoch_ms"
    )
    _load(db.connect, db.placeholder, [("a", ms(0, 5), ms(0, 6), "s"), ("b", ms(0, 7), ms(0, 8), "s")])
    first = _run_sql(emulator, tmp_path, pipeline, db.source(spec, day(0)), day(0), SQL_MAPPING)
    _load(db.connect, db.placeholder, [("late", ms(0, 23), ms(1, 3), "s"), ("c", ms(1, 2), ms(1, 3), "s")])
    second = _run_sql(emulator, tmp_path, pipeline, db.source(spec, day(1)), day(1), SQL_MAPPING)
    assert (first.sent, second.sent, second.already_sent, second.late_events) == (2, 2, 2, 1)
    assert identities(emulator) == Counter({"a": 1, "b": 1, "late": 1, "c": 1})


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sql_by_load_time_sends_late_loads_and_dead_letters_those_beyond_the_bound(
    emulator: HeapEmulator, tmp_path: Path, pipeline: str, kind: str
) -> None:
    db = _Sql(kind, tmp_path)
    spec = SourceSpec(
        type="sql",
        conn_id="w",
        table="late_events",
        time_column="created_at",
        time_type="epoch_ms",
        window_on="load_time",
        load_time_column="loaded_at",
    )
    _load(
        db.connect,
        db.placeholder,
        [
            ("on-time", ms(3, 1), ms(3, 2), "s"),
            ("one-day-late", ms(2, 1), ms(3, 2), "s"),
            ("too-late", ms(0, 1), ms(3, 2), "s"),  # loaded three days after: beyond two days
            ("loaded-tomorrow", ms(3, 5), ms(4, 1), "s"),  # the next run's
        ],
    )
    summary = _run_sql(emulator, tmp_path, pipeline, db.source(spec, day(3)), day(3), SQL_MAPPING)
    assert identities(emulator) == Counter({"on-time": 1, "one-day-late": 1})
    assert summary.read == 3 and summary.skipped == {"later_than_lateness": 1}
    assert [d["source"]["uid"] for d in dead_letters(Path(summary.dead_letters or ""))] == ["too-late"]


def _run_sql(
    emulator: HeapEmulator, tmp_path: Path, pipeline: str, source: Any, window: Window, mapping: Any
) -> Any:
    """One run with a SQLite ledger (the ledger's databases are covered elsewhere; here the source's)."""
    client = HeapClient(emulator.url, "app", connect_timeout=2, read_timeout=5)
    letters = DeadLetters(str(tmp_path / "dead"), pipeline, window.label)
    options = ReplayOptions(retry=FAST_RETRIES, max_invalid_ratio=1.0, lateness_seconds=LATENESS)
    ledger = Ledger.sqlite(str(tmp_path / "ledger.db"))
    try:
        return replay(pipeline, source, mapping, window, client, options, ledger=ledger, dead_letters=letters)
    finally:
        client.close()
        ledger.close()


# -- configuration ----------------------------------------------------------------------------------
BASE = {"start_date": "2024-03-10", "source": {"type": "csv", "path": "x_{date:%Y-%m-%d}.csv"}}


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, 2 * 86_400), ("36 hours", 129_600), ("1 day", 86_400), (0, 0), ("0", 0)]
)
def test_lateness_is_a_duration_with_a_default_of_two_days(value: Any, seconds: int, tmp_path: Path) -> None:
    data = {**BASE, **({"lateness": value} if value is not None else {})}
    assert parse_pipeline("p", data, "test", tmp_path).lateness_seconds == seconds


@pytest.mark.parametrize("value", ["soon", "-1 days", "2 fortnights", True, 2, -1, "93 days"])
def test_a_lateness_that_is_not_a_duration_is_refused(value: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lateness"):
        parse_pipeline("p", {**BASE, "lateness": value}, "test", tmp_path)


def test_a_load_time_window_on_a_table_needs_its_column(tmp_path: Path) -> None:
    source = {"type": "sql", "conn_id": "w", "table": "t", "time_column": "c", "time_type": "epoch_ms"}
    with pytest.raises(ConfigError, match="load_time_column"):
        parse_pipeline("p", {**BASE, "source": {**source, "window_on": "load_time"}}, "test", tmp_path)
    spec = parse_pipeline(
        "p",
        {**BASE, "source": {**source, "window_on": "load_time", "load_time_column": "l"}},
        "test",
        tmp_path,
    ).source
    assert (spec.window_on, spec.load_time_column) == ("load_time", "l")


def test_a_window_of_airflows_pendulum_times_opens_by_the_lateness() -> None:
    """Pendulum's arithmetic drops the zone of a datetime.UTC time: the task failed on it."""
    import pendulum

    window = Window(pendulum.datetime(2024, 3, 10, tz="UTC"), pendulum.datetime(2024, 3, 11, tz="UTC"))
    opened = ReplayOptions(lateness_seconds=LATENESS).accepted(window)
    assert opened.start == datetime(2024, 3, 8, tzinfo=UTC) and opened.end == window.end


@pytest.mark.parametrize(
    ("start", "end", "expected_end"),
    [
        ("2024-03-10T00:00:00", "2024-03-11T00:00:00", "2024-03-11"),  # a daily run
        ("2024-03-10T04:00:00", "2024-03-10T05:00:00", "2024-03-11"),  # an hourly run: its whole day
    ],
)
def test_the_manual_run_the_log_gives_reads_the_file_the_late_event_is_in(
    start: str, end: str, expected_end: str
) -> None:
    from walkme_heap.replay import late_replay_params
    from walkme_heap.window import resolve_window

    window = Window(datetime.fromisoformat(start + "+00:00"), datetime.fromisoformat(end + "+00:00"))
    params = late_replay_params(window, "2024-03-07")
    assert params == {"start": "2024-03-07", "end": expected_end}
    manual = resolve_window(
        params, None, None, max_span=timedelta(days=92), now=datetime(2024, 4, 1, tzinfo=UTC)
    )
    assert manual.start.date().isoformat() == "2024-03-07" and window.end <= manual.end
    assert (window.end - timedelta(microseconds=1)).date() in set(manual.days())  # the arrival file's day


def test_with_a_lateness_of_zero_every_event_before_the_window_is_dead_lettered(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str
) -> None:
    """Before, they were ``outside_window``: counted, never dead-lettered, never sent."""
    template = write_files(tmp_path)
    summary = run_day(
        emulator, ledger, tmp_path, pipeline, CsvSource(template, day(2)), day(2), lateness_seconds=0
    )
    assert summary.skipped == {"later_than_lateness": 1} and summary.sent == 3
    letters = [d for d in dead_letters(Path(summary.dead_letters or "")) if d["outcome"] == "skipped"]
    assert [d["reason"] for d in letters] == ["later_than_lateness"]


def test_an_invalid_row_older_than_the_bound_stays_invalid(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str
) -> None:
    """Lateness is judged last: an old row without an identity counts against max_invalid_ratio."""
    path = tmp_path / "webhooks_2024-03-13.csv"
    path.write_text(",".join(HEADER) + f"\n,{ms(0, 1)},play,wt,1,s,t\nu,{ms(0, 1)},play,wt,1,s,t\n")
    summary = run_day(emulator, ledger, tmp_path, pipeline, CsvSource(str(path), day(3)), day(3))
    assert summary.invalid == {"missing_identity": 1} and summary.skipped == {"later_than_lateness": 1}
    assert summary.oldest_late_day == day(0).label


def test_a_day_replayed_empty_because_its_file_was_missing_is_rechecked_by_later_runs(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str
) -> None:
    """``on_missing: skip``: day 1's file lands after day 1's run; day 2's run finds and sends it,
    judged by day 1's own window (its two-days-late event is within day 1's bound), and day 3's run
    does not read it again."""
    template = write_files(tmp_path)
    held = tmp_path / "held_back.csv"
    (tmp_path / f"webhooks_{day(1).label}.csv").rename(held)

    def source(d: int) -> CsvSource:
        return skipping(template, day(d))

    first = {d: run_day(emulator, ledger, tmp_path, pipeline, source(d), day(d)) for d in (0, 1)}
    assert first[1].read == 0 and "partial" in (first[1].dead_letters or "")
    held.rename(tmp_path / f"webhooks_{day(1).label}.csv")  # it arrives after its day's run

    late = run_day(emulator, ledger, tmp_path, pipeline, source(2), day(2))
    filed = Counter(e[0] for e in EVENTS)
    assert late.origins == 2 and late.read == filed[1] + filed[2]
    assert late.late_events == filed[1] + 1  # day 1's whole file, and day 2's event of day 0
    last = run_day(emulator, ledger, tmp_path, pipeline, source(3), day(3))
    assert last.origins == 1 and last.read == filed[3]  # found once: not read again
    assert identities(emulator) == Counter(f"user-{EVENTS.index(e)}" for e in WITHIN)

    # the ledger's run records say what was missing and who found it
    rows = ledger.database.fetch_records(
        "SELECT window_label, late_data FROM walkme_heap_runs WHERE pipeline = ? ORDER BY id", [pipeline]
    )
    seen = {r["window_label"]: json.loads(r["late_data"]) for r in rows}
    missing = str(tmp_path / f"webhooks_{day(1).label}.csv")
    assert seen[day(1).label]["missing"] == [[missing, day(1).start.isoformat(), day(1).end.isoformat()]]
    found = [[missing, day(1).start.isoformat(), day(1).end.isoformat()]]
    assert seen[day(2).label]["recovered"] == found and seen[day(3).label]["recovered"] == []
    assert seen[day(3).label]["past_bound"] == {day(0).label: 1}


def test_a_missing_file_is_rechecked_only_within_the_bound_and_by_a_rerun_of_its_day(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str
) -> None:
    template = write_files(tmp_path)
    for d in (0, 1, 2, 3):  # day 0's file only arrives after day 3's run: past day 0's bound
        if d == 0:
            (tmp_path / f"webhooks_{day(0).label}.csv").rename(tmp_path / "held_back.csv")
        run_day(emulator, ledger, tmp_path, pipeline, skipping(template, day(d)), day(d))
    (tmp_path / "held_back.csv").rename(tmp_path / f"webhooks_{day(0).label}.csv")
    nxt = Window(day(3).end, day(3).end + timedelta(days=1))
    beyond = run_day(emulator, ledger, tmp_path, pipeline, skipping(template, nxt), nxt)
    assert beyond.origins == 0  # day 0 is past day 4's bound: not looked for

    # a re-run of day 0 (the manual run) reads it, and records it found: no later run looks again
    rerun = run_day(emulator, ledger, tmp_path, pipeline, CsvSource(template, day(0)), day(0))
    assert rerun.sent == 3
    assert ledger.runs.missing_files(pipeline, Window(day(-2).start, day(1).end)) == []


def test_a_dry_run_rechecks_missing_files_too_and_records_nothing(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str
) -> None:
    template = write_files(tmp_path)
    run_before_its_file_lands(emulator, ledger, tmp_path, pipeline, template, 1)
    dry = run_day(
        emulator,
        ledger,
        tmp_path,
        pipeline,
        skipping(template, day(2)),
        day(2),
        dry_run=True,
    )
    assert dry.origins == 2 and dry.sent == sum(1 for e in EVENTS if e[0] in (1, 2))
    assert len(ledger.runs.missing_files(pipeline, Window(day(0).start, day(3).end))) == 1


def test_acknowledgements_count_late_arrivals_per_event_day(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str
) -> None:
    template = write_files(tmp_path)
    for d in range(4):
        run_day(emulator, ledger, tmp_path, pipeline, CsvSource(template, day(d)), day(d))
    rows = ledger.database.fetch(
        "SELECT day, sum(events), sum(late_events) FROM walkme_heap_acks WHERE pipeline = ? GROUP BY day",
        [pipeline],
    )
    per_day = {d: (int(n), int(late)) for d, n, late in rows}
    assert per_day == {
        day(0).label: (5, 2),  # 3 on time, the 23:59 one (day 1's run) and the noon one (day 2's)
        day(1).label: (3, 0),
        day(2).label: (4, 1),
        day(3).label: (3, 0),
    }


def test_a_trial_run_that_stops_at_its_row_limit_does_not_mark_a_missing_file_found(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str
) -> None:
    template = write_files(tmp_path)
    run_before_its_file_lands(emulator, ledger, tmp_path, pipeline, template, 1)
    trial = run_day(
        emulator,
        ledger,
        tmp_path,
        pipeline,
        skipping(template, day(2)),
        day(2),
        row_limit=2,
    )
    assert trial.read == 2
    assert len(ledger.runs.missing_files(pipeline, Window(day(0).start, day(3).end))) == 1  # still looked for
    full = run_day(emulator, ledger, tmp_path, pipeline, skipping(template, day(2)), day(2))
    assert full.origins == 2 and ledger.runs.missing_files(pipeline, Window(day(0).start, day(3).end)) == []


def test_a_path_missing_for_several_windows_is_read_for_all_of_them(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str
) -> None:
    """One file for the month (a template without ``{date}``), missing at the runs of days 0 and
    1: the day-2 run that finds it sends both days' events, not only the first window's."""
    template = str(tmp_path / "month_{start:%Y-%m}.csv")
    for d in (0, 1):
        run_day(emulator, ledger, tmp_path, pipeline, skipping(template, day(d)), day(d))
    with (tmp_path / "month_2024-03.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for n, d in enumerate((0, 1)):
            writer.writerow([f"month-{d}", ms(d, 12), "play", "wt", "1", f"s-{n}", "t"])
    late = run_day(emulator, ledger, tmp_path, pipeline, skipping(template, day(2)), day(2))
    assert identities(emulator) == Counter({"month-0": 1, "month-1": 1})
    assert late.sent == 2 and late.total_skipped == 0


def test_a_rerun_of_the_window_that_found_a_late_file_reads_it_again(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str
) -> None:
    """The re-run's dead letters replace the first run's: they must still hold the late file's
    rows (an event past the bound, an invalid row), and the report still count them."""
    template = write_files(tmp_path)
    late_file = tmp_path / f"webhooks_{day(3).label}.csv"  # holds day 0's event 3 days late
    with late_file.open("a", newline="") as handle:
        csv.writer(handle).writerow(["user-bad", "not a time", "play", "wt", "1", "s-x", "t"])
    late_file.rename(tmp_path / "held_back.csv")
    run_day(emulator, ledger, tmp_path, pipeline, skipping(template, day(3)), day(3))
    (tmp_path / "held_back.csv").rename(late_file)
    nxt = Window(day(3).end, day(3).end + timedelta(days=1))

    def run_next() -> Any:
        source = skipping(template, nxt)
        return run_day(emulator, ledger, tmp_path, pipeline, source, nxt)

    first, again = run_next(), run_next()
    for summary in (first, again):
        reasons = sorted(d["reason"] for d in dead_letters(Path(summary.dead_letters or "")))
        assert reasons == ["later_than_lateness", "unparsable_time"], summary
    assert (pipeline, day(0).label, 1) in ledger.runs.past_bound_per_day()


def test_a_late_file_that_cannot_be_read_does_not_fail_the_run_that_finds_it(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str
) -> None:
    """Day 1's file lands after its run without the identity column: day 2's run sends its own day,
    says why it left that file, and the file stays missing (looked for again) in the ledger."""
    template = write_files(tmp_path)
    late_file = tmp_path / f"webhooks_{day(1).label}.csv"
    late_file.rename(tmp_path / "held_back.csv")
    run_day(emulator, ledger, tmp_path, pipeline, skipping(template, day(1)), day(1))
    late_file.write_text("created_at,type\n1710000000000,play\n")  # no identity column
    source = skipping(template, day(2))
    summary = run_day(emulator, ledger, tmp_path, pipeline, source, day(2))
    assert summary.origins == 1 and summary.read == sum(1 for e in EVENTS if e[0] == 2)
    (still,) = ledger.runs.missing_files(pipeline, Window(day(0).start, day(3).end))
    assert still.path == str(late_file)
