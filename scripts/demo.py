"""The demo: replay one sample day into the bundled Heap emulator, then the same day again.

Run through ``python3 dev.py demo`` (which prepares the environment). It starts the emulator on a
free loopback port with Heap's documented limits, runs the DAG ``walkme_to_heap_sample_webhooks``
for 2024-03-10 with ``dag.test()``, prints the replay summary and what the emulator received, runs
the same day again and shows that the emulator holds no duplicate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # devtools/ (the dag.test() harness, the sample warehouse)

from walkme_heap.emulator.process import EmulatorProcess  # noqa: E402


@contextlib.contextmanager
def task_log_to(path: Path | None) -> Iterator[None]:
    """Send Airflow's console output (scheduler-in-process and task log) to a file, fd-level."""
    if path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as target:
        os.dup2(target.fileno(), 1)
        os.dup2(target.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def print_profiles(profiles: dict[str, dict[str, dict]]) -> None:
    """The user profiles the emulator holds: how many, and the values of each property (counted,
    no identity printed)."""
    users = [props for app in profiles.values() for props in app.values()]
    values: dict[str, Counter[str]] = {}
    for props in users:
        for name, value in props.items():
            values.setdefault(name, Counter())[str(value)] += 1
    print(f"    user profiles      {len(users)}, each with its latest values:")
    for name, counts in sorted(values.items()):
        shown = ", ".join(f"{v} {n}" for v, n in counts.most_common(4))
        print(f"      {name:<16} {shown}{' ...' if len(counts) > 4 else ''}")


def print_run(title: str, summary: dict, stats: dict) -> None:
    print(f"\n=== {title} ===")
    print(f"  rows read          {summary['read']}")
    print(f"  events sent        {summary['sent']}")
    print(f"  batches            {summary['batches']}")
    print(f"  invalid rows       {summary['invalid']}")
    for reason, count in summary["invalid_by_reason"].items():
        print(f"    {reason:<22} {count}")
    print(f"  skipped rows       {summary['skipped']}")
    for reason, count in summary["skipped_by_reason"].items():
        print(f"    {reason:<22} {count}")
    print(
        f"  late, within bound {summary.get('late_events', 0)}   (new events of earlier days filed with "
        "this day: sent by this run)"
    )
    print(f"  values truncated   {summary['truncated_values']}")
    print(f"  already sent       {summary['already_sent']}   (the ledger: acknowledged by an earlier run)")
    print(f"  rejected by Heap   {summary['rejected']}")
    print(f"  seconds            {summary['seconds']}")
    print(f"  dead letters       {summary['dead_letters']}")
    accounted = (
        summary["sent"]
        + summary["already_sent"]
        + summary["invalid"]
        + summary["rejected"]
        + summary["skipped"]
    )
    print(
        f"  reconciles         read {summary['read']} = sent + already sent + invalid + rejected + "
        f"skipped = {accounted}"
    )
    if summary.get("users"):
        print(
            f"  user properties    {summary['users']} users with attribute values: "
            f"{summary['users_updated']} updated ({summary['user_values_sent']} values, "
            f"{summary['user_requests']} add_user_properties requests), "
            f"{summary['users_unchanged']} unchanged (the ledger: Heap holds them), "
            f"{summary['users_refused']} refused"
        )
    print("  Heap emulator holds")
    print(f"    requests           {stats.get('requests', 0)}")
    print(f"    events received    {stats.get('accepted_events', 0)}")
    print(f"    unique events      {stats.get('unique_events', 0)}")
    print(f"    duplicates ignored {stats.get('duplicate_events', 0)}")
    print(
        f"    429 / 400 / 5xx    {stats.get('throttled_429', 0)} / "
        f"{stats.get('rejected_400', 0)} / {stats.get('errors_5xx', 0)}"
    )
    if stats.get("user_properties_requests"):
        print(
            f"    add_user_properties requests {stats.get('user_properties_requests', 0)}, users updated "
            f"{stats.get('user_properties_users_updated', 0)}, 429 / 400: "
            f"{stats.get('user_properties_throttled_429', 0)} / "
            f"{stats.get('user_properties_rejected_400', 0)}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pipeline",
        default="sample_webhooks",
        help="a pipeline of include/pipelines.yaml; sample_warehouse reads a SQLite warehouse",
    )
    parser.add_argument("--day", default="2024-03-10", help="UTC day to replay")
    parser.add_argument("--verbose", action="store_true", help="show Airflow's task log")
    args = parser.parse_args()
    workdir = Path(os.environ.get("AIRFLOW_HOME", ROOT / ".airflow"))
    workdir.mkdir(parents=True, exist_ok=True)

    if args.pipeline == "sample_warehouse" and "AIRFLOW_CONN_WALKME_WAREHOUSE" not in os.environ:
        from devtools.sample_warehouse import load_sqlite, payloads

        warehouse = load_sqlite(workdir / "walkme_warehouse.db", payloads())
        os.environ["AIRFLOW_CONN_WALKME_WAREHOUSE"] = json.dumps(
            {"conn_type": "sqlite", "host": str(warehouse)}
        )
        print(f"SQLite warehouse with the sample payloads: {warehouse}")
    # A fresh ledger and dead-letter folder for each demo (the emulator starts empty too).
    demo_home = workdir / "demo"
    shutil.rmtree(demo_home, ignore_errors=True)
    os.environ["WALKME_HEAP_HOME"] = str(demo_home)
    try:
        emulator = EmulatorProcess(log=workdir / "emulator.log")
    except RuntimeError as exc:
        return str(exc)
    url = emulator.url
    os.environ["AIRFLOW_CONN_HEAP_DEFAULT"] = json.dumps(
        {"conn_type": "heap", "host": url, "login": "walkme-heap-demo"}
    )
    task_log = None if args.verbose else workdir / "demo-task.log"
    if task_log is not None:
        task_log.write_bytes(b"")
    from devtools.local_run import run_dag

    day = datetime.fromisoformat(args.day).replace(tzinfo=UTC)
    logical_date = day + timedelta(days=1)  # the daily run for D covers [D-1, D)
    dag_id = f"walkme_to_heap_{args.pipeline}"
    print(f"Heap emulator on {url} (Heap's limits: 15,000 events/min per app, 1,000 per identity)")
    print(f"Replaying {args.day} with DAG {dag_id} ...", flush=True)
    try:
        counts, users_updated = [], []
        for attempt, title in enumerate((f"run 1 of {args.day}", f"run 2 of {args.day} (same day again)")):
            if attempt:
                print(f"\nReplaying {args.day} again ...", flush=True)
            with task_log_to(task_log):
                result = run_dag(ROOT / "dags", dag_id, logical_date)
            if result.state != "success" or result.summary is None:
                print(f"{title} ended {result.state}; the task log is in {task_log}")
                return 1
            counts.append(emulator.stats())
            print_run(title, result.summary, counts[-1])
            users_updated.append(result.summary.get("users_updated", 0))
            if result.summary.get("users"):
                print_profiles(emulator.users())
        after_first, after_second = counts
        unique_1, unique_2 = after_first["unique_events"], after_second["unique_events"]
        verdict = "no duplicate in Heap" if unique_1 == unique_2 else "DUPLICATES CREATED"
        print(
            f"\nUnique events in the emulator after run 1: {unique_1}, after run 2: {unique_2} -> {verdict}."
        )
        if any(users_updated):
            print(
                f"Users whose properties were sent: run 1: {users_updated[0]}, run 2: {users_updated[1]} "
                "(only changes are sent)."
            )
        if task_log is not None:
            print(f"Airflow's task logs: {task_log} (or run the demo with --verbose)")
        return 0 if unique_1 == unique_2 else 1
    finally:
        emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
