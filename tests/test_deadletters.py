"""Dead letters are never lost: a publish that fails midway leaves the previous complete file, an
object store keeps every run's version, a partial run (a trial's row limit, a skipped missing day)
never replaces the complete file, the files (which hold identities) are readable by their owner
only, their temporary files live in the pipeline's working folder and are removed once their process
died, a location that cannot be written fails the task before anything is sent, and no value stops
a dead letter from being written."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from tests.helpers import (
    DATA,
    DAY,
    FAST_RETRIES,
    ROOT,
    SPEC,
    dead_letters,
    received,
    replay_csv,
    run_records,
    write_day,
)
from walkme_heap.deadletters import DeadLetters
from walkme_heap.delivery.client import HeapClient
from walkme_heap.emulator import HeapEmulator
from walkme_heap.ledger import Ledger
from walkme_heap.operators.replay import WalkMeToHeapOperator
from walkme_heap.replay import ReplayOptions, replay
from walkme_heap.sources.base import Chunk
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.summary import ReplaySummary


def letters(location: Path, fs_factory=None) -> DeadLetters:
    return DeadLetters(str(location), "p", "2024-03-10", fs_factory)


def write(dead: DeadLetters, reason: str, rows: int = 3) -> None:
    for row in range(rows):
        dead.add(origin="day.csv", row=row, outcome="invalid", reason=reason, source={"wm.euId": "jane"})


def test_published_dead_letters_are_for_their_owner_only(tmp_path: Path) -> None:
    dead = letters(tmp_path)
    write(dead, "missing_identity")
    published = Path(dead.commit())
    assert stat.S_IMODE(published.stat().st_mode) == 0o600


class BreaksMidCopy(LocalFileSystem):
    """A filesystem whose copy dies halfway (a crash, a full disk) after writing part of the file."""

    def put_file(self, lpath, rpath, *args, **kwargs):  # type: ignore[override]
        Path(rpath).write_bytes(Path(lpath).read_bytes()[:10])
        raise OSError("No space left on device")


def test_a_publish_that_fails_midway_keeps_the_previous_complete_file(tmp_path: Path) -> None:
    first = letters(tmp_path)
    write(first, "missing_identity", rows=5)
    published = Path(first.commit())
    before = published.read_bytes()
    broken = BreaksMidCopy()
    second = letters(tmp_path, lambda url: (broken, broken._strip_protocol(url)))
    write(second, "unparsable_time", rows=7)
    with pytest.raises(OSError, match="No space left"):
        second.commit()
    assert published.read_bytes() == before  # still the last complete run's, every line JSON
    assert [json.loads(line)["reason"] for line in before.splitlines()] == ["missing_identity"] * 5
    assert sorted(p.name for p in published.parent.iterdir()) == [published.name]  # no leftovers


def test_an_unwritable_location_fails_the_task_before_anything_is_sent(
    heap_connection: HeapEmulator, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the dead letters' folder should be")
    task = WalkMeToHeapOperator(
        task_id="replay",
        pipeline="p",
        source={"path": str(DATA / "e2e" / "walkme_webhooks_{date:%Y-%m-%d}.csv")},
        mapping={"event_name": {"event_type": "complete"}, "properties": {"exclude": ["oType"]}},
        dead_letters=str(blocker / "dead"),
        max_invalid_ratio=0.5,
    )
    context = {
        "params": {},
        "data_interval_start": datetime(2024, 3, 10, tzinfo=UTC),
        "data_interval_end": datetime(2024, 3, 11, tzinfo=UTC),
        "run_id": "manual__test",
    }
    with pytest.raises(
        AirflowFailException, match=r"dead letters. location .*not-a-folder.* cannot be written.*nothing"
    ):
        task.execute(context)  # type: ignore[arg-type]
    assert received(heap_connection) == []


# -- versions on object stores, partial runs beside the complete file -----------------------------------
VERSIONED = r"2024-03-10\.\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}\.jsonl"


def memory_location() -> str:
    """A folder of fsspec's in-memory filesystem (not local: renames there are copies), per test."""
    return f"memory://dead-letters-{uuid.uuid4().hex[:12]}"


def test_on_an_object_store_each_run_publishes_a_new_version_and_keeps_the_earlier_ones() -> None:
    location = memory_location()
    urls = []
    for reason, rows in (("missing_identity", 2), ("unparsable_time", 3), ("missing_identity", 1)):
        dead = DeadLetters(location, "p", "2024-03-10")
        write(dead, reason, rows)
        urls.append(dead.commit())
    assert len(set(urls)) == 3
    assert all(re.fullmatch(rf"{location}/p/{VERSIONED}", url) for url in urls), urls
    assert sorted(urls) == urls  # the newest sorts last
    fs, folder = url_to_fs(f"{location}/p")
    assert sorted(name.rsplit("/", 1)[1] for name in fs.ls(folder, detail=False)) == [
        url.rsplit("/", 1)[1] for url in urls
    ]  # every version kept, nothing else left beside them
    with fs.open(urls[1].removeprefix("memory://"), "rb") as handle:
        assert [json.loads(line)["reason"] for line in handle.read().splitlines()] == ["unparsable_time"] * 3


