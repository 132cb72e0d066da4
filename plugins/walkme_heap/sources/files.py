"""CSV exports: local paths or any fsspec URL, per-day path templates and globs, plain or gzip.

Paths may hold ``{date:%Y-%m-%d}`` (one path per UTC day of the window), ``{start:...}`` and
``{end:...}``, then glob characters. Files are streamed in ``chunk_rows`` chunks with every value
read as text (ids keep their leading zeros), UTF-8 with or without a BOM, quoted newlines allowed.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from fsspec.core import url_to_fs
from walkme_heap.sources.base import Chunk, SourceError, SourceMissingError
from walkme_heap.window import Window

FsFactory = Callable[[str], tuple[Any, str]]  # url -> (filesystem, path within it)
_GLOB = re.compile(r"[*?\[]")
_BAD_LINE = re.compile(r"Skipping line (\d+): (.*)")


def expand_paths(template: str, window: Window) -> list[str]:
    """The window's paths from a template, one per day when it mentions ``{date}``; deduplicated."""
    paths: list[str] = []
    days = list(window.days()) if "{date" in template else [window.start.date()]
    for day in days:
        try:
            path = template.format(date=day, start=window.start, end=window.end)
        except (KeyError, IndexError, ValueError) as exc:
            raise SourceError(
                f"path template {template!r} is not valid: {exc}; use {{date:%Y-%m-%d}}, "
                "{start:...} or {end:...}"
            ) from None
        if path not in paths:
            paths.append(path)
    return paths


def _protocol(url: str) -> str:
    return url.split("://", 1)[0] + "://" if "://" in url else ""


class CsvSource:
    """Reads one window of a CSV export in bounded chunks."""

    def __init__(
        self,
        path: str,
        window: Window,
        *,
        chunk_rows: int = 50_000,
        on_missing: str = "fail",
        delimiter: str = ",",
        fs_factory: FsFactory | None = None,
    ) -> None:
        self.template = path
        self.window = window
        self.chunk_rows = chunk_rows
        self.on_missing = on_missing
        self.delimiter = delimiter
        self.fs_factory = fs_factory or url_to_fs

    def origins(self) -> list[str]:
        """Every file of the window, in a stable order; a missing one fails or is skipped."""
        found: list[str] = []
        for url in expand_paths(self.template, self.window):
            fs, path = self.fs_factory(url)
            if _GLOB.search(path):
                matches = sorted(fs.glob(path))
                prefix = _protocol(url)
                found.extend(m if "://" in m else prefix + m if prefix else m for m in matches)
                if matches:
                    continue
            elif fs.exists(path):
                found.append(url)
                continue
            message = f"no file for {self.window.label} at {url}"
            if self.on_missing == "fail":
                raise SourceMissingError(
                    message + " (set source.on_missing: skip to treat a missing day as empty)"
                )
        return found

    def _open(self, url: str) -> Any:
        fs, path = self.fs_factory(url)
        compression = "gzip" if path.endswith(".gz") else None
        return fs.open(path, mode="rb", compression=compression)

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
        with self._open(url) as handle:
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
            with self._open(url) as handle, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                reader = self._reader(handle, chunksize=self.chunk_rows, skiprows=skipped_leading or None)
                first = next(reader, None)
                if first is not None and not isinstance(first.index, pd.RangeIndex):
                    skipped_leading.append(len(skipped_leading) + 1)
                    if len(skipped_leading) > 1000:
                        raise SourceError(f"{url}: the first 1000 records all have extra fields")
                    continue
                bad = {r: f"expected {self._width(url)} fields, saw more" for r in skipped_leading}
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

    def _width(self, url: str) -> int:
        return len(self.headers(url))


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
