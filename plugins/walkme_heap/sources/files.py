"""What file sources share: per-day path templates, globs, fsspec URLs, gzip, a missing day.

Paths may hold ``{date:%Y-%m-%d}`` (one path per UTC day of the window), ``{start:...}`` and
``{end:...}``, then glob characters; matches are read in sorted order.
"""

from __future__ import annotations

import gzip
import io
import re
from typing import Any

from fsspec.core import url_to_fs

from walkme_heap.connections import FsFactory
from walkme_heap.sources.base import DEFAULT_CHUNK_ROWS, SourceError, SourceMissingError
from walkme_heap.window import Window

_GLOB = re.compile(r"[*?\[]")


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
    ) -> None:
        self.template = path
        self.window = window
        self.chunk_rows = chunk_rows
        self.on_missing = on_missing
        self.fs_factory = fs_factory or url_to_fs
        self._bytes_read = 0

    def origins(self) -> list[str]:
        """Every file of the window, in a stable order; a missing one fails or is skipped. A
        zero-byte file counts as missing (still being written, or a failed export); a file with
        a header alone is a day without rows."""
        found: list[str] = []
        total = 0  # bytes of the window's files (progress)
        for url in expand_paths(self.template, self.window):
            fs, path = self.fs_factory(url)
            if _GLOB.search(path):
                matches = sorted(fs.glob(path))
                prefix = _protocol(url)
                urls = [m if "://" in m or not prefix else prefix + m for m in matches]
            else:
                urls = [url] if fs.exists(path) else []
            sizes = {u: self._size(u) for u in urls}
            present = [u for u in urls if sizes[u]]
            total += sum(sizes.values())
            found.extend(present)
            if present:
                continue
            if self.on_missing == "fail":
                empty = f" ({len(urls)} empty file(s): still being written?)" if urls else ""
                raise SourceMissingError(
                    f"no file for {self.window.label} at {url}{empty} "
                    "(set source.on_missing: skip to treat a missing day as empty)"
                )
        self._total_bytes = total
        return found

    def _size(self, url: str) -> int:
        fs, path = self.fs_factory(url)
        return int(fs.size(path) or 0)

    def open(self, url: str) -> Any:
        """A binary file object, decompressed when the name ends in ``.gz``; bytes are counted."""
        fs, path = self.fs_factory(url)
        raw = _Counting(fs.open(path, mode="rb"), self)
        return gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw

    def progress(self) -> float | None:
        """Share of the window's bytes read so far (compressed bytes for .gz files)."""
        total = getattr(self, "_total_bytes", 0)
        return min(1.0, self._bytes_read / total) if total else None


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
