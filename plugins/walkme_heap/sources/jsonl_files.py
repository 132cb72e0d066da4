"""JSON Lines files of webhook payloads: one JSON object a line, flattened to dotted columns.

Same path options as CSV (templates, globs, gzip, object storage). A line that is not a JSON object
is counted as malformed with its line number; blank lines are not records.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import orjson

from walkme_heap.sources.base import Chunk, flatten, records_frame
from walkme_heap.sources.files import FileSource

HEADER_SAMPLE = 1000  # records read to learn a file's keys before anything is sent


class JsonLinesSource(FileSource):
    """Reads one window of JSON Lines exports in bounded chunks."""

    def _records(self, url: str) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
        """(line number, record or None, problem) for each non-blank line."""
        with self.open(url) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace")
            for number, line in enumerate(text, start=1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield number, None, f"not JSON: {exc}"
                    continue
                if isinstance(record, dict):
                    yield number, record, ""
                else:
                    yield number, None, f"a JSON {type(record).__name__}, not an object"

    def headers(self, url: str) -> list[str]:
        """Keys seen in the first records (payload keys vary; later rows may add more)."""
        seen: dict[str, None] = {}
        for count, (_, record, _) in enumerate(self._records(url)):
            if record is not None:
                seen.update(dict.fromkeys(key for key, _ in flatten(record)))
            if count >= HEADER_SAMPLE:
                break
        return list(seen)

    def chunks(self, url: str) -> Iterator[Chunk]:
        records: list[dict[str, Any]] = []
        numbers: list[int] = []
        malformed: list[tuple[int, str]] = []
        for number, record, problem in self._records(url):
            if record is None:
                malformed.append((number, problem))
                continue
            records.append(record)
            numbers.append(number)
            if len(records) >= self.chunk_rows:
                yield Chunk(frame=records_frame(records, numbers), origin=url, malformed=malformed)
                records, numbers, malformed = [], [], []
        if records or malformed:
            yield Chunk(frame=records_frame(records, numbers), origin=url, malformed=malformed)
