"""A pipeline's Airflow Asset ("its window is in Heap"): its identity, its URI handler, and when the
task that ends a window emits its event, or ends skipped because the window is not in Heap."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowSkipException
from airflow.sdk.execution_time.context import OutletEventAccessors

from tests.helpers import DATA, DAY
from walkme_heap.assets import asset_name, asset_uri, not_in_heap, pipeline_asset, sanitize_uri
from walkme_heap.emulator import HeapEmulator
from walkme_heap.operators.replay import WalkMeToHeapOperator
from walkme_heap.operators.summary import ReplaySummaryOperator
from walkme_heap.summary import ReplaySummary

DAY_FILE = str(DATA / "e2e" / "walkme_webhooks_{date:%Y-%m-%d}.csv")
MAPPING = {"event_name": {"event_type": "complete"}, "properties": {"exclude": ["oType"]}}
IN_HEAP = pipeline_asset("p")


class FakeTaskInstance:
    """What ``announce`` uses of the running task instance: its XCom push."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def context(**params: Any) -> dict[str, Any]:
    return {
        "params": params,
        "data_interval_start": DAY.start,
        "data_interval_end": DAY.end,
        "run_id": "manual__test",
        "ti": FakeTaskInstance(),
        "outlet_events": OutletEventAccessors(),
    }


def replay_task(**arguments: Any) -> WalkMeToHeapOperator:
    settings = {"source": {"path": DAY_FILE}, "mapping": MAPPING, "max_invalid_ratio": 0.5, **arguments}
    return WalkMeToHeapOperator(task_id="replay", pipeline="p", **settings)


