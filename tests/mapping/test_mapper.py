"""Every mapping rule, for both presets: columns, identities, times, names, properties, filters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from walkme_heap.mapping.columns import MissingColumnsError, bind_columns, normalise_header
from walkme_heap.mapping.keys import key_from_event_id, key_from_fields
from walkme_heap.mapping.mapper import MappedChunk, Mapper
from walkme_heap.mapping.spec import EventNameSpec, MappingSpec

DAY_START = 1710028800000  # 2024-03-10T00:00:00Z
DAY_END = DAY_START + 86_400_000
T = DAY_START + 3_600_000 + 123  # 2024-03-10T01:00:00.123Z
T_ISO = "2024-03-10T01:00:00.123+00:00"


def webhook(**overrides: Any) -> dict[str, Any]:
    row = {
        "wm.euId": "u-1",
        "created_at": str(T),
        "type": "play",
        "oType": "wt",
        "oId": "152605",
        "oName": "Deploy",
        "sId": "s-1",
        "wm.env": "0",
    }
    row.update(overrides)
    return row


def run(
    rows: list[dict[str, Any]],
    spec: MappingSpec | None = None,
    *,
    text: bool = True,
    start: int = DAY_START,
    end: int = DAY_END,
) -> MappedChunk:
    frame = pd.DataFrame(rows)
    if text:
        frame = frame.astype("str").where(pd.DataFrame(rows).notna(), None)
    spec = spec or MappingSpec()
    mapper = Mapper(spec, bind_columns(spec, list(frame.columns), "test"))
    return mapper.map_chunk(frame, start, end)


def one(rows: list[dict[str, Any]], spec: MappingSpec | None = None, **kw: Any) -> dict[str, Any]:
    result = run(rows, spec, **kw)
    assert len(result.events) == 1, (result.invalid, result.skipped)
    return result.events[0]


def reasons(result: MappedChunk) -> dict[str, int]:
    return {**result.invalid, **result.skipped}


# -- columns and presets ------------------------------------------------------------------------
@pytest.mark.parametrize("header", ["wm.euId", "wm.euid", "wm_euId", "WM_EUID", "wm euid"])
def test_webhook_identity_header_in_any_spelling(header: str) -> None:
    row = webhook()
    row[header] = row.pop("wm.euId")
    assert one([row])["identity"] == "u-1"


def test_header_normalisation() -> None:
    assert normalise_header("\ufeffEnd User ID") == "enduserid"
    assert normalise_header("wm.userVars.plan") == "wmuservarsplan"


@pytest.mark.parametrize(
    ("identity_header", "time_header"),
    [
        ("End User ID", "Question Date & Time (UTC)"),
        ("EndUserID", "QuestionDate&Time(UTC)"),
        ("end_user_id", "Answer Date & Time (UTC)"),
    ],
)
def test_report_preset_with_and_without_spaces(identity_header: str, time_header: str) -> None:
    spec = MappingSpec(preset="report", event_name=EventNameSpec(constant="Survey Answered"))
    row = {
        "Account Name": "Acme",
        identity_header: "user@example.com",
        "Date (UTC)": "2024-03-10",
        time_header: "2024-03-10 01:00:00",
        "Survey ID": "7731",
        "Answer": "4",
    }
    event = one([row], spec)
    assert event["identity"] == "user@example.com"
    assert event["timestamp"] == "2024-03-10T01:00:00.000+00:00"
    assert event["event"] == "Survey Answered"
    assert event["properties"] == {"Account Name": "Acme", "Survey ID": "7731", "Answer": "4"}
    assert event["idempotency_key"] == key_from_fields(
        "user@example.com", DAY_START + 3_600_000, "Survey Answered", "7731", ""
    )


def test_missing_required_columns_are_named() -> None:
    with pytest.raises(MissingColumnsError, match=r"identity \(looked for wm.euId\)"):
        bind_columns(MappingSpec(), ["created_at", "type"], "file.csv")
    with pytest.raises(MissingColumnsError, match="timestamp"):
        bind_columns(MappingSpec(), ["wm.euId"], "file.csv")


def test_aggregate_report_is_refused_with_a_hint() -> None:
    headers = ["End User ID", "Number of Survey Plays", "Survey Name"]
    with pytest.raises(MissingColumnsError, match="per-user aggregate report"):
        bind_columns(MappingSpec(preset="report"), headers, "report.csv")


def test_column_overrides_replace_the_preset() -> None:
    spec = MappingSpec(columns={"identity": ["Customer Key"], "timestamp": ["ts"]})
    event = one([{"Customer Key": "c-9", "ts": str(T), "type": "click", "oType": "launcher"}], spec)
    assert (event["identity"], event["event"]) == ("c-9", "WalkMe Launcher Clicked")


# -- identity -----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["", "   ", "null", "NULL", "undefined", "None", "nan", "user", None])
def test_unusable_identities_are_invalid(value: Any) -> None:
    assert reasons(run([webhook(**{"wm.euId": value})])) == {"missing_identity": 1}


def test_identity_over_255_characters_is_invalid() -> None:
    assert reasons(run([webhook(**{"wm.euId": "x" * 256})])) == {"identity_too_long": 1}
    assert one([webhook(**{"wm.euId": "x" * 255})])["identity"] == "x" * 255


def test_identity_is_trimmed_but_case_kept() -> None:
    assert one([webhook(**{"wm.euId": "  AbC-1 "})])["identity"] == "AbC-1"


def test_numeric_identity_from_a_typed_source_has_no_decimal_point() -> None:
    row = webhook(**{"wm.euId": 123456789012.0, "created_at": T})
    assert one([row], text=False)["identity"] == "123456789012"


# -- time ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (str(T), T_ISO),  # epoch ms
        ("1710032400", "2024-03-10T01:00:00.000+00:00"),  # epoch seconds
        ("1710032400.5", "2024-03-10T01:00:00.500+00:00"),
        ("2024-03-10T03:00:00.123+02:00", T_ISO),  # offset respected
        ("2024-03-10T01:00:00.123Z", T_ISO),
        ("2024-03-10 01:00:00.123", T_ISO),  # naive means UTC
        ("2024-03-10T01:00:00.123", T_ISO),
    ],
)
def test_time_formats(value: str, expected: str) -> None:
    assert one([webhook(created_at=value)])["timestamp"] == expected


@pytest.mark.parametrize("value", ["", "{{created_at}}", "yesterday", "2024-13-45", "-5", "1e30", None])
def test_unparsable_times_are_invalid(value: Any) -> None:
    assert reasons(run([webhook(created_at=value)])) == {"unparsable_time": 1}


def test_native_datetimes_and_numbers() -> None:
    aware = pd.Timestamp("2024-03-10T02:00:00.123+01:00").to_pydatetime()
    naive = pd.Timestamp("2024-03-10T01:00:00.123").to_pydatetime()
    rows = [
        webhook(created_at=aware, sId="a"),
        webhook(created_at=naive, sId="b"),
        webhook(created_at=T, sId="c"),
    ]
    result = run(rows, text=False)
    assert [e["timestamp"] for e in result.events] == [T_ISO] * 3


def test_window_is_half_open() -> None:
    rows = [
        webhook(created_at=str(DAY_START), sId="a"),
        webhook(created_at=str(DAY_END - 1), sId="b"),
        webhook(created_at=str(DAY_END), sId="c"),
        webhook(created_at=str(DAY_START - 1), sId="d"),
    ]
    result = run(rows)
    assert [e["properties"]["sId"] for e in result.events] == ["a", "b"]
    assert result.skipped == {"outside_window": 2}


# -- non-production -----------------------------------------------------------------------------
def test_non_production_rows_are_skipped_unless_included() -> None:
    rows = [
        webhook(**{"wm.env": "1", "sId": "a"}),
        webhook(**{"wm.env": "0", "sId": "b"}),
        webhook(**{"wm.env": None, "sId": "c"}),
    ]
    result = run(rows)
    assert result.skipped == {"non_production": 1} and len(result.events) == 2
    assert len(run(rows, MappingSpec(include_non_production=True)).events) == 3


# -- event names --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("item", "event", "name"),
    [
        ("wt", "play", "WalkMe Walk-Thru Started"),
        ("shoutout", "play", "WalkMe ShoutOut Displayed"),
        ("launcher", "click", "WalkMe Launcher Clicked"),
        ("survey", "submitted", "WalkMe Survey Submitted"),
        ("WT", "goalReach", "WalkMe Walk-Thru Goal Reached"),
        ("task", "complete", "WalkMe Onboarding Task Completed"),
        ("widget", "spin", "WalkMe widget spin"),
    ],
)
def test_derived_event_names(item: str, event: str, name: str) -> None:
    assert one([webhook(oType=item, type=event)])["event"] == name


def test_event_name_overrides_prefix_and_defaults() -> None:
    spec = MappingSpec(
        event_name=EventNameSpec(
            prefix="WM: ",
            names={"wt.play": "Tour Started"},
            item_type_names={"launcher": "Button"},
            event_type="complete",
        )
    )
    rows = [
        webhook(sId="a"),
        webhook(oType="launcher", type="click", sId="b"),
        webhook(oType="task", type=None, sId="c"),
    ]
    assert [e["event"] for e in run(rows, spec).events] == [
        "WM: Tour Started",
        "WM: Button Clicked",
        "WM: Onboarding Task Completed",
    ]


def test_item_type_from_configuration_when_the_data_has_none() -> None:
    row = webhook()
    del row["oType"]
    spec = MappingSpec(event_name=EventNameSpec(item_type="shoutout"))
    assert one([row], spec)["event"] == "WalkMe ShoutOut Displayed"


def test_constant_event_name() -> None:
    spec = MappingSpec(event_name=EventNameSpec(constant="Replayed"))
    assert one([webhook()], spec)["event"] == "Replayed"


def test_rows_without_any_name_or_with_a_huge_one_are_invalid() -> None:
    spec = MappingSpec(event_name=EventNameSpec(prefix=""))
    assert reasons(run([webhook(oType=None, type=None)], spec)) == {"no_event_name": 1}
    assert reasons(run([webhook(oType="x" * 300)])) == {"event_name_too_long": 1}


# -- properties ---------------------------------------------------------------------------------
def test_default_properties_drop_identity_time_environment_and_empties() -> None:
    event = one([webhook(value="", **{"ctx.title": "Home", "wm.userVars.plan": None})])
    assert event["properties"] == {
        "type": "play",
        "oType": "wt",
        "oId": "152605",
        "oName": "Deploy",
        "sId": "s-1",
        "ctx.title": "Home",
    }


def test_allow_list_and_deny_list() -> None:
    row = webhook(**{"ctx.title": "Home", "env.os.name": "Linux", "wm.userVars.plan": "pro"})
    allow = MappingSpec(include_properties=("ctx.*", "wm.userVars.*"))
    assert one([row], allow)["properties"] == {"ctx.title": "Home", "wm.userVars.plan": "pro"}
    deny = MappingSpec(exclude_properties=("ctx.*", "oType", "OID"))
    assert set(one([row], deny)["properties"]) == {"type", "oName", "sId", "env.os.name", "wm.userVars.plan"}


def test_property_values_from_typed_sources() -> None:
    row = webhook(
        created_at=T, flag=True, off=False, count=3, ratio=0.5, missing=float("nan"), none=None, text="ok"
    )
    props = one(
        [row],
        MappingSpec(include_properties=("flag", "off", "count", "ratio", "missing", "none", "text")),
        text=False,
    )["properties"]
    assert props == {"flag": "true", "off": "false", "count": 3, "ratio": 0.5, "text": "ok"}


def test_long_strings_are_truncated_and_counted() -> None:
    result = run([webhook(**{"ctx.title": "é" * 2000, "oName": "n" * 1023})])
    props = result.events[0]["properties"]
    assert props["ctx.title"] == "é" * 1023 and props["oName"] == "n" * 1023
    assert result.truncated_values == 1


def test_no_properties_key_when_nothing_is_left() -> None:
    event = one([webhook()], MappingSpec(include_properties=("nothing*",)))
    assert "properties" not in event


# -- keys and order of rules --------------------------------------------------------------------
def test_event_id_column_drives_the_key() -> None:
    spec = MappingSpec(columns={"event_id": ["eventId"]})
    result = run([webhook(eventId="e-1", sId="a"), webhook(eventId="", sId="b")], spec)
    assert result.events[0]["idempotency_key"] == key_from_event_id("e-1")
    assert result.invalid == {"missing_event_id": 1}


def test_canonical_key_fields() -> None:
    event = one([webhook()])
    assert event["idempotency_key"] == key_from_fields("u-1", T, "WalkMe Walk-Thru Started", "152605", "s-1")


def test_first_rule_wins_and_positions_are_reported() -> None:
    rows = [
        webhook(created_at="bad", **{"wm.euId": "null"}),
        webhook(created_at=str(DAY_END), **{"wm.euId": "null"}),
        webhook(**{"wm.env": "2", "wm.euId": "null"}),
        webhook(**{"wm.euId": "ok"}),
    ]
    result = run(rows)
    assert result.rejected == [
        (0, "unparsable_time", "invalid"),
        (1, "outside_window", "skipped"),
        (2, "non_production", "skipped"),
    ]
    assert result.rows.tolist() == [3]


def test_event_shape_is_exactly_heaps() -> None:
    event = one([webhook()])
    assert set(event) == {"identity", "event", "timestamp", "idempotency_key", "properties"}
    assert event["timestamp"] == T_ISO


def test_empty_frame_maps_to_nothing() -> None:
    frame = pd.DataFrame({"wm.euId": pd.Series([], dtype=str), "created_at": pd.Series([], dtype=str)})
    spec = MappingSpec()
    result = Mapper(spec, bind_columns(spec, list(frame.columns), "t")).map_chunk(frame, 0, 1)
    assert result.events == [] and isinstance(result.rows, np.ndarray)


def test_event_names_are_remembered_within_bounds() -> None:
    """Pairs are named once and kept across chunks, but free text in a type column keeps at most
    ``MAX_REMEMBERED_PAIRS`` short pairs, and long ones not at all."""
    from walkme_heap.mapping import event_names
    from walkme_heap.mapping.event_names import EventNamer
    from walkme_heap.mapping.spec import EventNameSpec

    namer = EventNamer(EventNameSpec())
    items = pd.Series(["wt"] * 3 + ["x" * 300], dtype="str")
    events = pd.Series(["play", "play", "noSuchType", "click"], dtype="str")
    assert namer.names(items, events, 4).tolist() == [
        namer.name("wt", "play"),
        namer.name("wt", "play"),
        namer.name("wt", "noSuchType"),
        namer.name("x" * 300, "click"),
    ]
    assert set(namer._named) == {("wt", "play"), ("wt", "noSuchType")}  # the long pair not kept
    many = pd.Series([f"type-{i}" for i in range(event_names.MAX_REMEMBERED_PAIRS + 5)], dtype="str")
    names = namer.names(many, many, len(many))
    assert names[-1] == namer.name(many.iloc[-1], many.iloc[-1])
    assert len(namer._named) <= event_names.MAX_REMEMBERED_PAIRS
