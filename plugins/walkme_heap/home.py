"""Where the embedded defaults live at run time: the SQLite ledger and the dead letters.

``$WALKME_HEAP_HOME`` when set, else ``$AIRFLOW_HOME/walkme_heap`` (``~/airflow/walkme_heap``).
"""

from __future__ import annotations

import os
from pathlib import Path


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
