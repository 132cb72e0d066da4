"""CSV exports, streamed in ``chunk_rows`` chunks.

Every value is read as text (ids keep their leading zeros); UTF-8 with or without a BOM; quoted
newlines allowed; records with too many fields are counted as malformed, never dropped silently.
Invalid UTF-8 bytes are kept distinguishable as lone surrogates (U+DC80..U+DCFF, Python's
``surrogateescape``): replacing them by U+FFFD would merge ids that differ only in those bytes.

Before the first chunk of a file is yielded, the file is read through once (``_Scan``, numpy on
decompressed blocks) to find what the parser cannot be trusted with:

- an unclosed quote (a record that never ends) or a truncated/corrupt gzip: the file fails with a
  ``SourceError`` naming it and where, and nothing of it is sent;
- a record longer than ``max_record_bytes``: reported as malformed; its bytes never reach the
  parser (memory stays bounded) and the rest of the file is read;
- a last record without a line break: the file may still be being written, so that record is
  reported as malformed instead of being padded with empty values or sent with its last value cut
  (it would be another row, with another idempotency key, than the complete one read later). A
  record with every field cannot be told from one cut inside its last field, so it is refused too:
  a complete export ends its last record with a line break.

The parser then reads the file through a stream that leaves those records' bytes out (each leaves
an empty line, so every later record keeps its number). A header repeated in a file is a
``SourceError`` unless ``duplicate_headers`` says which occurrence to read: that one is read under
the plain name, the others are left out of the frames (never sent as properties).
"""

from __future__ import annotations

import codecs
import io
import itertools
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from walkme_heap.sources.base import Chunk, SourceError
from walkme_heap.sources.files import GZIP_ERRORS, FileSource, gzip_error
from walkme_heap.window import Window

_BAD_LINE = re.compile(r"Skipping line (\d+): (.*)")
_QUOTE, _LF, _CR, _SPACE, _TAB = 0x22, 0x0A, 0x0D, 0x20, 0x09
_BOM = b"\xef\xbb\xbf"
_HEADER_BLOCK = 64 << 10  # bytes read at a time while looking for the header's end
MAX_SKIPPED_LEADING = 1000  # first records with extra fields skipped (pandas would make them an index)


