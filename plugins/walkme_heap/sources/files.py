"""What file sources share: per-day path templates, globs, fsspec URLs, gzip, a missing day.

Paths may hold ``{date:%Y-%m-%d}`` (one path per UTC day of the window), ``{start:...}`` and
``{end:...}``, then glob characters; matches are read in sorted order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fsspec.core import url_to_fs

from walkme_heap.sources.base import DEFAULT_CHUNK_ROWS, SourceError, SourceMissingError
from walkme_heap.window import Window

FsFactory = Callable[[str], tuple[Any, str]]  # url -> (filesystem, path within it)
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

    def origins(self) -> list[str]:
        """Every file of the window, in a stable order; a missing one fails or is skipped."""
        found: list[str] = []
        for url in expand_paths(self.template, self.window):
            fs, path = self.fs_factory(url)
            if _GLOB.search(path):
                matches = sorted(fs.glob(path))
                prefix = _protocol(url)
                found.extend(m if "://" in m or not prefix else prefix + m for m in matches)
                if matches:
                    continue
            elif fs.exists(path):
                found.append(url)
                continue
            if self.on_missing == "fail":
                raise SourceMissingError(
                    f"no file for {self.window.label} at {url} "
                    "(set source.on_missing: skip to treat a missing day as empty)"
                )
        return found

    def open(self, url: str) -> Any:
        """A binary file object, decompressed when the name ends in ``.gz``."""
        fs, path = self.fs_factory(url)
        compression = "gzip" if path.endswith(".gz") else None
        return fs.open(path, mode="rb", compression=compression)
