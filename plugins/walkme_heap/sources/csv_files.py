"""CSV exports, streamed in ``chunk_rows`` chunks.

Every value is read as text (ids keep their leading zeros); UTF-8 with or without a BOM; quoted
newlines allowed; records with too many fields are counted as malformed, never dropped silently.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from walkme_heap.sources.base import Chunk, SourceError
from walkme_heap.sources.files import FileSource
from walkme_heap.window import Window

_BAD_LINE = re.compile(r"Skipping line (\d+): (.*)")


class CsvSource(FileSource):
    """Reads one window of a CSV export in bounded chunks."""

    def __init__(self, path: str, window: Window, *, delimiter: str = ",", **options: Any) -> None:
        super().__init__(path, window, **options)
        self.delimiter = delimiter

    def _reader(self, handle: Any, **kwargs: Any) -> Any:
        return pd.read_csv(
            handle,
            sep=self.delimiter,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            encoding="utf-8-sig",
            encoding_errors="replace",
            on_bad_lines="warn",
            **kwargs,
        )

    def headers(self, url: str) -> list[str]:
        """The header row alone (checked for required columns before anything is sent)."""
        with self.open(url) as handle:
            try:
                return [str(c) for c in self._reader(handle, nrows=0).columns]
            except pd.errors.EmptyDataError:
                raise SourceError(f"{url} is empty: it has no header row") from None

    def chunks(self, url: str) -> Iterator[Chunk]:
        """One file's rows in chunks of at most ``chunk_rows``, indexed by record number.

        Records with more fields than the header are counted as malformed (the parser reports them
        as warnings). The first data record is the exception: pandas would silently turn its extra
        fields into an index, so when that happens it is skipped on a second read and counted.
        """
        skipped_leading: list[int] = []
        while True:
            with self.open(url) as handle, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                reader = self._reader(handle, chunksize=self.chunk_rows, skiprows=skipped_leading or None)
                first = next(reader, None)
                if first is not None and not isinstance(first.index, pd.RangeIndex):
                    skipped_leading.append(len(skipped_leading) + 1)
                    if len(skipped_leading) > 1000:
                        raise SourceError(f"{url}: the first 1000 records all have extra fields")
                    continue
                width = len(self.headers(url)) if skipped_leading else 0
                bad = {r: f"expected {width} fields, saw more" for r in skipped_leading}
                cursor = 0
                for frame in itertools.chain([first] if first is not None else [], reader):
                    bad.update(_malformed_lines(caught))
                    caught.clear()
                    numbers = _record_numbers(cursor, len(frame), bad)
                    frame.index = pd.Index(numbers)
                    cursor = int(numbers[-1]) if len(numbers) else cursor
                    malformed = sorted((r, m) for r, m in bad.items() if r <= cursor)
                    for record, _ in malformed:
                        del bad[record]
                    yield Chunk(frame=frame, origin=url, malformed=malformed)
                bad.update(_malformed_lines(caught))
                if bad:
                    yield Chunk(frame=pd.DataFrame(), origin=url, malformed=sorted(bad.items()))
            return


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
