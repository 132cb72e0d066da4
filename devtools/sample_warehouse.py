"""The sample exports as a warehouse would hold them: webhook payloads, as JSON Lines or SQLite.

Each well-formed row of the bundled sample CSVs becomes a webhook payload (``created_at`` and
``wm.env`` as numbers, as WalkMe sends them). The SQLite table is
``walkme_events(id, created_at INTEGER epoch ms, payload TEXT JSON)``.

    .venv/bin/python -m devtools.sample_warehouse .airflow/walkme_warehouse.db
"""

from __future__ import annotations

import csv
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "include" / "sample_exports" / "webhooks").glob("walkme_webhooks_*.csv"))


def payloads() -> list[dict[str, Any]]:
    """Every well-formed sample row as a typed payload (empty values left out)."""
    out: list[dict[str, Any]] = []
    for path in SAMPLES:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for row in csv.DictReader(handle):
                if None in row or any(v is None for v in row.values()):
                    continue  # the malformed record
                payload: dict[str, Any] = {k: v for k, v in row.items() if v != ""}
                for key in ("created_at", "wm.env"):
                    if str(payload.get(key, "")).isdigit():
                        payload[key] = int(payload[key])
                out.append(payload)
    return out


def created_ms(payload: dict[str, Any]) -> int | None:
    value = payload.get("created_at")
    return value if isinstance(value, int) else None


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def load_sqlite(path: Path, rows: list[dict[str, Any]], table: str = "walkme_events") -> Path:
    with sqlite3.connect(path) as db:
        db.execute(f"DROP TABLE IF EXISTS {table}")
        db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, created_at INTEGER, payload TEXT)")
        db.executemany(
            f"INSERT INTO {table} (created_at, payload) VALUES (?, ?)",
            [(created_ms(r), json.dumps(r, ensure_ascii=False)) for r in rows],
        )
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / ".airflow" / "walkme_warehouse.db")
    print(f"wrote {load_sqlite(target, payloads())}")
