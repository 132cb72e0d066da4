"""CSV source: templates, globs, gzip, BOM, quoted newlines, malformed records, bounded chunks."""

from __future__ import annotations

import gzip
import io
import random
import re
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from walkme_heap.sources import csv_files
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


# -- hostile input: a bad file fails with a SourceError before any of it is sent; a bad record is malformed


def chunks_of(path: Path, **options: object) -> list:
    source = CsvSource(str(path), DAY, **options)  # type: ignore[arg-type]
    return list(source.chunks(str(path)))


def numbered(chunks: list) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(record number, first column) of the rows read, and the malformed records, over all chunks."""
    good = [
        (int(i), str(v))
        for c in chunks
        if len(c.frame.columns)
        for i, v in zip(c.frame.index, c.frame.iloc[:, 0], strict=True)
    ]
    return good, sorted(m for c in chunks for m in c.malformed)


def test_an_unclosed_quote_fails_the_file_before_its_first_chunk(tmp_path: Path) -> None:
    """The rest of the file would be one value: nothing of the file is sent, the error says where."""
    path = tmp_path / "f.csv"
    body = "".join(f'{i},"note\n{i}"\n' for i in range(30))  # quoted line breaks: lines != records
    path.write_text("a,b\n" + body + '31,"never closed\nmore,lines\n32,x\n')
    chunks = CsvSource(str(path), DAY, chunk_rows=10).chunks(str(path))
    with pytest.raises(SourceError, match=r"f\.csv.*unclosed quote.* record 31 \(line 62\)"):
        next(chunks)


def test_a_quote_inside_an_unquoted_field_is_text_not_an_open_quote(tmp_path: Path) -> None:
    """Only a quote that starts a field opens a quoted value (as the parser reads it): 12" is text."""
    path = tmp_path / "f.csv"
    path.write_text('a,b\n1,12" screen\n2,"x""y"z\n3,"q"\n')
    assert rows(CsvSource(str(path), DAY)) == [
        {"a": "1", "b": '12" screen'},
        {"a": "2", "b": 'x"yz'},
        {"a": "3", "b": "q"},
    ]


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_gzip_fails_the_file_before_its_first_chunk(tmp_path: Path, damage: str) -> None:
    data = gzip.compress(("a,b\n" + "".join(f"{i},{i * 7919 % 1000}\n" for i in range(50_000))).encode())
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    else:
        data = data[:200] + bytes(b ^ 0x5A for b in data[200:400]) + data[400:]
    (tmp_path / "f.csv.gz").write_bytes(data)
    chunks = CsvSource(str(tmp_path / "f.csv.gz"), DAY, chunk_rows=1000).chunks(str(tmp_path / "f.csv.gz"))
    # a truncated file may still be being written: retried like a missing one; a corrupt one fails
    expected = SourceMissingError if damage == "truncated" else SourceError
    message = r"f\.csv\.gz is truncated .*ends early" if damage == "truncated" else r"f\.csv\.gz .*corrupt"
    with pytest.raises(expected, match=message):
        next(chunks)


