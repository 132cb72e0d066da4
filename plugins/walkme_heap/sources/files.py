"""What file sources share: per-day path templates, globs, fsspec URLs, gzip, a missing day.

Paths may hold ``{date:%Y-%m-%d}`` (one path per UTC day of the window), ``{start:...}`` and
``{end:...}``, then glob characters; matches are read in sorted order.

A truncated or corrupt ``.gz`` file is a ``SourceError`` naming the file, found by reading it through
(``read_through``) before anything of it is sent. ``max_record_bytes`` bounds one record (a line, or
a CSV record with quoted line breaks): a longer one is reported as malformed, never held in memory.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

from fsspec.core import url_to_fs

from walkme_heap.connections import FsFactory
from walkme_heap.sources.base import DEFAULT_CHUNK_ROWS, SourceError, SourceMissingError
from walkme_heap.window import Window

_GLOB = re.compile(r"[*?\[]")


def has_glob(pattern: str) -> bool:
    """Whether ``pattern`` holds glob characters (``*``, ``?``, ``[``), for paths and headers alike."""
    return _GLOB.search(pattern) is not None


DEFAULT_MAX_RECORD_BYTES = 1_048_576  # one record (1 MiB); a longer one is malformed, not read whole
BLOCK_BYTES = 1 << 20  # decompressed bytes a block when a file is read through (bounds memory)
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def expand_paths(template: str, window: Window) -> list[str]:
    """The window's paths from a template, one per day when it mentions ``{date}``; deduplicated."""
    return [path for path, _ in expand_windows(template, window)]


def expand_windows(template: str, window: Window) -> list[tuple[str, Window]]:
    """Each path of the window with the part of the window it is for: its day (within the window)
    when the template mentions ``{date}``, else the whole window."""
    paths: dict[str, Window] = {}
    by_day = "{date" in template
    for day in window.days() if by_day else [window.start.date()]:
        try:
            path = template.format(date=day, start=window.start, end=window.end)
        except (KeyError, IndexError, ValueError) as exc:
            raise SourceError(
                f"path template {template!r} is not valid: {exc}; use {{date:%Y-%m-%d}}, "
                "{start:...} or {end:...}"
            ) from None
        part = window
        if by_day:
            start = datetime.combine(day, time.min, UTC)
            part = Window(max(start, window.start), min(start + timedelta(days=1), window.end))
        if path in paths:  # a template that names one path for several days
            part = Window(min(paths[path].start, part.start), max(paths[path].end, part.end))
        paths[path] = part
    return list(paths.items())


def _protocol(url: str) -> str:
    return url.split("://", 1)[0] + "://" if "://" in url else ""


class FileSource:
    """The file set of one window; subclasses read one format."""

    def __init__(
        self,
        path: str,
        window: Window,
        *,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        on_missing: str = "fail",
        fs_factory: FsFactory | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.template = path
        self.window = window
        self.chunk_rows = chunk_rows
        self.on_missing = on_missing
        self.fs_factory = fs_factory or url_to_fs
        self.max_record_bytes = max_record_bytes
        self.missing: list[str] = []  # days without a usable file, skipped under on_missing="skip"
        self.missing_windows: list[tuple[str, Window]] = []  # the same, with the window each is for
        # Files earlier runs skipped as missing, to look for again (``recheck``); those found are
        # read for their own window (``origin_windows``) and listed in ``recovered``.
        self.rechecks: list[tuple[str, Window]] = []
        self.recovered: list[tuple[str, Window]] = []
        self.origin_windows: dict[str, Window] = {}
        self._rechecked: dict[str, str] = {}
        self.found: list[str] = []  # what ``origins`` last listed (the run's lineage reports them)
        self._bytes_read = 0

    def recheck(self, files: list[tuple[str, Window]]) -> None:
        """Look for these files again (each skipped as missing by an earlier run, for its window):
        ``origins`` adds those that now exist, each read for the windows it was missed for (one
        path missed by several windows, e.g. a monthly file, is read once for all of them)."""
        self.rechecks = list(files)

    def origins(self) -> list[str]:
        """Every file of the window, in a stable order; a missing one fails or is skipped. A
        zero-byte file counts as missing (still being written, or a failed export); a file with
        a header alone is a day without rows. The skipped days' paths are kept in ``missing`` (a
        run that skipped some is incomplete). Then the files of ``recheck`` that now exist."""
        found: list[str] = []
        self.missing, self.missing_windows, self.recovered, self.origin_windows = [], [], [], {}
        self._rechecked: dict[str, str] = {}  # a re-checked file found -> the path it was missed as
        total = 0  # bytes of the window's files (progress)
        own = expand_windows(self.template, self.window)
        for url, part in own:
            present, named, size = self._present(url)
            total += size
            found.extend(present)
            if present:
                continue
            if self.on_missing in ("fail", "wait"):  # "wait": the DAG's sensor waited; now it must be there
                empty = f" ({named} empty file(s): still being written?)" if named else ""
                raise SourceMissingError(
                    f"no file for {self.window.label} at {url}{empty} "
                    "(set source.on_missing: skip to treat a missing day as empty)"
                )
            self.missing.append(url)
            self.missing_windows.append((url, part))
        own_paths = {url for url, _ in own}
        for url, part in self.rechecks:
            if url in own_paths:  # this run's own file: found above, or missing again
                if url not in self.missing:
                    self.recovered.append((url, part))
                continue
            present, _, _ = self._present(url)
            if not present:
                continue
            self.recovered.append((url, part))
            for match in present:
                if match in self.origin_windows:  # missed by several windows: read for all of them
                    known = self.origin_windows[match]
                    merged = Window(min(known.start, part.start), max(known.end, part.end))
                    self.origin_windows[match] = merged
                elif match not in found:
                    total += self._size(match)
                    self.origin_windows[match] = part
                    self._rechecked[match] = url
                    found.append(match)
        self._total_bytes = total
        self.found = found
        return found

    def unread(self, match: str) -> None:
        """A re-checked file that ``origins`` listed will not be read (it cannot be): its path
        stays missing for later runs."""
        url = self._rechecked.pop(match, None)
        self.origin_windows.pop(match, None)
        self.found = [f for f in self.found if f != match]
        self.recovered = [(u, part) for u, part in self.recovered if u != url]

    def _present(self, url: str) -> tuple[list[str], int, int]:
        """The usable (non-empty) files a path or glob names now, how many it names, their bytes."""
        fs, path = self.fs_factory(url)
        if has_glob(path):
            matches = sorted(fs.glob(path))
            prefix = _protocol(url)
            urls = [m if "://" in m or not prefix else prefix + m for m in matches]
        else:
            urls = [url] if fs.exists(path) else []
        sizes = {u: self._size(u) for u in urls}
        return [u for u in urls if sizes[u]], len(urls), sum(sizes.values())

    def _size(self, url: str) -> int:
        fs, path = self.fs_factory(url)
        return int(fs.size(path) or 0)

    def open(self, url: str, *, counted: bool = True) -> Any:
        """A binary file object, decompressed when the name ends in ``.gz``; bytes are counted for
        progress unless ``counted`` is false (a check reading the file before its rows are read)."""
        fs, path = self.fs_factory(url)
        handle = fs.open(path, mode="rb")
        raw = _Counting(handle, self) if counted else handle
        return gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw

    def blocks(self, url: str, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
        """The file's decompressed bytes in blocks of ``block_bytes`` (the last one shorter), not
        counted for progress. A truncated or corrupt gzip stream is a ``SourceError`` naming the file."""
        with self.open(url, counted=False) as handle:
            while True:
                try:
                    block = _read_full(handle, block_bytes)
                except GZIP_ERRORS as exc:
                    raise gzip_error(url, exc) from None
                if not block:
                    return
                yield block

    def read_through(self, url: str, on_block: Callable[[bytes], None] | None = None) -> None:
        """Read the whole file (decompressed, in blocks, bounded memory), handing each block to
        ``on_block``; raises ``SourceError`` naming the file when its gzip stream is truncated or
        corrupt, so a caller can check a file before the first row of it is sent."""
        for block in self.blocks(url):
            if on_block is not None:
                on_block(block)

    def progress(self) -> float | None:
        """Share of the window's bytes read so far (compressed bytes for .gz files)."""
        total = getattr(self, "_total_bytes", 0)
        return min(1.0, self._bytes_read / total) if total else None


def gzip_error(url: str, exc: BaseException) -> SourceError:
    """The error of a gzip file that cannot be decompressed to its end. A truncated one (its end
    missing) may still be being written: like a missing file, the task is retried; a corrupt one
    fails it."""
    if isinstance(exc, EOFError):
        return SourceMissingError(
            f"{url} is truncated ({type(exc).__name__}: {exc}): the gzip file ends early (still being "
            "written, or a failed copy?); nothing of it was sent"
        )
    return SourceError(
        f"{url} cannot be decompressed ({type(exc).__name__}: {exc}): the gzip file is corrupt "
        "(a failed copy?); nothing of it was sent"
    )


def _read_full(handle: Any, size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at the end (a raw stream may return short reads)."""
    data = handle.read(size)
    if not data or len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = handle.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class _Counting(io.RawIOBase):
    """Counts the bytes read through it (progress of a file source)."""

    def __init__(self, handle: Any, owner: FileSource) -> None:
        self._handle = handle
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._handle.read(len(buffer))
        buffer[: len(data)] = data
        self._owner._bytes_read += len(data)
        return len(data)

    def close(self) -> None:
        self._handle.close()
        super().close()
