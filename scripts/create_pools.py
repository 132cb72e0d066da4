"""Create the Airflow pool of each configured Heap app (1 slot): replays into one app run one at a
time, so together they stay within that app's rate limits. Idempotent.

    .venv/bin/python scripts/create_pools.py [pipelines.yaml]
"""

from __future__ import annotations

import sys

from walkme_heap.config import load_pipelines


def main(argv: list[str]) -> int:
    from airflow.models.pool import Pool

    pools = sorted({p.heap_pool: p.heap_conn_id for p in load_pipelines(argv[0] if argv else None)}.items())
    for name, conn_id in pools:
        Pool.create_or_update_pool(
            name,
            slots=1,
            description=f"Heap app of connection {conn_id}: one replay at a time",
            include_deferred=False,
        )
        print(f"pool {name}: 1 slot")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
