"""JSON Lines files of webhook payloads: one JSON object a line, flattened to dotted columns.

Same path options as CSV (templates, globs, gzip, object storage). A line that is not a JSON object
is counted as malformed with its line number; blank lines are not records. A line is read only up
to ``max_record_bytes``: a longer one is counted as malformed (never held in memory whole) and the
rest of the file replays. A line that is not valid UTF-8 keeps those bytes apart as lone surrogates
(``surrogateescape``, as CSV does: the mapper refuses such an identity, other values get U+FFFD);
line ends are ``\\n``, ``\\r\\n`` or ``\\r``; numbers are read exactly
(``loads_exact``); a last line without a line end that is not complete JSON is reported as such
(the file may still be being written). A ``.gz`` file is decompressed to its end before its first
record is handed out, so a truncated one fails before anything of it is sent.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import orjson

from walkme_heap.sources.base import Chunk, flatten, has_surrogate, loads_exact, records_frame
from walkme_heap.sources.files import GZIP_ERRORS, FileSource, gzip_error

HEADER_SAMPLE = 1000  # records read to learn a file's keys before anything is sent
_BOM = "\xef\xbb\xbf"  # as latin-1 text
_NO_LINE_END = "the last line has no line end: the file may be incomplete, still being written"


class JsonLinesSource(FileSource):
    """Reads one window of JSON Lines exports in bounded chunks."""

    def _lines(self, url: str) -> Iterator[tuple[int, bytes | None, int]]:
        """(line number, line or None when longer than the bound, its size) for each line. Line
        ends are ``\\n``, ``\\r\\n`` or ``\\r`` (latin-1 maps each byte to one character and back)."""
        limit = self.max_record_bytes
        try:
            with self.open(url) as opened:
                text = io.TextIOWrapper(opened, encoding="latin-1", newline=None)
                number = 0
                while line := text.readline(limit + 1):
                    number += 1
                    if number == 1 and line.startswith(_BOM):
                        line = line[len(_BOM) :]
                    if len(line) > limit and not line.endswith("\n"):
                        size = len(line)
                        while (rest := text.readline(1 << 20)) and not rest.endswith("\n"):
                            size += len(rest)
                        yield number, None, size + len(rest)
                        continue
                    yield number, line.encode("latin-1"), len(line)
        except GZIP_ERRORS as exc:
            raise gzip_error(url, exc) from None

    def _records(self, url: str) -> Iterator[tuple[int, dict[str, Any] | None, str, bool]]:
        """(line number, record or None, problem, escaped) for each non-blank line; ``escaped``:
        the line was not UTF-8 and its text holds those bytes as lone surrogates."""
        for number, line, size in self._lines(url):
            if line is None:
                problem = f"a line of {size} bytes exceeds max_record_bytes {self.max_record_bytes}"
                yield number, None, problem, False
                continue
            if not line.strip():
                continue
            escaped = False
            try:
                try:
                    record = loads_exact(line)
                except orjson.JSONDecodeError:
                    text = line.decode("utf-8", "surrogateescape")
                    if not has_surrogate(text):
                        raise
                    escaped = True  # not UTF-8: read with the bytes kept apart, as CSV does
                    record = loads_exact(text)
            except ValueError as exc:  # orjson.JSONDecodeError is one
                cut = "" if line.endswith(b"\n") else f" ({_NO_LINE_END})"
                yield number, None, f"not JSON: {exc}{cut}", False
                continue
            if isinstance(record, dict):
                yield number, record, "", escaped
            else:
                yield number, None, f"a JSON {type(record).__name__}, not an object", False

    def headers(self, url: str) -> list[str]:
        """Keys seen in the first records (payload keys vary; later rows may add more)."""
        seen: dict[str, None] = {}
        for count, (_, record, _, _) in enumerate(self._records(url)):
            if record is not None:
                seen.update(dict.fromkeys(key for key, _ in flatten(record)))
            if count >= HEADER_SAMPLE:
                break
        return list(seen)

    def chunks(self, url: str) -> Iterator[Chunk]:
        if url.endswith(".gz"):
            self.read_through(url)  # a truncated file fails here, before any of its records is sent
        records: list[dict[str, Any]] = []
        numbers: list[int] = []
        malformed: list[tuple[int, str]] = []
        escaped = False
        for number, record, problem, undecodable in self._records(url):
            if record is None:
                malformed.append((number, problem))
                continue
            records.append(record)
            numbers.append(number)
            escaped = escaped or undecodable
            if len(records) >= self.chunk_rows:
                frame = records_frame(records, numbers)
                yield Chunk(frame=frame, origin=url, malformed=malformed, escaped=escaped)
                records, numbers, malformed, escaped = [], [], [], False
        if records or malformed:
            frame = records_frame(records, numbers)
            yield Chunk(frame=frame, origin=url, malformed=malformed, escaped=escaped)