def test_an_oversized_record_is_malformed_never_parsed_and_the_rest_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record over max_record_bytes is counted as malformed, its bytes never reach the parser
    (memory stays bounded), and the records after it keep their numbers."""
    big_quoted = '"' + "Q" * 3000 + "\n" + "Q" * 3000 + '"'
    big_plain = "P" * 5000
    path = tmp_path / "f.csv"
    path.write_text(f"a,b\n1,x\n2,{big_quoted}\n3,y\n4,{big_plain}\n5,6,7\n8,z\n")
    seen: list[bytes] = []
    real = pd.read_csv

    def spy(handle: Any, **kwargs: Any) -> Any:
        data = handle.read()  # the header's bytes, or the records' text (decoded for the parser)
        seen.append(data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape"))
        return real(io.BytesIO(seen[-1]), **kwargs)

    monkeypatch.setattr(csv_files.pd, "read_csv", spy)
    good, bad = numbered(chunks_of(path, chunk_rows=2, max_record_bytes=1000))
    assert good == [(1, "1"), (3, "3"), (6, "8")]
    assert bad == [
        (2, "record of 6005 bytes exceeds max_record_bytes 1000"),
        (4, "record of 5002 bytes exceeds max_record_bytes 1000"),
        (5, "expected 2 fields, saw 3"),
    ]
    assert seen and not any(b"QQQQ" in data or b"PPPP" in data for data in seen)


def test_an_oversized_header_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text(",".join(f"column_{i}" for i in range(200)) + "\n" + ",".join("1" * 200) + "\n")
    with pytest.raises(SourceError, match=r"f\.csv: the header row is longer than max_record_bytes 1000"):
        CsvSource(str(path), DAY, max_record_bytes=1000).headers(str(path))


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_truncated_last_record_is_malformed_not_padded(tmp_path: Path, newline: str) -> None:
    """A file still being written ends in a partial record: padding it would send another row (and
    another idempotency key) than the complete one later, so it is reported, never read."""
    path = tmp_path / "f.csv"
    path.write_bytes(newline.join(["a,b,c", "1,2,3", '4,"5', '5"']).encode())
    good, bad = numbered(chunks_of(path))
    assert good == [(1, "1")]
    assert bad == [
        (
            2,
            "the last record has 2 of 3 fields and no line break: the file may be incomplete "
            "(still being written?); it is left out (a complete file ends its last record with a line break)",
        )
    ]


def test_a_last_record_without_a_line_break_is_refused_even_with_every_field(tmp_path: Path) -> None:
    """``4,5,67`` may be ``4,5,6789`` cut while written: never sent, counted with the reason."""
    path = tmp_path / "f.csv"
    path.write_text('a,b,c\n1,2,3\n4,5,"6\n7"')
    assert rows(CsvSource(str(path), DAY)) == [{"a": "1", "b": "2", "c": "3"}]
    good, bad = numbered(chunks_of(path))
    assert good == [(1, "1")] and [n for n, _ in bad] == [2]
    assert "no line break: the file may be incomplete" in bad[0][1]
    path.write_text("a,b,c\n1,2,3\n   ")  # trailing blanks are no record
    good, bad = numbered(chunks_of(path))
    assert (good, bad) == ([(1, "1")], [])


def test_duplicate_headers_fail_with_their_positions_and_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("wm.euId,type,wm.euId,x,type\n1,play,2,3,click\n")
    with pytest.raises(SourceError) as info:
        CsvSource(str(path), DAY).headers(str(path))
    message = str(info.value)
    assert "f.csv has duplicate headers: 'wm.euId' at columns 1 and 3; 'type' at columns 2 and 5" in message
    assert "source.duplicate_headers" in message


def test_duplicate_headers_read_the_chosen_occurrence_under_the_plain_name(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("wm.euId,type,wm.euId,wm.euId.1,type\n1,play,2,3,click\n4,open,5,6,close\n")
    source = CsvSource(str(path), DAY, duplicate_headers={"wm.euId": 2, "type": 1, "absent": 2})
    assert source.headers(str(path)) == ["type", "wm.euId", "wm.euId.1"]
    assert rows(source) == [
        {"type": "play", "wm.euId": "2", "wm.euId.1": "3"},
        {"type": "open", "wm.euId": "5", "wm.euId.1": "6"},
    ]
    with pytest.raises(
        SourceError, match=r"duplicate_headers: 'wm.euId' occurrence 3, but .*f\.csv has 2 columns"
    ):
        CsvSource(str(path), DAY, duplicate_headers={"wm.euId": 3, "type": 1}).headers(str(path))


@pytest.mark.parametrize("compress", [False, True])
def test_invalid_utf8_keeps_its_bytes_as_lone_surrogates(tmp_path: Path, compress: bool) -> None:
    """Replacing invalid bytes by U+FFFD would merge ids that differ only in them: each byte stays
    distinguishable (U+DC80..U+DCFF), valid text around it is unchanged."""
    data = "a,b\nok\udcff,ü\nok\udcfe,é\n".encode("utf-8", "surrogateescape")
    path = tmp_path / ("f.csv.gz" if compress else "f.csv")
    path.write_bytes(gzip.compress(data) if compress else data)
    assert rows(CsvSource(str(path), DAY)) == [{"a": "ok\udcff", "b": "ü"}, {"a": "ok\udcfe", "b": "é"}]


def test_malformed_numbers_agree_with_the_parsers_around_blank_lines_crlf_and_a_bom(tmp_path: Path) -> None:
    """Left-out records keep their place: the parser's own numbers for later bad records still match."""
    path = tmp_path / "f.csv"
    lines = [
        "\ufeffa,b",
        "1,x",
        "2," + "L" * 2000,
        "3,y",
        "4,y,extra",
        "5,z",
        '6,"' + "M" * 1500 + '"',
        "7,e,e",
    ]
    path.write_bytes("\r\n".join(lines).encode())  # the last record has too many fields: the parser's
    good, bad = numbered(chunks_of(path, chunk_rows=2, max_record_bytes=1000))
    assert good == [(1, "1"), (3, "3"), (5, "5")]
    assert [n for n, _ in bad] == [2, 4, 6, 7]
    assert "exceeds" in bad[0][1] and "exceeds" in bad[2][1] and "exceeds" not in bad[1][1] + bad[3][1]


