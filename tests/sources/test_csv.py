"""CSV source: templates, globs, gzip, BOM, quoted newlines, malformed records, bounded chunks."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from walkme_heap.sources.base import SourceError, SourceMissingError
from walkme_heap.sources.csv_files import CsvSource
from walkme_heap.sources.files import expand_paths
from walkme_heap.window import Window

DAY = Window(datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 11, tzinfo=UTC))
THREE_DAYS = Window(datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 13, tzinfo=UTC))
CSV = 'a,b,c\n1,2,3\n4,"x\ny",6\n7,8,9\n'


def rows(source: CsvSource) -> list[dict]:
    out = []
    for origin in source.origins():
        for chunk in source.chunks(origin):
            out.extend(chunk.frame.to_dict("records"))
    return out


def test_date_placeholders_expand_per_day() -> None:
    assert expand_paths("/x/{date:%Y-%m-%d}.csv", THREE_DAYS) == [
        "/x/2024-03-10.csv",
        "/x/2024-03-11.csv",
        "/x/2024-03-12.csv",
    ]
    assert expand_paths("/x/{start:%Y%m%d}-{end:%Y%m%d}.csv", THREE_DAYS) == ["/x/20240310-20240313.csv"]
    assert expand_paths("/x/all.csv", THREE_DAYS) == ["/x/all.csv"]


def test_bad_template_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="path template"):
        expand_paths("/x/{day}.csv", DAY)


def test_bom_quoted_newlines_and_text_values(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text("\ufeff" + 'id,note\n007,"two\nlines"\n', encoding="utf-8")
    assert rows(CsvSource(str(tmp_path / "f.csv"), DAY)) == [{"id": "007", "note": "two\nlines"}]


def test_gzip_and_glob_in_stable_order(tmp_path: Path) -> None:
    (tmp_path / "part-b.csv.gz").write_bytes(gzip.compress(b"a\n2\n"))
    (tmp_path / "part-a.csv").write_text("a\n1\n")
    source = CsvSource(str(tmp_path / "part-*"), DAY)
    assert [Path(o).name for o in source.origins()] == ["part-a.csv", "part-b.csv.gz"]
    assert rows(source) == [{"a": "1"}, {"a": "2"}]


def test_fsspec_urls(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text(CSV)
    assert len(rows(CsvSource(f"file://{tmp_path}/f.csv", DAY))) == 3
    assert len(rows(CsvSource(f"file://{tmp_path}/*.csv", DAY))) == 3


def test_chunks_are_bounded_and_numbered(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text("a\n" + "".join(f"{i}\n" for i in range(10)))
    source = CsvSource(str(tmp_path / "f.csv"), DAY, chunk_rows=3)
    chunks = list(source.chunks(str(tmp_path / "f.csv")))
    assert [len(c.frame) for c in chunks] == [3, 3, 3, 1]
    assert [list(c.frame.index) for c in chunks][-1] == [10]


def test_missing_file_fails_or_is_skipped(tmp_path: Path) -> None:
    template = str(tmp_path / "{date:%Y-%m-%d}.csv")
    with pytest.raises(SourceMissingError, match="no file for 2024-03-10"):
        CsvSource(template, DAY).origins()
    assert CsvSource(template, DAY, on_missing="skip").origins() == []
    with pytest.raises(SourceMissingError, match=r"no file for 2024-03-10 at .*none-\*\.csv"):
        CsvSource(str(tmp_path / "none-*.csv"), DAY).origins()


def test_some_days_missing_in_a_range(tmp_path: Path) -> None:
    (tmp_path / "2024-03-11.csv").write_text(CSV)
    source = CsvSource(str(tmp_path / "{date:%Y-%m-%d}.csv"), THREE_DAYS, on_missing="skip")
    assert [Path(o).name for o in source.origins()] == ["2024-03-11.csv"]


def test_malformed_records_are_reported_with_numbers(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text('a,b,c\n1,"2\nz",3,4,5\n9,9,9,9\n4,"x\ny",6\n7,8,9,10\n11,12\n1,2,3,4,5,6\n13,14,15\n')
    chunks = list(CsvSource(str(path), DAY, chunk_rows=2).chunks(str(path)))
    good = [
        (i, r["a"]) for c in chunks for i, r in zip(c.frame.index, c.frame.to_dict("records"), strict=True)
    ]
    bad = [n for c in chunks for n, _ in c.malformed]
    assert good == [(3, "4"), (5, "11"), (7, "13")]
    assert sorted(bad) == [1, 2, 4, 6]


def test_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text("")
    with pytest.raises(SourceError, match="no header row"):
        CsvSource(str(tmp_path / "f.csv"), DAY).headers(str(tmp_path / "f.csv"))


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text("a,b\n")
    assert rows(CsvSource(str(tmp_path / "f.csv"), DAY)) == []


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_bytes(b"a\nok\xff\n")
    assert rows(CsvSource(str(tmp_path / "f.csv"), DAY)) == [{"a": "ok\ufffd"}]


@pytest.mark.parametrize("name", ["2024-03-10.csv", "export-2024-03-10-a.csv"])
def test_an_empty_file_is_a_missing_one_and_a_header_only_file_a_day_without_rows(
    tmp_path: Path, name: str
) -> None:
    """A zero-byte file (still being written, or a failed export) follows on_missing like a missing
    one: skipped, or the retryable missing-file error; a header alone is a day with zero rows."""
    template = str(tmp_path / ("{date:%Y-%m-%d}.csv" if name[0].isdigit() else "export-*.csv"))
    (tmp_path / name).write_bytes(b"")
    assert CsvSource(template, DAY, on_missing="skip").origins() == []
    with pytest.raises(SourceMissingError, match=r"no file for 2024-03-10 .*empty"):
        CsvSource(template, DAY).origins()
    (tmp_path / name).write_text("a,b,c\n")
    source = CsvSource(template, DAY)
    assert len(source.origins()) == 1 and rows(source) == []
