"""Create the Airflow pool of each configured Heap app. Idempotent.

A pool has as many slots as the most shards of any pipeline into the app (1 without sharding): one
day's shards run side by side, days run one after the other. Whatever runs at once shares the app's
rate budget through the ledger, so the pool sets the pace of work, not the safety of the limit.

    .venv/bin/python scripts/create_pools.py [pipelines.yaml]
"""

from __future__ import annotations

import sys

from walkme_heap.config import load_pipelines


def main(argv: list[str]) -> int:
    from airflow.models.pool import Pool

    pools: dict[str, tuple[str, int]] = {}
    for pipeline in load_pipelines(argv[0] if argv else None):
        _, slots = pools.get(pipeline.heap_pool, (pipeline.heap_conn_id, 1))
        pools[pipeline.heap_pool] = (pipeline.heap_conn_id, max(slots, pipeline.shards))
    for name, (conn_id, slots) in sorted(pools.items()):
        Pool.create_or_update_pool(
            name,
            slots=slots,
            description=f"Heap app of connection {conn_id}: {slots} replay task(s) at a time",
            include_deferred=False,
        )
        print(f"pool {name}: {slots} slot{'s' if slots > 1 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
