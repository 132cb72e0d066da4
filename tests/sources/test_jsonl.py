"""JSON Lines sources: payloads flattened into dotted columns, bad lines counted, keys that vary."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tests.helpers import DAY
from walkme_heap.mapping.columns import bind_columns
from walkme_heap.mapping.mapper import Mapper
from walkme_heap.mapping.spec import MappingSpec
from walkme_heap.sources.jsonl_files import JsonLinesSource


# -- JSON Lines ----------------------------------------------------------------------------------
def test_jsonl_records_are_flattened_and_bad_lines_counted(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl"
    path.write_text(
        '{"wm.euId": "u", "ctx": {"title": "T"}, "tags": ["a", "b"]}\n\n[1]\nnot json\n{"wm.euId": "v"}\n'
    )
    source = JsonLinesSource(str(path), DAY, chunk_rows=1)
    assert source.headers(str(path)) == ["wm.euId", "ctx.title", "tags"]
    chunks = list(source.chunks(str(path)))
    frames = [c.frame for c in chunks if not c.frame.empty]
    assert [f.index.tolist() for f in frames] == [[1], [5]]
    assert frames[0].to_dict("records") == [{"wm.euId": "u", "ctx.title": "T", "tags": ["a", "b"]}]
    assert [n for c in chunks for n, _ in c.malformed] == [3, 4]


def test_keys_missing_from_a_chunk_make_rows_invalid_not_a_crash() -> None:
    spec = MappingSpec()
    mapper = Mapper(spec, bind_columns(spec, ["wm.euId", "created_at"], "x"))
    result = mapper.map_chunk(pd.DataFrame({"wm.euId": ["u"]}), DAY.start_ms, DAY.end_ms)
    assert result.invalid == {"unparsable_time": 1}


def test_a_damaged_gzip_fails_as_a_source_error_when_its_keys_are_read(tmp_path: Path) -> None:
    """The header check reads a file before its chunks: a raw EOFError escaped from there."""
    import gzip

    import pytest

    from walkme_heap.sources.base import SourceError

    data = gzip.compress(b"".join(b'{"wm.euId": "u%d"}\n' % n for n in range(50)))
    for damaged in (data[: len(data) // 2], b"not gzip at all"):
        (tmp_path / "d.jsonl.gz").write_bytes(damaged)
        with pytest.raises(SourceError, match=r"d\.jsonl\.gz"):
            JsonLinesSource(str(tmp_path / "d.jsonl.gz"), DAY).headers(str(tmp_path / "d.jsonl.gz"))