def invalid_rows_first(path: Path, valid: int = 300) -> Path:
    """A day whose first six rows are invalid (dead letters), then ``valid`` good rows."""
    write_day(path, 0, invalid=6)
    return write_day(path, valid)


def test_a_trial_runs_dead_letters_never_replace_the_complete_ones(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str
) -> None:
    day = invalid_rows_first(tmp_path / "day.csv")
    complete = replay_csv(emulator, ledger, day, tmp_path, pipeline)
    published = tmp_path / "dead" / pipeline / f"{DAY.label}.jsonl"
    assert complete.dead_letters == str(published) and len(dead_letters(published)) == 6
    before = published.read_bytes()
    trial = replay_csv(emulator, ledger, day, tmp_path, pipeline, row_limit=4, max_invalid_ratio=1.0)
    assert trial.read == 4
    assert published.read_bytes() == before  # still the complete run's six
    partial = Path(trial.dead_letters or "")
    assert partial == published.parent / "partial" / f"{DAY.label}.jsonl"
    assert [d["row"] for d in dead_letters(partial)] == [1, 2, 3, 4]  # the first four records
    assert run_records(ledger, pipeline)[0]["dead_letters"] == str(partial)
    whole = replay_csv(emulator, ledger, day, tmp_path, pipeline, row_limit=10_000)  # read it all
    assert whole.read == 306 and whole.dead_letters == str(published)


def test_a_rerun_without_the_days_file_keeps_the_complete_dead_letters(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str
) -> None:
    """``on_missing: skip`` reads a removed day as empty: that re-run's (empty) dead letters go beside
    the complete ones, which stay."""
    day = invalid_rows_first(tmp_path / f"export-{DAY.label}.csv")

    def run() -> ReplaySummary:
        client = HeapClient(emulator.url, "app", connect_timeout=2, read_timeout=5)
        source = CsvSource(str(tmp_path / "export-{date:%Y-%m-%d}.csv"), DAY, on_missing="skip")
        options = ReplayOptions(max_events=50, retry=FAST_RETRIES, max_invalid_ratio=0.5)
        letters = DeadLetters(str(tmp_path / "dead"), pipeline, DAY.label)
        try:
            return replay(pipeline, source, SPEC, DAY, client, options, ledger=ledger, dead_letters=letters)
        finally:
            client.close()

    published = tmp_path / "dead" / pipeline / f"{DAY.label}.jsonl"
    assert run().dead_letters == str(published)
    before = published.read_bytes()
    day.unlink()
    rerun = run()
    assert rerun.read == 0
    assert published.read_bytes() == before
    assert rerun.dead_letters == str(published.parent / "partial" / f"{DAY.label}.jsonl")
    assert run_records(ledger, pipeline)[0]["dead_letters"] == rerun.dead_letters


# -- temporary files: in the pipeline's working folder, removed when their process died ---------------
CHILD = """
import sys, time
from walkme_heap.deadletters import DeadLetters
from walkme_heap.dedupe import SeenKeys
from walkme_heap.mapping.keys import key_from_event_id, key_hashes

work = sys.argv[1]
dead = DeadLetters(sys.argv[2], "p", "2024-03-10", work_dir=work)
dead.add(origin="day.csv", row=1, outcome="invalid", reason="missing_identity", source={"wm.euId": "jane"})
seen = SeenKeys(memory_keys=10, spill_dir=work)  # past 10 keys, they go to a file
seen.first_occurrences(key_hashes([key_from_event_id(str(n)) for n in range(50)]))
print("ready", flush=True)
time.sleep(600)
"""


def temp_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith("walkme-heap-")}


def test_temp_files_of_a_killed_process_are_removed_by_the_next_run_and_a_live_ones_are_kept(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    children: list[subprocess.Popen[str]] = []
    owned: list[set[str]] = []
    try:
        for _ in range(2):
            seen = temp_files(work) if work.exists() else set()
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(work), str(tmp_path / "dead")],
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            children.append(child)
            assert child.stdout is not None and child.stdout.readline() == "ready\n", child.communicate()
            owned.append(temp_files(work) - seen)
        killed, alive = owned
        assert len(killed) == len(alive) == 2  # the dead letters and the seen keys of each
        for name in killed | alive:
            assert stat.S_IMODE((work / name).stat().st_mode) == 0o600
        assert stat.S_IMODE(work.stat().st_mode) == 0o700
        children[0].send_signal(signal.SIGKILL)
        children[0].wait(timeout=10)
        day = write_day(tmp_path / "day.csv", 20, invalid=0)
        replay("p", CsvSource(str(day), DAY), SPEC, DAY, None, ReplayOptions(dry_run=True), work_dir=work)
        assert temp_files(work) == alive  # the killed one's are gone, the live one's kept
        assert children[1].poll() is None
    finally:
        for child in children:
            child.kill()
            child.wait(timeout=10)