def test_progress_counts_the_read_of_the_rows_not_the_check_before_it(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("a,b\n" + "".join(f"{i},value {i}\n" for i in range(200_000)))
    source = CsvSource(str(path), DAY, chunk_rows=1000)
    (origin,) = source.origins()
    chunks = source.chunks(origin)
    next(chunks)
    assert 0 < source.progress() < 0.5  # type: ignore[operator]
    for _ in chunks:
        pass
    assert source.progress() == 1.0


def test_the_default_record_bound_is_one_mib(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("a,b\n1," + "v" * (1_048_576 - 2) + "\n2," + "w" * (1_048_576 - 1) + "\n3,x\n")
    good, bad = numbered(chunks_of(path))
    assert good == [(1, "1"), (3, "3")]
    assert bad == [(2, "record of 1048577 bytes exceeds max_record_bytes 1048576")]


@pytest.mark.parametrize("seed", range(4))
def test_the_pre_scan_splits_records_and_counts_fields_as_the_parser_does(seed: int) -> None:
    """Random text of quotes, delimiters, line breaks (\\n, \\r, \\r\\n) and blanks, fed in random
    blocks: the pre-scan finds an unclosed quote exactly when the parser does, the same records
    at the same line numbers, and the same field count for a last record without a line break.
    (Not a lone \\r before a delimiter: the parser moves that delimiter to the line before.)"""
    from walkme_heap.sources.csv_files import _Scan

    rng = random.Random(seed)
    for _ in range(400):
        body = "".join(rng.choice('ab,,""""\n\r  \t') for _ in range(rng.randint(0, 30)))
        body = body.replace("\r,", "\r\n,")
        data = (rng.choice(["", "\ufeff"]) + "h\nx\n" + body).encode()
        scan = _Scan(ord(","), 1 << 20)
        ends: list[int] = []
        position = 0
        while position < len(data):
            size = rng.randint(1, 6)
            ends += scan.feed(data[position : position + size]).tolist()
            position += size
        scan.finish()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                frame = pd.read_csv(io.BytesIO(data), dtype=str, encoding="utf-8-sig", on_bad_lines="warn")
            except pd.errors.ParserError as exc:
                assert "EOF inside string" in str(exc) and scan.inside, (data, str(exc))
                continue
        assert not scan.inside, data
        saw = {
            int(m.group(1)): int(m.group(2))
            for w in caught
            for m in re.finditer(r"Skipping line (\d+): expected 1 fields, saw (\d+)", str(w.message))
        }
        records, line, start = [], 1, scan.bom  # (line, bytes) of each record
        for end in ends:
            records.append((line, data[start:end]))
            line += not (data[end] == 0x0A and end > 0 and data[end - 1] == 0x0D)
            start = end + 1
        if start < len(data):
            records.append((line, data[start:]))
        lines = [n for n, text in records[2:] if text.strip(b" \t")]  # data records after "h" and "x"
        assert len(frame) - 1 + len(saw) == len(lines) and set(saw) <= set(lines), data
        if start < len(data) and data[start:].strip(b" \t"):
            assert scan.tail_fields() == saw.get(records[-1][0], 1), data


@pytest.mark.parametrize("damage", [b"caf\xe9", b"\xff\xfe\xfd\xfc"])
def test_a_file_no_longer_utf8_when_read_fails_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: bytes
) -> None:
    """A file the pre-scan found valid UTF-8 is decoded by the parser strictly (the fast path); if
    its bytes changed in between, the run fails saying so, never with a decoder's traceback."""
    path = tmp_path / "day.csv"
    path.write_bytes(b"wm.euId,created_at,type\nu1,1710028800000,play\nu2,1710028800001,abcd\n")
    window = Window(datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 11, tzinfo=UTC))
    source = CsvSource(str(path), window)
    prescan = CsvSource._prescan

    def then_damaged(self: CsvSource, url: str, header: Any) -> Any:
        scan = prescan(self, url, header)
        path.write_bytes(path.read_bytes().replace(b"abcd", damage))
        return scan

    monkeypatch.setattr(CsvSource, "_prescan", then_damaged)
    with pytest.raises(SourceError, match="did it change while read"):
        list(source.chunks(str(path)))