# -- identity -----------------------------------------------------------------------------------------
def test_the_asset_names_the_pipeline_and_its_heap_connection() -> None:
    asset = pipeline_asset("webhooks", "heap_eu")
    assert (asset.name, asset.uri) == ("walkme_heap.webhooks", "walkme-heap://heap_eu/webhooks")
    assert asset.extra == {"pipeline": "webhooks", "heap_conn_id": "heap_eu"}
    assert pipeline_asset("webhooks").uri == "walkme-heap://heap_default/webhooks"  # pipelines.yaml's default
    assert (asset_name("w"), asset_uri("c", "w")) == ("walkme_heap.w", "walkme-heap://c/w")


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("walkme-heap:///webhooks", "names the Heap connection"),
        ("walkme-heap://heap_default/", "names one pipeline"),
        ("walkme-heap://heap_default/a/b", "names one pipeline"),
        ("walkme-heap://heap_default/web-hooks", "names one pipeline"),
        ("walkme-heap://heap_default/webhooks?day=1", "takes no query"),
    ],
)
def test_the_uri_handler_refuses_what_names_no_pipeline(uri: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        sanitize_uri(urlsplit(uri))


def test_the_uri_handler_keeps_a_good_uri() -> None:
    parts = urlsplit("walkme-heap://heap_default/webhooks")
    assert sanitize_uri(parts) == parts


def test_registered_the_handler_refuses_a_bad_asset_when_its_dag_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What provider info's ``asset-uris`` entry does: Airflow calls the handler for the scheme."""
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    monkeypatch.setitem(ProvidersManagerTaskRuntime().asset_uri_handlers, "walkme-heap", sanitize_uri)
    asset = Asset(name="x", uri="WALKME-HEAP://heap_default/webhooks/")
    assert asset.uri == "walkme-heap://heap_default/webhooks"  # scheme lower-cased, slash dropped
    assert asset.normalized_uri == "walkme-heap://heap_default/webhooks"
    with pytest.raises(ValueError, match="names one pipeline"):
        Asset(name="y", uri="walkme-heap://heap_default/a/b")


def _declares_asset_uris() -> bool:
    from walkme_heap.provider import get_provider_info

    return any("walkme-heap" in e.get("schemes", []) for e in get_provider_info().get("asset-uris", []))


@pytest.mark.skipif(not _declares_asset_uris(), reason="provider.py does not declare 'asset-uris' yet")
def test_the_provider_registers_the_uri_handler() -> None:
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    assert ProvidersManagerTaskRuntime().asset_uri_handlers["walkme-heap"] is sanitize_uri


# -- when the window is in Heap ----------------------------------------------------------------------
def summary(**counts: Any) -> ReplaySummary:
    return ReplaySummary("p", DAY.as_dict(), **counts)


def test_dry_runs_and_cut_trial_runs_are_not_in_heap() -> None:
    assert not_in_heap([summary(read=10, sent=5)], None) == ""
    assert not_in_heap([summary(read=0)], None) == ""  # an empty day is in Heap
    assert not_in_heap([summary(read=10, already_sent=10)], None) == ""  # sent by an earlier run
    assert not_in_heap([summary(read=10, sent=5, dry_run=True)], None) == "a dry run sends nothing"
    assert not_in_heap([summary(read=3)], 3) == "a trial run read only its row limit of 3 rows"
    assert not_in_heap([summary(read=10)], 1000) == ""  # the limit was not reached: the whole window
    assert not_in_heap([summary(read=2), summary(read=3)], 3) != ""  # one shard cut: the day is not


def test_the_replay_task_gives_its_asset_event_the_windows_counts(heap_connection: HeapEmulator) -> None:
    ctx = context()
    result = replay_task(outlets=[IN_HEAP]).execute(ctx)
    assert result["sent"] == 5
    assert ctx["outlet_events"][IN_HEAP].extra == {
        "pipeline": "p",
        "window": {"start": "2024-03-10T00:00:00+00:00", "end": "2024-03-11T00:00:00+00:00"},
        "app_id": "test-app",
        "read": 10,
        "sent": 5,
        "already_sent": 0,
        "invalid": 2,
        "rejected": 0,
        "skipped": 3,
        "force": False,
    }
    assert ctx["ti"].pushed == {}  # the return value goes to XCom as usual


@pytest.mark.parametrize(
    ("params", "reason"),
    [({"dry_run": True}, "a dry run sends nothing"), ({"limit": 3}, "a trial run read only its row limit")],
)
def test_a_run_whose_window_is_not_in_heap_ends_skipped_with_its_summary(
    heap_connection: HeapEmulator, params: dict[str, Any], reason: str
) -> None:
    """No asset event (Airflow emits one for every success): skipped, its summary still its XCom."""
    ctx = context(**params)
    with pytest.raises(AirflowSkipException, match=rf"pipeline 'p': {reason}.*no event for walkme_heap.p"):
        replay_task(outlets=[IN_HEAP]).execute(ctx)
    pushed = ctx["ti"].pushed["return_value"]
    assert pushed["pipeline"] == "p" and pushed["window"]["start"] == "2024-03-10T00:00:00+00:00"
    assert ctx["outlet_events"][IN_HEAP].extra == {}


def test_without_an_asset_outlet_a_dry_run_succeeds(heap_connection: HeapEmulator) -> None:
    """The operator used alone, or a shard of a sharded day (the day's summary task has the outlet)."""
    result = replay_task().execute(context(dry_run=True))
    assert result["dry_run"] is True and result["sent"] == 5


def shard(index: int, **counts: Any) -> dict[str, Any]:
    return summary(shard=f"{index}/2", app_id="test-app", **counts).as_dict()


def summary_task(parts: list[dict[str, Any]]) -> ReplaySummaryOperator:
    return ReplaySummaryOperator(
        task_id="summary", pipeline="p", summaries=parts, shards=2, max_invalid_ratio=0.5, outlets=[IN_HEAP]
    )


def test_the_sharded_days_summary_task_emits_the_days_event() -> None:
    ctx = context()
    total = summary_task([shard(1, read=4, sent=4), shard(2, read=6, sent=5, already_sent=1)]).execute(ctx)
    assert total["sent"] == 9
    extra = ctx["outlet_events"][IN_HEAP].extra
    assert (extra["read"], extra["sent"], extra["already_sent"], extra["app_id"]) == (10, 9, 1, "test-app")


@pytest.mark.parametrize(
    ("parts", "params", "reason"),
    [
        (
            [shard(1, read=4, sent=4, dry_run=True), shard(2, read=6, sent=6, dry_run=True)],
            {},
            "a dry run sends nothing",
        ),
        ([shard(1, read=4, sent=4), shard(2, read=5, sent=5)], {"limit": 5}, "a trial run read only"),
    ],
)
def test_a_sharded_dry_or_cut_trial_day_ends_skipped_with_its_summary(
    parts: list[dict[str, Any]], params: dict[str, Any], reason: str
) -> None:
    ctx = context(**params)
    with pytest.raises(AirflowSkipException, match=f"{reason}.*not announced as in Heap"):
        summary_task(parts).execute(ctx)
    day = ctx["ti"].pushed["return_value"]
    assert (day["read"], day["shard"]) == (sum(p["read"] for p in parts), "2 shards")
    assert ctx["outlet_events"][IN_HEAP].extra == {}
