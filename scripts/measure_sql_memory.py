"""Measure peak memory of replaying one day from PostgreSQL, at two sizes (a script, not a test).

    .venv/bin/python scripts/measure_sql_memory.py [--rows 200000 2000000] [--dsn ...]

For each size it loads a realistic WalkMe events table into PostgreSQL (server-side, with
generate_series: timestamptz time column, JSONB webhook payload), starts the bundled Heap emulator
with its limits off and without keeping events, replays the day in a fresh process (the real
SqlSource -> mapping -> batching -> HTTP path) and prints that process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DSN = "postgresql://postgres@127.0.0.1:5432/test"
TABLE = "walkme_events_bench"

LOAD = f"""
DROP TABLE IF EXISTS {TABLE};
CREATE TABLE {TABLE} (id BIGSERIAL PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL, payload JSONB NOT NULL);
INSERT INTO {TABLE} (created_at, payload)
SELECT t, jsonb_build_object(
    'wm.euId', md5('user' || (g % 5000)::text) || md5((g % 5000)::text),
    'created_at', (extract(epoch FROM t) * 1000)::bigint,
    'type', (ARRAY['play','click','goalReach','submitted','visible'])[1 + g % 5],
    'oType', (ARRAY['wt','launcher','wt','survey','smartTip'])[1 + g % 5],
    'oId', (100000 + g % 300)::text,
    'oName', 'Item ' || (g % 300) || ' · ' || repeat('Schritt ', 1 + g % 6),
    'sId', md5('session' || (g / 7)::text),
    'wm.env', 0,
    'wm.language', (ARRAY['English','Japanese','Deutsch'])[1 + g % 3],
    'ctx.location.hostname', 'portal.example.com',
    'ctx.location.pathname', '/app/page/' || (g % 97),
    'ctx.title', '経費精算 ' || repeat('title ', 1 + g % 10),
    'env.browser.name', (ARRAY['Chrome','Edge','Firefox'])[1 + g % 3],
    'env.os.name', (ARRAY['Windows','Mac OS','Linux'])[1 + g % 3],
    'wm.userVars.department', (ARRAY['Finance','IT','Sales',''])[1 + g % 4])
FROM generate_series(1, %(rows)s) AS g,
     LATERAL (SELECT timestamptz '2024-03-10 00:00:00+00'
                     + (g::double precision / %(rows)s) * interval '86399 seconds' AS t) AS x;
ANALYZE {TABLE};
"""


def load(rows: int, dsn: str) -> float:
    import psycopg

    started = time.monotonic()
    with psycopg.connect(dsn) as db:
        db.execute(LOAD.replace("%(rows)s", str(int(rows))))
    return time.monotonic() - started


def replay_child(dsn: str, url: str) -> None:
    """Runs in a fresh process: replay the day, print a JSON line with counts and peak RSS."""
    import psycopg

    from walkme_heap.delivery.client import HeapClient
    from walkme_heap.mapping.spec import EventNameSpec, MappingSpec
    from walkme_heap.replay import ReplayOptions, replay
    from walkme_heap.sources.sql import SqlSource, table_query
    from walkme_heap.window import Window

    window = Window(datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 11, tzinfo=UTC))
    source = SqlSource(
        lambda: psycopg.connect(dsn),
        "%s",
        window,
        query=table_query(TABLE, "created_at", ["created_at", "id"]),
        payload_column="payload",
        label=TABLE,
    )
    spec = MappingSpec(exclude_properties=("oType", "id"), event_name=EventNameSpec())
    started = time.monotonic()
    # Heap's limits off, in the emulator and in the pacer: this measures our own cost.
    options = ReplayOptions(app_limit=None, identity_limit=None)
    summary = replay("bench", source, spec, window, HeapClient(url, "bench"), options)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "read": summary.read,
                "sent": summary.sent,
                "seconds": time.monotonic() - started,
                "peak_rss_mb": round(peak_kib / 1024, 1),
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        replay_child(args.dsn, args.child)
        return 0
    from walkme_heap.emulator.process import EmulatorProcess

    emulator = EmulatorProcess("--app-limit", "off", "--identity-limit", "off", "--no-store")
    try:
        url = emulator.url
        results = []
        print(f"{'rows':>10} {'load s':>8} {'replay s':>9} {'events/s':>9} {'peak RSS MB':>12}")
        for rows in args.rows:
            load_seconds = load(rows, args.dsn)
            child = subprocess.run(
                [sys.executable, __file__, "--child", url, "--dsn", args.dsn],
                capture_output=True,
                text=True,
            )
            if child.returncode:
                sys.exit(f"the replay of {rows} rows failed:\n{child.stderr[-3000:]}")
            result = json.loads(child.stdout.strip().splitlines()[-1])
            assert result["read"] == rows and result["sent"] == rows, result
            results.append((rows, result))
            print(
                f"{rows:>10} {load_seconds:>8.1f} {result['seconds']:>9.1f} "
                f"{rows / result['seconds']:>9.0f} {result['peak_rss_mb']:>12.1f}",
                flush=True,
            )
        if len(results) >= 2:
            delta = results[-1][1]["peak_rss_mb"] - results[0][1]["peak_rss_mb"]
            print(f"peak RSS difference {results[-1][0]:,} vs {results[0][0]:,} rows: {delta:.1f} MB")
    finally:
        emulator.stop()
        import psycopg

        with psycopg.connect(args.dsn) as db:
            db.execute(f"DROP TABLE IF EXISTS {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
