"""Dead letters: every row that will not reach Heap, with its reason, per pipeline and window.

One JSON Lines file per pipeline and window (``{location}/{pipeline}/{window label}.jsonl``), local
or any fsspec URL. Records are streamed to a local temporary file during the run and published at
the end, replacing what an earlier run of the same window left: a re-run's file is the truth for
that window. Publishing copies to a temporary name beside the file, then renames it over the file,
so a copy that fails midway (a crash, a full disk) leaves the previous complete file. Each record:
origin, row (record number), outcome (invalid / rejected), reason, message, attempts, the source
row's values, and the payload when one was built. The files hold identities (personal data): they
are created readable by their owner only (0600, where the filesystem has modes), and ``check``
tells before a run sends anything whether the location can be written.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import suppress
from typing import Any

import orjson
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from walkme_heap.connections import FsFactory


def _json_value(value: Any) -> Any:
    """JSON-friendly source values: NaN/NaT become null, timestamps become ISO text."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "isoformat"):
        try:
            return value.isoformat()
        except ValueError:  # NaT
            return None
    if isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return str(value)


class DeadLettersUnwritable(OSError):
    """The dead-letter location cannot be written (found before anything is sent)."""


class DeadLetters:
    """Collects one window's dead letters; ``commit`` publishes them."""

    def __init__(self, location: str, pipeline: str, label: str, fs_factory: FsFactory | None = None) -> None:
        self.url = f"{location.rstrip('/')}/{pipeline}/{label}.jsonl"
        self.fs_factory = fs_factory or url_to_fs
        handle, self._temp = tempfile.mkstemp(prefix="walkme-heap-dead-letters-", suffix=".jsonl")
        self._file = os.fdopen(handle, "wb")
        self.count = 0

    def add(
        self,
        *,
        origin: str,
        row: int | None,
        outcome: str,
        reason: str,
        message: str = "",
        source: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
        attempts: int = 0,
    ) -> None:
        record = {
            "origin": origin,
            "row": row,
            "outcome": outcome,
            "reason": reason,
            "message": message,
            "attempts": attempts,
            "source": {str(k): _json_value(v) for k, v in (source or {}).items()},
            "payload": payload,
        }
        self._file.write(orjson.dumps(record, default=str) + b"\n")
        self.count += 1

    def check(self) -> None:
        """Raise ``DeadLettersUnwritable`` unless a file can be written where they go (a probe,
        removed at once): a run must not send a whole day and then lose its dead letters."""
        fs, path = self.fs_factory(self.url)
        probe = f"{path.rsplit('/', 1)[0]}/.walkme-heap-probe-{uuid.uuid4().hex}"
        try:
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            fs.pipe_file(probe, b"")
            fs.rm_file(probe)
        except Exception as exc:
            raise DeadLettersUnwritable(
                f"the dead letters' location {self.url} cannot be written ({type(exc).__name__}: {exc})"
            ) from exc

    def commit(self) -> str:
        """Publish the file (replacing an earlier one, never leaving a partial one); return its URL."""
        self._file.close()
        fs, path = self.fs_factory(self.url)
        parent = path.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        partial = f"{parent}/.{path.rsplit('/', 1)[1]}.partial-{uuid.uuid4().hex}"
        try:
            fs.put_file(self._temp, partial)
            if isinstance(fs, LocalFileSystem):  # owner only, on disk before it replaces the old one
                os.chmod(partial, 0o600)
                with open(partial, "rb") as handle:
                    os.fsync(handle.fileno())
            fs.mv(partial, path)
        except BaseException:
            with suppress(Exception):
                fs.rm_file(partial)
            raise
        os.unlink(self._temp)
        return self.url

    def discard(self) -> None:
        """Drop what was collected (a dry run, or a run that failed before finishing)."""
        if not self._file.closed:
            self._file.close()
        if os.path.exists(self._temp):
            os.unlink(self._temp)