@pytest.mark.parametrize("escaped", [False, True])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_leading_blanks_are_kept_wherever_the_parser_s_buffer_ends(
    tmp_path: Path, newline: str, escaped: bool
) -> None:
    """pandas' C parser loses the blanks that start a record when its read buffer ends among them
    (pandas-dev/pandas#34085): ``" x"`` became ``"x"``, ``" "`` a missing value. Records of 1 to 6
    blanks before their value, over several MB, put buffer ends inside them wherever the buffers
    end; every value must come back as it was written."""
    rng = random.Random(34085)
    values = [" " * rng.randint(1, 6) + rng.choice(["x", "", "\tx", "ü"]) for _ in range(400_000)]
    text = "a,b" + newline + "".join(f"{v},{i}{newline}" for i, v in enumerate(values))
    if escaped:  # a byte that is not UTF-8: the file is decoded with surrogateescape
        text = text.replace("a,b", "a,b\udcff", 1)
    path = tmp_path / "blanks.csv"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    expected = values  # blanks then a value, or blanks alone (a value too: only "" is missing)
    got = [v for chunk in chunks_of(path, chunk_rows=100_000) for v in chunk.frame["a"].tolist()]
    got = [None if v is None or v != v else v for v in got]  # NaN -> None
    wrong = [(i, expected[i], got[i]) for i in range(len(values)) if got[i] != expected[i]]
    assert len(got) == len(values) and not wrong[:5], f"{len(wrong)} values altered, e.g. {wrong[:5]}"


@pytest.mark.parametrize(
    ("data", "record"),
    [
        (b"a,b\n1,2\n\r,3\n", 3),  # an empty line ended by a lone \r (\n\r line ends)
        (b"a,b\r\r,3\r", 2),  # classic Mac line ends with an empty line
        (b"a,b\n1,2\n  \r,3\n", 3),  # a line of blanks
        (b"a,b\n\t\r,3\n", 2),
        (b"a,b\r" + b"x" * 50 + b",1\r,5\r6,7\r", 2),  # a record left out (too long) leaves its \r
    ],
)
def test_a_record_pandas_would_shift_fails_the_file_before_its_first_chunk(
    tmp_path: Path, data: bytes, record: int
) -> None:
    """After a line the parser skips (blank, or left out) ended by a lone \\r, pandas' C parser drops
    the empty first field of a record that starts with the delimiter and moves its values one
    column left (``,3`` is read as ``3,``): a value of column b would be sent as the identity.
    Nothing of such a file is read."""
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    with pytest.raises(SourceError, match=rf"record {record} \(line {record + 1}\) starts with an empty"):
        chunks_of(path, max_record_bytes=20)


