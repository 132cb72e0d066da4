"""Dead letters: every row that will not reach Heap, with its reason, per pipeline and window.

JSON Lines files under ``{location}/{pipeline}/``, local or any fsspec URL; ``{label}`` is the
window's label (``2024-03-10``), with the shard's for one shard of it (``2024-03-10.shard-1-of-4``).
Records are streamed to a temporary file in the pipeline's working folder (``home``) during the run
and published at the end, under a name that depends on where they go:

- a local filesystem: ``{label}.jsonl``, replacing what an earlier run of the window left (a re-run's
  file is the truth for that window). Publishing copies to a hidden name beside it
  (``.{label}.jsonl.partial-<uuid>``), on disk (fsync) before it is renamed over the file, so a copy
  that fails midway (a crash, a full disk) leaves the previous complete file.
- anything else (object stores): there a rename is a copy and a delete, not atomic, so each run
  publishes a new version, ``{label}.{UTC time, YYYYMMDDTHHMMSS.ffffffZ}-{8 hex}.jsonl``, and no earlier
  one is overwritten or deleted. The names sort by time: a window's newest version is the last.
  It is also copied to a hidden name first, so the version's name never holds part of a file.

A partial run, one that did not read the whole window (a trial run's row limit, a day's file that
``on_missing: skip`` skipped), publishes under ``{location}/{pipeline}/partial/`` by the same rules, so it
never replaces the dead letters of a complete run. ``commit`` returns the URL it wrote: the run
record and the summary keep it, and the report links the newest complete one of each window.

Each record: origin, row (record number), outcome (invalid / rejected), reason, message, attempts,
the source row's values, and the payload when one was built. No value stops a record from being
written: text with invalid UTF-8 bytes (kept by ``surrogateescape`` decoding) shows them as ``\\xff``,
an integer JSON readers may not hold exactly (beyond 2^53 - 1) is written as its decimal text, control
characters are JSON escapes, and nesting deeper than ``MAX_DEPTH`` is written as text. The files
hold identities (personal data): they are created readable by their owner only (0600, where the
filesystem has modes), and ``check`` tells before a run sends anything whether the location can be
written.
"""

from __future__ import annotations

import os
import re
import uuid
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from walkme_heap.connections import FsFactory
from walkme_heap.home import default_work_dir, release_work_file, work_file

PARTIAL = "partial"  # the folder of partial runs' dead letters, beside the complete ones
MAX_DEPTH = 64  # nesting levels of a value kept as JSON; deeper parts are written as their text
_SURROGATES = re.compile("[\ud800-\udfff]")
_INT_RANGE = range(-(2**53) + 1, 2**53)  # integers every JSON reader (jq, JavaScript) holds exactly


def _surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # an invalid byte surrogateescape kept
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"  # any other lone surrogate


def _text(value: str) -> str:
    """Text UTF-8 can hold: lone surrogates (invalid bytes kept by surrogateescape) become visible
    escapes, ``\\xff`` (or ``\\ud800`` for one that is no byte)."""
    return value if value.isascii() else _SURROGATES.sub(_surrogate, value)


def _as_text(value: Any) -> str:
    try:
        return _text(str(value))
    except Exception as exc:  # a value whose text cannot be made still leaves its dead letter
        return f"<{type(value).__name__}: not shown ({type(exc).__name__})>"


def _json_value(value: Any, depth: int = 0) -> Any:
    """A value as JSON can hold it exactly: NaN/NaT become null, timestamps ISO text, text valid
    UTF-8, integers beyond 2^53 - 1 their decimal text, deep nesting text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int):
        if value in _INT_RANGE:
            return int(value)
        try:
            return str(int(value))
        except ValueError:  # over Python's digit limit for decimal text (4,300 digits)
            return hex(value)
    if isinstance(value, float):
        return None if value != value else float(value)
    if isinstance(value, (dict, list, tuple)):
        if depth >= MAX_DEPTH:
            return _as_text(value)
        if isinstance(value, dict):
            return {_as_text(k): _json_value(v, depth + 1) for k, v in value.items()}
        return [_json_value(v, depth + 1) for v in value]
    if hasattr(value, "isoformat"):
        try:
            return _as_text(value.isoformat())
        except ValueError:  # NaT
            return None
    return _as_text(value)


def _version() -> str:
    """A new version's name part: UTC time to the microsecond, then 8 random hex digits."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:8]}"


def is_partial(url: str, pipeline: str) -> bool:
    """Whether a URL ``commit`` returned is a partial run's (under ``{pipeline}/partial/``)."""
    parts = url.rstrip("/").split("/")
    return len(parts) >= 3 and parts[-2] == PARTIAL and parts[-3] == pipeline


class DeadLettersUnwritable(OSError):
    """The dead-letter location cannot be written (found before anything is sent)."""


class DeadLetters:
    """Collects one window's dead letters; ``commit`` publishes them.

    :param work_dir: the working folder of the temporary file; default the pipeline's
        (``home.default_work_dir``).
    """

    def __init__(
        self,
        location: str,
        pipeline: str,
        label: str,
        fs_factory: FsFactory | None = None,
        work_dir: str | Path | None = None,
    ) -> None:
        self.folder = f"{location.rstrip('/')}/{pipeline}"
        self.label = label
        self.url = f"{self.folder}/{label}.jsonl"  # the file's name on a local filesystem
        self.fs_factory = fs_factory or url_to_fs
        folder = work_dir if work_dir is not None else default_work_dir(pipeline)
        self._lock, self._temp = work_file(folder, "dead-letters", ".jsonl")  # held until released
        self._file = os.fdopen(os.dup(self._lock), "wb")
        self._released = False
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
            "origin": _json_value(origin),
            "row": _json_value(row),
            "outcome": outcome,
            "reason": _json_value(reason),
            "message": _json_value(message),
            "attempts": attempts,
            "source": _json_value(source or {}),
            "payload": _json_value(payload),
        }
        self._file.write(orjson.dumps(record) + b"\n")
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
                f"the dead letters' location {self.folder} cannot be written ({type(exc).__name__}: {exc})"
            ) from exc

    def commit(self, partial: bool = False) -> str:
        """Publish the file (never leaving part of one under its name) and return its URL: on a
        local filesystem replacing the window's earlier one, elsewhere as a new version. A
        ``partial`` run's go to the ``partial/`` folder, beside the complete ones."""
        self._file.close()
        folder = f"{self.folder}/{PARTIAL}" if partial else self.folder
        fs, path = self.fs_factory(f"{folder}/{self.label}.jsonl")
        local = isinstance(fs, LocalFileSystem)
        name = f"{self.label}.jsonl" if local else f"{self.label}.{_version()}.jsonl"
        parent = path.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        copy = f"{parent}/.{name}.partial-{uuid.uuid4().hex}"
        try:
            fs.put_file(self._temp, copy)
            if local:  # owner only, on disk before it replaces the old one
                os.chmod(copy, 0o600)
                with open(copy, "rb") as handle:
                    os.fsync(handle.fileno())
            fs.mv(copy, f"{parent}/{name}")
        except BaseException:
            with suppress(Exception):
                fs.rm_file(copy)
            raise
        self._release()
        return f"{folder}/{name}"

    def discard(self) -> None:
        """Drop what was collected (a dry run, or a run that failed before finishing)."""
        if not self._file.closed:
            self._file.close()
        self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            release_work_file(self._lock, self._temp)