def test_a_runs_temp_files_go_to_the_pipelines_working_folder(
    emulator: HeapEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a folder given, a replay's dead letters and seen keys are written under
    ``$WALKME_HEAP_HOME/work/<pipeline>`` while it runs, and nothing is left there after."""
    home = tmp_path / "home"
    monkeypatch.setenv("WALKME_HEAP_HOME", str(home))
    work = home / "work" / "p"
    during: list[set[str]] = []

    class Watched(CsvSource):
        def chunks(self, origin: str) -> Iterator[Chunk]:
            for chunk in super().chunks(origin):
                yield chunk
                during.append(temp_files(work))  # after the run took the chunk

    day = write_day(tmp_path / "day.csv", 300)
    client = HeapClient(emulator.url, "app", connect_timeout=2, read_timeout=5)
    try:
        summary = replay(
            "p",
            Watched(str(day), DAY, chunk_rows=100),
            SPEC,
            DAY,
            client,
            ReplayOptions(max_events=50, retry=FAST_RETRIES, max_invalid_ratio=0.5, dedupe_memory_keys=50),
            dead_letters=DeadLetters(str(tmp_path / "dead"), "p", DAY.label),
        )
    finally:
        client.close()
    assert summary.read == 306 and summary.dead_letters == str(tmp_path / "dead" / "p" / f"{DAY.label}.jsonl")
    assert {name.split("-")[2] for name in during[-1]} == {"dead", "seen"}
    assert temp_files(work) == set()


# -- whatever the data, a dead letter is written ----------------------------------------------------------
def test_values_json_cannot_hold_are_written_with_their_bytes_visible(tmp_path: Path) -> None:
    """Invalid UTF-8 kept by surrogateescape, integers beyond 2^53 - 1, control characters and deep
    nesting: every dead letter is written, each value recognisable."""
    raw = b"caf\xc3\xa9 \xff\xfe!".decode("utf-8", "surrogateescape")
    deep: Any = "bottom"
    for _ in range(300):
        deep = [deep]
    dead = letters(tmp_path)
    dead.add(
        origin=f"export-{raw}.csv",
        row=1,
        outcome="invalid",
        reason="missing_identity",
        message=raw,
        source={
            "text": raw,
            raw: "a key too",
            "lone": "\ud800x",
            "big": 2**70,
            "negative": -(2**64),
            "u64": 2**64 - 1,
            "exact": 2**53 - 1,
            "controls": "a\x00b\x1fc\x7f",
            "nested": {"list": [raw, 2**65, {"n": float("nan")}]},
            "deep": deep,
        },
        payload={"identity": raw, "properties": {"big": 10**30}},
    )
    dead.add(origin="day.csv", row=2, outcome="invalid", reason="missing_identity", source={"ok": "fine"})
    published = Path(dead.commit())
    raw_bytes = published.read_bytes()
    raw_bytes.decode("utf-8")  # valid UTF-8 throughout
    assert b"\\u0000" in raw_bytes  # a NUL is a JSON escape
    first, second = (json.loads(line) for line in raw_bytes.splitlines())
    shown = "café \\xff\\xfe!"
    source = first["source"]
    assert (first["origin"], first["message"]) == (f"export-{shown}.csv", shown)
    assert (source["text"], source[shown], source["lone"]) == (shown, "a key too", "\\ud800x")
    # jq and JavaScript hold integers exactly up to 2^53 - 1: beyond, the digits
    assert (source["big"], source["negative"], source["u64"]) == (str(2**70), str(-(2**64)), str(2**64 - 1))
    assert source["exact"] == 2**53 - 1
    assert source["controls"] == "a\x00b\x1fc\x7f"
    assert source["nested"] == {"list": [shown, str(2**65), {"n": None}]}
    assert first["payload"] == {"identity": shown, "properties": {"big": str(10**30)}}
    level, depth = source["deep"], 0
    while isinstance(level, list):
        level, depth = level[0], depth + 1
    assert depth >= 32 and level == "[" * (300 - depth) + "'bottom'" + "]" * (300 - depth)  # as text
    assert second["source"] == {"ok": "fine"}


def test_a_publish_that_fails_after_the_day_was_sent_marks_the_run_failed(
    emulator: HeapEmulator, ledger: Ledger, tmp_path: Path, pipeline: str
) -> None:
    """The run record said ``running`` (until found abandoned) when publishing failed: it must say
    failed, with the error, and the error must fail the task."""
    day = invalid_rows_first(tmp_path / "day.csv")
    client = HeapClient(emulator.url, "app", connect_timeout=2, read_timeout=5)
    letters = DeadLetters(str(tmp_path / "dead"), pipeline, DAY.label, lambda url: (BreaksMidCopy(), url))
    options = ReplayOptions(max_events=50, max_invalid_ratio=0.5)
    with pytest.raises(OSError, match="No space left"):
        replay(
            pipeline,
            CsvSource(str(day), DAY),
            SPEC,
            DAY,
            client,
            options,
            ledger=ledger,
            dead_letters=letters,
        )
    client.close()
    (record,) = run_records(ledger, pipeline)
    assert record["status"] == "failed" and "No space left" in record["message"]
    assert not any((tmp_path / "dead" / pipeline).glob(f"{DAY.label}*.jsonl"))