@pytest.mark.parametrize(
    "data",
    [
        b"a,b\n1,2,3\r,5\n",  # skipped on a second read, its lone \r would shift the next record
        b"a,b\r1,2,3\r,5\r6,7\r",
        b"a,b\r\r1,2,3\r,5\r",  # after a blank line: the parser's skip would take the wrong line
        b"a,b\r,1,2\r3,4\r",  # the header's lone \r: the skip would never take it
    ],
)
def test_a_first_record_with_extra_fields_the_parser_cannot_skip_fails_the_file(
    tmp_path: Path, data: bytes
) -> None:
    """pandas would make the extra fields of the first record an index: the record is skipped on a
    second read, by line number, which goes wrong with lone \\r line ends."""
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    with pytest.raises(SourceError, match=r"record 1 has more fields than the header and must be skipped"):
        chunks_of(path)


def test_a_first_record_with_extra_fields_before_a_quoted_line_break_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b'a,b\n1,2,3\n4,"x\ny"\n5,6\n')
    good, bad = numbered(chunks_of(path))
    assert good == [(2, "4"), (3, "5")] and bad == [(1, "expected 2 fields, saw more")]


@pytest.mark.parametrize(
    ("data", "delimiter", "expected"),
    [
        (b"a,b\n\r\n,3\n", ",", [[None, "3"]]),  # a blank line ended by \r\n
        (b"a,b\n1,2\r,3\n", ",", [["1", "2"], [None, "3"]]),  # a lone \r ending a record not blank
        (b"a,b\n\r x,3\n", ",", [[" x", "3"]]),  # the next record does not start with the delimiter
        (b'a,b\n"q\n\r,3",4\n', ",", [["q\n\r,3", "4"]]),  # inside a quoted value
        (b"a b c\r  \r 5 6\r", " ", [[None, None, None], [None, "5", "6"]]),  # spaces delimit: a record
    ],
)
def test_lone_carriage_returns_the_parser_reads_right_are_read(
    tmp_path: Path, data: bytes, delimiter: str, expected: list[list[str | None]]
) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    rows = [
        r
        for c in chunks_of(path, delimiter=delimiter)
        for r in c.frame.astype(object).where(c.frame.notna(), None).values.tolist()
    ]
    assert rows == expected


@pytest.mark.parametrize(
    ("tail", "shifted"),
    [
        (b"\r,3\n", (7, 8)),  # record 6 is blank, record 7 would be shifted
        (b"  \t \r,3\n", (7, 8)),
        (b'"q\n\r",3\n', None),  # quoted
        (b"\r\n,3\n", None),  # \r\n ends the blank line
        (b"z\r,3\n", None),  # not blank
        (b"\r\r,3\n", (8, 9)),
    ],
)
@pytest.mark.parametrize("seed", range(2))
def test_the_shifted_record_is_found_wherever_the_blocks_end(
    seed: int, tail: bytes, shifted: tuple[int, int] | None
) -> None:
    from walkme_heap.sources.csv_files import _Scan

    rng = random.Random(seed)
    data = b"h1,h2\n" + b"x,1\n" * 5 + tail + b"y,2\n"
    for _ in range(50):
        scan = _Scan(ord(","), 1 << 20, data_start=6, width=2)
        position = 0
        while position < len(data):
            size = rng.randint(1, 5)
            scan.feed(data[position : position + size])
            position += size
        scan.finish()
        assert scan.shifted == shifted, data


def test_spaces_that_delimit_are_not_blanks_wherever_the_blocks_end() -> None:
    """With a space delimiter a line of spaces is a record (the parser reads it), not a blank line."""
    from walkme_heap.sources.csv_files import _Scan

    data = b"a b\r1 2\r  \r 5\r"
    for split in range(1, len(data)):
        scan = _Scan(ord(" "), 1 << 20, data_start=4, width=2)
        scan.feed(data[:split])
        scan.feed(data[split:])
        scan.finish()
        assert scan.shifted is None, split
