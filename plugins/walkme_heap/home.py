"""Where things live at run time: the SQLite ledger, the dead letters, the working folders.

``$WALKME_HEAP_HOME`` when set, else ``$AIRFLOW_HOME/walkme_heap`` (``~/airflow/walkme_heap``).

A pipeline's working folder, ``work/<pipeline>`` (owner only: 0700), holds its runs' temporary
files: the dead letters before they are published and, for a large window, the keys seen so far.
Both hold identities (personal data), so they stay out of the system temp folder, where the files
of a killed task (SIGKILL, a lost pod) would stay forever. Each file is created 0600 and held, as
long as its run uses it, with an exclusive ``flock`` on the descriptor ``work_file`` returns; a run
removes its own files when it ends. The next run of the pipeline removes the files nobody holds
(``remove_stale_files``): the kernel drops the locks of a process that died, while the files of runs
still going (the shards of a day, processes side by side on one host) are locked and kept. A file
is created and locked under a shared ``flock`` of the folder's ``.lock`` file, and the cleanup holds
that exclusively, so it never sees a file between its creation and its lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

log = logging.getLogger(__name__)
WORK_PREFIX = "walkme-heap-"  # the temporary files' names (the cleanup removes no other file)
_FOLDER_LOCK = ".lock"


def default_home() -> Path:
    if os.environ.get("WALKME_HEAP_HOME"):
        return Path(os.environ["WALKME_HEAP_HOME"])
    return Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow") / "walkme_heap"


def default_ledger_path() -> Path:
    """The embedded ledger's SQLite file (its folder created)."""
    path = default_home() / "ledger.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def default_dead_letters() -> str:
    return str(default_home() / "dead_letters")


def default_work_dir(pipeline: str) -> Path:
    """The pipeline's working folder, ``work/<pipeline>`` under the home (created, owner only)."""
    if pipeline in ("", ".", "..") or "/" in pipeline or "\0" in pipeline:
        raise ValueError(f"pipeline name {pipeline!r} cannot name a folder")
    return work_folder(work_folder(default_home() / "work") / pipeline)


def work_folder(path: str | Path) -> Path:
    """``path`` as a folder its owner alone may enter (0700), created with its parents if missing."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)
    return path


@contextmanager
def _folder_lock(folder: Path, operation: int) -> Iterator[None]:
    handle = os.open(folder / _FOLDER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(handle, operation)
        yield
    finally:
        os.close(handle)


def work_file(folder: str | Path | None, kind: str, suffix: str) -> tuple[int, str]:
    """A new temporary file, ``walkme-heap-<kind>-<random><suffix>`` (0600) in the working folder
    ``folder`` (created if missing; None: the system temp folder, which nothing cleans), and a
    descriptor of it holding an exclusive lock: keep it open while the file is in use, and remove
    the file before closing it."""
    prefix = f"{WORK_PREFIX}{kind}-"
    if folder is None:
        handle, path = tempfile.mkstemp(prefix=prefix, suffix=suffix)
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle, path
    where = work_folder(folder)
    with _folder_lock(where, fcntl.LOCK_SH):
        handle, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=where)
        try:  # a new file no cleanup can have seen: the lock is free
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(handle)
            os.unlink(path)
            raise
    return handle, path


def release_work_file(handle: int, path: str) -> None:
    """Remove a file of ``work_file``, then let go of its lock."""
    try:
        with suppress(FileNotFoundError):
            os.unlink(path)
    finally:
        os.close(handle)


def remove_stale_files(folder: str | Path) -> list[str]:
    """Remove the temporary files in the working folder ``folder`` that no process holds (left by
    runs that died); return their paths. Files of runs still going are locked, and kept."""
    where = Path(folder)
    if not where.is_dir():
        return []
    removed: list[str] = []
    with _folder_lock(where, fcntl.LOCK_EX):  # no file is created meanwhile
        for entry in os.scandir(where):
            if not entry.name.startswith(WORK_PREFIX) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                handle = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:  # its run just removed it
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held: a live run's
                os.close(handle)
                continue
            try:
                os.unlink(entry.path)
                removed.append(entry.path)
            except FileNotFoundError:
                pass
            finally:
                os.close(handle)
    if removed:
        log.info("%d temporary file(s) left by runs that died removed from %s", len(removed), where)
    return removed
