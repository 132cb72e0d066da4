"""Dead letters are never lost: a publish that fails midway leaves the previous complete file, the
files (which hold identities) are readable by their owner only, and a location that cannot be
written fails the task before anything is sent."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException
from fsspec.implementations.local import LocalFileSystem

from tests.helpers import DATA, received
from walkme_heap.deadletters import DeadLetters
from walkme_heap.emulator import HeapEmulator
from walkme_heap.operators.replay import WalkMeToHeapOperator


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
