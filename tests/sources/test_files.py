"""What every file source shares: reading a file through (a damaged gzip is a SourceError naming it),
the days skipped as missing, and the record bound passed from the source settings."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DAY
from walkme_heap.sources.base import SourceError
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.sources.factory import open_source
from walkme_heap.sources.files import FileSource
from walkme_heap.sources.jsonl_files import JsonLinesSource
from walkme_heap.sources.spec import SourceSpec
from walkme_heap.window import Window

THREE_DAYS = Window(datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 13, tzinfo=UTC))
DATA = b"".join(b"line %d of the export\n" % i for i in range(100_000))


@pytest.mark.parametrize("name", ["f.jsonl", "f.jsonl.gz"])
def test_read_through_hands_over_every_decompressed_byte_in_bounded_blocks(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(DATA) if name.endswith(".gz") else DATA)
    source = FileSource(str(path), DAY)
    assert source.origins() == [str(path)]
    blocks: list[bytes] = []
    source.read_through(str(path), blocks.append)
    assert b"".join(blocks) == DATA
    assert max(len(b) for b in blocks) <= 1 << 20 < len(DATA)
    source.read_through(str(path))  # a check alone
    assert source.progress() == 0.0  # reading a file through to check it is no progress of the window


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "not gzip"])
def test_read_through_turns_a_damaged_gzip_into_a_source_error(tmp_path: Path, damage: str) -> None:
    data = gzip.compress(DATA)
    data = {
        "truncated": data[: len(data) // 2],
        "corrupt": data[:100] + bytes(b ^ 0xFF for b in data[100:300]) + data[300:],
        "not gzip": DATA,
    }[damage]
    (tmp_path / "f.jsonl.gz").write_bytes(data)
    with pytest.raises(SourceError, match=r"f\.jsonl\.gz (is truncated|cannot be decompressed)"):
        FileSource(str(tmp_path / "f.jsonl.gz"), DAY).read_through(str(tmp_path / "f.jsonl.gz"))


def test_the_days_skipped_as_missing_are_recorded(tmp_path: Path) -> None:
    """A run that skipped days is incomplete: which days (paths) it skipped is kept for its report."""
    (tmp_path / "2024-03-11.csv").write_text("a\n1\n")
    (tmp_path / "2024-03-12.csv").write_bytes(b"")  # zero bytes: missing too
    source = CsvSource(str(tmp_path / "{date:%Y-%m-%d}.csv"), THREE_DAYS, on_missing="skip")
    assert source.missing == []
    assert [Path(o).name for o in source.origins()] == ["2024-03-11.csv"]
    assert source.missing == [str(tmp_path / "2024-03-10.csv"), str(tmp_path / "2024-03-12.csv")]
    (tmp_path / "2024-03-10.csv").write_text("a\n2\n")
    (tmp_path / "2024-03-12.csv").write_text("a\n3\n")
    assert len(source.origins()) == 3 and source.missing == []


class _Connections:
    def filesystem(self, conn_id: str | None) -> None:
        return None


@pytest.mark.parametrize(("kind", "cls"), [("csv", CsvSource), ("jsonl", JsonLinesSource)])
def test_the_record_bound_and_header_choices_come_from_the_source_settings(
    tmp_path: Path, kind: str, cls: type
) -> None:
    spec = SourceSpec(
        type=kind, path=str(tmp_path / "x"), max_record_bytes=4096, duplicate_headers=(("wm.euId", 2),)
    )
    source: Any = open_source(spec, DAY, _Connections())  # type: ignore[arg-type]
    assert isinstance(source, cls) and source.max_record_bytes == 4096
    if kind == "csv":
        assert source.duplicate_headers == {"wm.euId": 2}
    assert FileSource(str(tmp_path / "x"), DAY).max_record_bytes == 1_048_576


def test_the_record_guards_are_logged_only_when_set() -> None:
    assert "max_record_bytes" not in SourceSpec(type="csv", path="x").settings()
    settings = SourceSpec(type="csv", path="x", max_record_bytes=10, duplicate_headers=(("a", 2),)).settings()
    assert settings["max_record_bytes"] == 10 and settings["duplicate_headers"] == {"a": 2}