class CsvSource(FileSource):
    """Reads one window of a CSV export in bounded chunks."""

    def __init__(
        self,
        path: str,
        window: Window,
        *,
        delimiter: str = ",",
        duplicate_headers: Mapping[str, int] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(path, window, **options)
        if len(delimiter.encode("utf-8")) != 1 or delimiter in '"\r\n':
            raise SourceError(
                f"the CSV delimiter must be one ASCII character other than a quote or a line break, "
                f"got {delimiter!r}"
            )
        self.delimiter = delimiter
        self.duplicate_headers = dict(duplicate_headers or {})

    def _reader(self, handle: Any, *, escaped: bool = True, **kwargs: Any) -> Any:
        """pandas' reader with our rules. ``escaped=False`` (the pre-scan found the whole file valid
        UTF-8): the parser decodes in C, without the slower Python decoder ``surrogateescape``
        needs."""
        return pd.read_csv(
            handle,
            sep=self.delimiter,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            encoding="utf-8-sig",
            encoding_errors="surrogateescape" if escaped else "strict",
            on_bad_lines="warn",
            **kwargs,
        )

    @staticmethod
    def _check_skippable(url: str, scan: _Scan, record: int) -> None:
        """The parser skips a first record with extra fields by line number; with lone \\r line ends
        it takes the wrong line, or the record after the skipped one loses its first field."""
        if scan.lone_cr:
            raise SourceError(
                f"{url}: record {record} has more fields than the header and must be skipped, which "
                "pandas' CSV parser cannot do reliably with lone carriage return (\\r) line ends: the "
                "next values could move a column. The file is not read (nothing of it is sent; "
                "re-export it with \\n or \\r\\n line ends, or fix that record)"
            )

    def headers(self, url: str) -> list[str]:
        """The header row alone (checked for required columns before anything is sent); a repeated
        header is an error unless ``duplicate_headers`` chooses its occurrence."""
        return self._header(url).names

    def _header(self, url: str) -> _Header:
        """The header row, read with bounded memory: its names, where it ends, which columns to keep."""
        scan = _Scan(ord(self.delimiter), self.max_record_bytes)
        data = bytearray()
        start = 0  # where the header may start: after blank lines
        end: int | None = None  # where it ends (its line break, or the end of the file)
        for block in self.blocks(url, _HEADER_BLOCK):
            ends = scan.feed(block)
            data += block
            for stop in ends.tolist():
                if data[start:stop].strip(_BOM + b" \t\r\n"):
                    end = stop
                    break
                start = stop + 1
            if end is not None or len(data) - start > self.max_record_bytes:
                break
        else:
            scan.finish()
            if scan.inside:
                raise SourceError(f"{url}: unclosed quote in the header row: it never ends")
            end = len(data)
        if end is None or end - max(start, scan.bom) > self.max_record_bytes:
            raise SourceError(
                f"{url}: the header row is longer than max_record_bytes {self.max_record_bytes} "
                "(not a CSV export, or raise source.max_record_bytes)"
            )
        end += 1  # after its line break
        head = bytes(data[:end])
        if not head.strip(_BOM + b" \t\r\n"):
            raise SourceError(f"{url} is empty: it has no header row")
        try:
            names = [str(c) for c in self._reader(io.BytesIO(head), nrows=0).columns]
            raw = self._reader(io.BytesIO(head), header=None, nrows=1, na_filter=False).iloc[0].tolist()
        except pd.errors.EmptyDataError:
            raise SourceError(f"{url} is empty: it has no header row") from None
        keep, chosen = self._choose(url, [str(n) for n in raw], names)
        return _Header(names=chosen, end=end, width=len(names), keep=keep)

    def _choose(self, url: str, raw: list[str], names: list[str]) -> tuple[list[int] | None, list[str]]:
        """The columns to keep and their names when headers repeat (None: keep every column)."""
        seen: dict[str, list[int]] = {}
        for position, name in enumerate(raw):
            if name:  # empty headers are not merged by the parser ("Unnamed: 3")
                seen.setdefault(name, []).append(position)
        repeated = {name: places for name, places in seen.items() if len(places) > 1}
        if not repeated:
            return None, names
        unresolved = [name for name in repeated if name not in self.duplicate_headers]
        if unresolved:
            found = "; ".join(
                f"{name!r} at columns {', '.join(str(p + 1) for p in repeated[name][:-1])} and "
                f"{repeated[name][-1] + 1}"
                for name in unresolved
            )
            example = ", ".join(f"{name!r}: 1" for name in unresolved)
            raise SourceError(
                f"{url} has duplicate headers: {found}. The parser would rename the later ones "
                f"(and send them as properties): choose the occurrence to read with "
                f"source.duplicate_headers: {{{example}}} (1 is the first); the others are ignored"
            )
        dropped: set[int] = set()
        for name, places in repeated.items():
            occurrence = self.duplicate_headers[name]
            if occurrence > len(places):
                raise SourceError(
                    f"source.duplicate_headers: {name!r} occurrence {occurrence}, but {url} has "
                    f"{len(places)} columns named so"
                )
            dropped.update(p for n, p in enumerate(places, start=1) if n != occurrence)
        keep = [p for p in range(len(raw)) if p not in dropped]
        return keep, [raw[p] or names[p] for p in keep]  # unique once the others are left out

    def _prescan(self, url: str, header: _Header) -> _Scan:
        """Read the file through once: an unclosed quote or a damaged gzip fails it here, before any
        of it is sent; oversized and truncated records are found (to be left out)."""
        scan = _Scan(ord(self.delimiter), self.max_record_bytes, data_start=header.end, width=header.width)
        text = codecs.getincrementaldecoder("utf-8")()

        def feed(block: bytes) -> None:
            scan.feed(block)
            # ASCII, the common case, is valid UTF-8 unless a sequence cut by the last block is pending
            if not scan.escaped and (not block.isascii() or text.getstate()[0]):
                try:
                    text.decode(block)
                except UnicodeDecodeError:
                    scan.escaped = True

        self.read_through(url, feed)
        scan.finish()
        if not scan.escaped:
            try:
                text.decode(b"", final=True)  # a sequence cut at the end of the file
            except UnicodeDecodeError:
                scan.escaped = True
        if scan.shifted is not None:
            record, line = scan.shifted
            raise SourceError(
                f"{url}: record {record} (line {line}) starts with an empty field right after a line the "
                "parser skips (blank, or left out) that ends in a lone carriage return (\\r): pandas' CSV "
                "parser would move that record's values one column to the left, so the file is not read "
                "(nothing of it is sent; re-export it with \\n or \\r\\n line ends, or without blank lines)"
            )
        if scan.inside:
            record, line = scan.open_record()
            raise SourceError(
                f"{url}: unclosed quote: the quoted value that starts in record {record} (line {line}) "
                "never ends, so the rest of the file would be one value; the file is not read (nothing "
                "of it is sent; fix or re-export it)"
            )
        return scan

    def chunks(self, url: str) -> Iterator[Chunk]:
        """One file's rows in chunks of at most ``chunk_rows``, indexed by record number.

        Records with more fields than the header are counted as malformed (the parser reports them
        as warnings). The first data record is the exception: pandas would silently turn its extra
        fields into an index, so when that happens it is skipped on a second read and counted.
        Records the pre-scan left out (oversized, truncated) are malformed with their own message.
        """
        header = self._header(url)
        scan = self._prescan(url, header)
        try:
            yield from self._read(url, header, scan)
        except GZIP_ERRORS as exc:  # the file changed since it was checked
            raise gzip_error(url, exc) from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:  # not UTF-8 now: it was when checked
            raise SourceError(f"{url} cannot be parsed (did it change while read?): {exc}") from None

    def _read(self, url: str, header: _Header, scan: _Scan) -> Iterator[Chunk]:
        skipped_leading: list[int] = []
        while True:
            errors = "surrogateescape" if scan.escaped else "strict"
            handle = _LineStarts(_Without(self.open(url), scan.drops, scan.size), errors)
            with handle, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                reader = self._reader(
                    handle,
                    escaped=scan.escaped,
                    chunksize=self.chunk_rows,
                    skiprows=skipped_leading or None,
                )
                first = next(reader, None)
                if first is not None and not isinstance(first.index, pd.RangeIndex):
                    skipped_leading.append(len(skipped_leading) + 1)
                    if len(skipped_leading) > MAX_SKIPPED_LEADING:
                        raise SourceError(
                            f"{url}: the first {MAX_SKIPPED_LEADING} records all have extra fields"
                        )
                    self._check_skippable(url, scan, skipped_leading[-1])
                    continue
                bad = {r: f"expected {header.width} fields, saw more" for r in skipped_leading}
                bad.update(scan.malformed)
                cursor = 0
                for frame in itertools.chain([first] if first is not None else [], reader):
                    bad.update(_malformed_lines(caught))
                    caught.clear()
                    numbers = _record_numbers(cursor, len(frame), bad)
                    if header.keep is not None:
                        frame = frame.iloc[:, header.keep].set_axis(header.names, axis=1)
                    frame.index = pd.Index(numbers)
                    cursor = int(numbers[-1]) if len(numbers) else cursor
                    malformed = sorted((r, m) for r, m in bad.items() if r <= cursor)
                    for record, _ in malformed:
                        del bad[record]
                    yield Chunk(frame=frame, origin=url, malformed=malformed, escaped=scan.escaped)
                bad.update(_malformed_lines(caught))
                if bad:
                    yield Chunk(frame=pd.DataFrame(), origin=url, malformed=sorted(bad.items()))
            return


@dataclass(frozen=True)
class _Header:
    """A file's header: the frames' column names, the byte offset after it, its field count, and
    the column positions to keep (None: all) when a header repeats."""

    names: list[str]
    end: int
    width: int
    keep: list[int] | None


def _record_numbers(cursor: int, count: int, bad: dict[int, str]) -> np.ndarray:
    """Record numbers of the next ``count`` good records after ``cursor``, skipping bad ones."""
    ahead = [r for r in bad if r > cursor]
    candidates = np.arange(cursor + 1, cursor + 1 + count + len(ahead), dtype=np.int64)
    if ahead:
        candidates = candidates[~np.isin(candidates, ahead)]
    return candidates[:count]


def _malformed_lines(caught: list[warnings.WarningMessage]) -> dict[int, str]:
    """Record number (1-based, header excluded) -> the parser's message, from its warnings."""
    out: dict[int, str] = {}
    for warning in caught:
        for line in str(warning.message).splitlines():
            match = _BAD_LINE.search(line)
            if match:
                out[int(match.group(1)) - 1] = match.group(2)
    return out


class _Scan:
    """Where a CSV file's records end, as the parser will split them, from its decompressed bytes.

    Fed block by block (memory stays bounded whatever a record's length), with numpy. The parser's
    quoting rules: a quote opens a quoted value only where a field starts (after a delimiter, a
    line break or at the file's start; ``12" screen`` is text); inside one, ``""`` is a quote and a
    lone quote closes it. So a run of k quotes changes the state only when k is odd: where a field
    starts it toggles the state, elsewhere it closes a quoted value (or is text outside one).
    Record ends are ``\\n`` and ``\\r`` outside quotes; the parser numbers lines by them (``\\r\\n``
    once, blank lines included), and a record's number is its line's less one (the header's).
    """

    def __init__(
        self, delimiter: int, max_record: int, *, data_start: int | None = None, width: int = 0
    ) -> None:
        self.delimiter = delimiter
        self.max_record = max_record
        self.data_start = data_start if data_start is not None else 1 << 62  # records checked from
        self.width = width
        self.bom = 0
        self.size = 0  # bytes fed
        self.inside = False  # within a quoted value
        self._prev = _LF  # the byte before the next one (a virtual line break at the start)
        self._carry = b""  # a trailing run of quotes, held back (its parity kept) until the next byte
        self._last_end = -1  # offset of the last record end
        self._lines = 0  # record ends counted as the parser counts lines
        self._physical = 0  # every line break, quoted or not
        self._physical_at_end = 0
        self._tail_fields = 1  # fields of the record after the last end so far
        self._tail_blank = True
        self.drops: list[tuple[int, int]] = []  # byte ranges the parser must not see
        self.malformed: dict[int, str] = {}  # record number -> why it was left out
        self.escaped = False  # the file holds bytes that are not UTF-8 (kept as lone surrogates)
        # (record, line) of the first record pandas would shift (``_find_shifted``); whether a line
        # ends in a lone \r; and a \r that ended the last block: (record, line) after it, whether
        # that is data after a line the parser skips (the byte after it comes with the next block).
        self.shifted: tuple[int, int] | None = None
        self.lone_cr = False
        self._pending_cr: tuple[int, int, bool] | None = None

    def feed(self, data: bytes) -> np.ndarray:
        """Scan the next block; returns the offsets of the record ends in it."""
        if self.size == 0 and data.startswith(_BOM):  # the parser drops a BOM: a field starts after
            self.bom, data = len(_BOM), data[len(_BOM) :]
            self._last_end = self.bom - 1
            self.size = self.bom
        joined = self._carry + data if self._carry else data
        if self._pending_cr is not None and joined:
            record, line, skipped = self._pending_cr
            self._pending_cr = None
            self.lone_cr = self.lone_cr or joined[0] != _LF
            if joined[0] == self.delimiter and skipped and self.shifted is None:
                self.shifted = (record, line)
        kept = len(joined.rstrip(b'"'))  # a run of quotes at the end may go on in the next block
        base = self.size - len(self._carry)
        self.size += len(data)
        buf = np.frombuffer(joined, dtype=np.uint8, count=kept)
        ends = self._scan(buf, base, joined.find(b'"', 0, kept) >= 0, joined.find(b"\r", 0, kept) >= 0)
        run = len(joined) - kept
        self._carry = b'"' * (2 - run % 2) if run else b""
        return ends

    def finish(self) -> None:
        """The end of the file: the held-back quotes, then the last record (if no line break ends it)."""
        if self._carry:
            self._scan(np.frombuffer(self._carry, dtype=np.uint8), self.size - len(self._carry), True, False)
            self._carry = b""
        start = self._last_end + 1
        length = self.size - start
        if self.inside or length <= 0 or start < self.data_start or self._tail_blank:
            return
        record = self._lines  # its line is self._lines + 1
        if length > self.max_record:
            self._drop(record, start, self.size, length)
        else:  # cut short, or cut inside its last field: it cannot be told from a complete one
            self.drops.append((start, self.size))
            fields = self.tail_fields()
            shape = f"has {fields} of {self.width} fields and" if fields < self.width else "has"
            self.malformed[record] = (
                f"the last record {shape} no line break: the file may be incomplete (still being "
                "written?); it is left out (a complete file ends its last record with a line break)"
            )

    def tail_fields(self) -> int:
        """The fields of the record after the last line break, as the parser counts them (but for
        a classic-Mac lone \\r followed by the delimiter: the parser moves or drops that delimiter)."""
        return self._tail_fields

    def open_record(self) -> tuple[int, int]:
        """(record number, physical line) of the record an unclosed quote started in."""
        return self._lines, self._physical_at_end + 1

    def _blank(self, data: np.ndarray) -> bool:
        """Only blanks (the parser skips such a line): spaces, and tabs unless they delimit."""
        return bool(np.all(self._blanks(data)))

    def _blanks(self, data: np.ndarray) -> np.ndarray:
        """Which bytes are blanks: spaces and tabs, unless they delimit."""
        return ((data == _SPACE) & (self.delimiter != _SPACE)) | ((data == _TAB) & (self.delimiter != _TAB))

    def _drop(self, record: int, start: int, stop: int, length: int) -> None:
        self.drops.append((start, stop))
        self.malformed[record] = f"record of {length} bytes exceeds max_record_bytes {self.max_record}"

    def _find_shifted(
        self,
        buf: np.ndarray,
        base: int,
        ends: np.ndarray,
        starts: np.ndarray,
        counted: np.ndarray,
        breaks: np.ndarray,
        physical: np.ndarray,
    ) -> None:
        """After a line the parser skips (blank: empty or blanks; left out: ``drops``) ended by a
        lone \\r, pandas' C parser drops the empty first field of a record that starts with the
        delimiter and moves its values one column left (``,3`` is read as ``3,``), silently. Sets
        ``shifted`` for such a record, and ``lone_cr`` for any lone \\r line end (a first record
        with extra fields cannot be skipped then). ``ends``: the record ends in ``buf`` (at file offset
        ``base``); ``starts``: where each ending line starts in it (below 0: in an earlier block);
        ``counted``, ``breaks``, ``physical``: as ``_scan`` has them (to number the records)."""
        following = ends + 1
        in_block = following < buf.size
        after = np.full(ends.size, -1, dtype=np.int64)  # the byte after each end (-1: not here yet)
        after[in_block] = buf[following[in_block]]
        lone = (buf[ends] == _CR) & (after != _LF)
        self.lone_cr = self.lone_cr or bool((lone & in_block).any())
        lone &= ends + base >= self.data_start  # after the header
        candidates = np.flatnonzero(lone & ((after == self.delimiter) | ~in_block))
        if not candidates.size:
            return
        others = np.concatenate(([0], np.cumsum(~self._blanks(buf))))  # others[k]: bytes before k not blank
        firsts = np.maximum(starts[candidates], 0)
        skipped = (others[ends[candidates]] == others[firsts]) & (
            (starts[candidates] >= 0) | self._tail_blank
        )
        dropped = itertools.takewhile(lambda stop: stop >= base, (stop for _, stop in reversed(self.drops)))
        skipped |= np.isin(ends[candidates] + base, list(dropped))  # drops are in file order
        records = self._lines + np.cumsum(counted)[candidates]  # the number of the record after each
        lines = self._physical + np.cumsum(physical)[np.searchsorted(breaks, ends[candidates])]
        found = zip(candidates.tolist(), records.tolist(), lines.tolist(), skipped.tolist(), strict=True)
        for i, record, line, skip in found:
            if not in_block[i]:  # the last byte: the next block says what follows
                self._pending_cr = (record, line + 1, skip)
            elif skip:
                self.shifted = (record, line + 1)
                return

    def _scan(self, buf: np.ndarray, base: int, quoted: bool, crs: bool) -> np.ndarray:
        """Scan ``buf`` (file offset ``base``), which holds no trailing quote unless at the end;
        ``quoted`` and ``crs``: whether it holds a quote and a \\r (cheap to know, costly to look for)."""
        prev = self._prev
        quotes = np.flatnonzero(buf == _QUOTE) if quoted else np.zeros(0, dtype=np.intp)
        if quotes.size:
            first = np.flatnonzero(np.diff(quotes) != 1) + 1
            starts = np.concatenate(([0], first))
            lengths = np.diff(np.concatenate((starts, [quotes.size])))
            runs = quotes[starts[(lengths & 1) == 1]]  # runs of odd length: the others change nothing
            before = buf[np.maximum(runs - 1, 0)]
            before = np.where(runs > 0, before, prev)
            at_field = (before == self.delimiter) | (before == _LF) | (before == _CR)
            count = np.cumsum(at_field, dtype=np.int64) + int(self.inside)
            since = count - np.maximum.accumulate(np.where(at_field, 0, count))
            state = (since & 1).astype(bool)  # within quotes after each run
        else:
            runs = quotes
            state = np.zeros(0, dtype=bool)

        def inside_at(positions: np.ndarray) -> np.ndarray:
            if not runs.size:
                return np.full(positions.shape, self.inside)
            index = np.searchsorted(runs, positions) - 1
            return np.where(index >= 0, state[np.maximum(index, 0)], self.inside)

        breaks = np.flatnonzero((buf == _LF) | (buf == _CR) if crs else buf == _LF)
        if breaks.size:
            after_cr = np.where(breaks > 0, buf[np.maximum(breaks - 1, 0)], prev) == _CR
            physical = ~((buf[breaks] == _LF) & after_cr)  # \r\n is one line break
            outside = ~inside_at(breaks)
            ends = breaks[outside]
            counted = physical[outside]
        else:
            ends = breaks
        if ends.size:
            offsets = ends + base
            previous = np.concatenate(([self._last_end], offsets[:-1]))
            sizes = offsets - previous - 1
            over = np.flatnonzero((sizes > self.max_record) & (previous + 1 >= self.data_start))
            if over.size:
                lines_before = np.concatenate(([0], np.cumsum(counted)[:-1]))
                for i in over.tolist():
                    self._drop(
                        int(self._lines + lines_before[i]),
                        int(previous[i] + 1),
                        int(offsets[i]),
                        int(sizes[i]),
                    )
            if crs and self.shifted is None:
                self._find_shifted(buf, base, ends, previous + 1 - base, counted, breaks, physical)
            last = int(np.searchsorted(breaks, ends[-1]))
            self._physical_at_end = self._physical + int(np.count_nonzero(physical[: last + 1]))
            self._lines += int(np.count_nonzero(counted))
            self._last_end = int(offsets[-1])
            tail = int(ends[-1]) + 1
        else:
            tail = 0
        if breaks.size:
            self._physical += int(np.count_nonzero(physical))
        # the record after the last end: its fields (delimiters outside quotes) and whether it is blank
        rest = buf[tail:]
        delimiters = np.flatnonzero(rest == self.delimiter) + tail
        fields = int(np.count_nonzero(~inside_at(delimiters)))
        if ends.size:
            self._tail_fields, self._tail_blank = 1 + fields, self._blank(rest)
        else:
            self._tail_fields += fields
            self._tail_blank = self._tail_blank and self._blank(rest)
        if state.size:
            self.inside = bool(state[-1])
        if buf.size:
            self._prev = int(buf[-1])
        return ends + base


class _LineStarts(io.TextIOBase):
    """A file's text for the parser, decoded here, each read ending where a line starts.

    pandas' C parser loses the blanks (spaces, tabs) that start a record when its read buffer ends
    among them (pandas-dev/pandas#34085): ``" x"`` would be read as ``"x"``, silently. Ending every
    read at a line start (after ``\n``, or after a ``\r`` not followed by ``\n``) keeps a record's
    leading blanks in one buffer. A line longer than a read is cut at the read's size, or after its
    first non-blank when its leading blanks are longer still.
    """

    _BLOCK, _MAX_BLOCK = 1 << 16, 1 << 20  # bytes decoded at a time: at least, at most

    def __init__(self, raw: Any, errors: str) -> None:
        self._raw = raw
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors)
        self._text = ""  # decoded, not yet handed to the parser
        self._ended = False

    def readable(self) -> bool:
        return True

    def _fill(self, size: int) -> None:
        """Decode until more than ``size`` characters wait (one more: what follows a ``\r``)."""
        parts = [self._text]
        have = len(self._text)
        while have <= size and not self._ended:
            block = self._raw.read(min(max(self._BLOCK, size - have + 1), self._MAX_BLOCK))
            text = self._decoder.decode(block, final=not block)
            self._ended = not block
            parts.append(text)
            have += len(text)
        self._text = "".join(parts)

    def read(self, size: int | None = -1) -> str:
        if size is None or size < 0:
            self._fill(1 << 62)
            text, self._text = self._text, ""
            return text
        self._fill(size)
        text = self._text
        cut = len(text) if len(text) <= size else self._cut(text, size)
        while cut >= len(text) and not self._ended:  # a record's blanks reach the end of what waits
            self._fill(len(text))
            text = self._text
            cut = len(text) if len(text) <= size else self._cut(text, size)
        self._text = text[cut:]
        return text[:cut]

    @staticmethod
    def _cut(text: str, size: int) -> int:
        """Where a read of at most about ``size`` characters of ``text`` (longer) may end."""
        lf = text.rfind("\n", 0, size)
        cr = text.rfind("\r", 0, size)
        cut = max(lf + 1, cr + 1 if cr >= 0 and text[cr + 1] != "\n" else 0)
        if cut:
            return cut
        # no line starts here: a long line, which began this read; never end among its leading blanks
        return max(size, len(text) - len(text.lstrip(" \t")) + 1)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _Without(io.RawIOBase):
    """A file's bytes less some ranges, up to ``size`` (what the pre-scan saw): left-out records
    leave their line break behind, an empty line the parser skips but counts, so every later
    record keeps its number."""

    def __init__(self, handle: Any, drops: list[tuple[int, int]], size: int) -> None:
        self._handle = handle
        self._drops = sorted(drops)
        self._next = 0  # the next range to leave out
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._next < len(self._drops) and self._position >= self._drops[self._next][0]:
            stop = self._drops[self._next][1]
            self._next += 1
            while self._position < stop:  # read and forget, in bounded blocks
                skipped = self._handle.read(min(stop - self._position, 1 << 20))
                if not skipped:
                    return 0
                self._position += len(skipped)
        limit = min(len(buffer), self._size - self._position)
        if self._next < len(self._drops):
            limit = min(limit, self._drops[self._next][0] - self._position)
        if limit <= 0:
            return 0
        data = self._handle.read(limit)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        self._handle.close()
        super().close()
