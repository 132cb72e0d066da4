"""The Airflow UI on embedded defaults: ``python3 dev.py ui`` (or ``make ui``).

It prepares a local Airflow home (SQLite, the project's DAGs and plugin, the pools), starts the
bundled Heap emulator on a free loopback port with Heap's limits and points the ``heap_default``
connection at it (a clearly local app id), gives the sample warehouse pipeline its SQLite warehouse,
then starts Airflow's scheduler, DAG processor, triggerer and API server, each in a process group of
its own, and prints where to log in. Ctrl-C (or SIGTERM) stops all of them, and every process they
started (the LocalExecutor's workers), then the emulator, and says so.

Each session starts with an empty emulator and a fresh ledger and dead-letter folder
(``<home>/walkme_heap_ui``): what the ledger says was sent is what the emulator holds. Sample DAGs
start paused, as Airflow's default; the trigger form's "Unpause ... on trigger" (checked) unpauses
one. The LocalExecutor runs ``--parallelism`` tasks at once (4; Airflow's default, 32, starts 32
worker processes).

    .venv/bin/python scripts/ui.py [--port 8080] [--home .airflow] [--parallelism 4]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # devtools/ (the sample warehouse)

from dev import airflow_env  # noqa: E402
from walkme_heap.emulator.process import EmulatorProcess  # noqa: E402

APP_ID = "walkme-heap-local-emulator"  # what the emulator receives: never a real Heap app's id
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
SIMPLE_AUTH = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
STOP_SECONDS = 30.0  # a component that has not stopped after SIGTERM by then gets SIGKILL


def airflow_settings(home: Path, port: int, parallelism: int, passwords: Path) -> dict[str, str]:
    """The environment of every Airflow process: this project's DAGs and plugin on a local home.
    The components are separate processes: they share the secrets that sign the task and UI tokens
    (made once per home) and the address of the API server's execution API."""
    secrets_file = home / "ui_secrets.json"
    if not secrets_file.exists():
        secrets_file.write_text(json.dumps({"jwt": secrets.token_hex(32), "api": secrets.token_hex(32)}))
        secrets_file.chmod(0o600)
    keys = json.loads(secrets_file.read_text())
    return {
        **airflow_env(home),  # dev.py's: the project's DAGs and plugin, SQLite, LocalExecutor
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt"],
        "AIRFLOW__API__SECRET_KEY": keys["api"],
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }


def admin_password(passwords: Path) -> str:
    """The admin's password, made once per home and kept (the API server reads this file)."""
    if passwords.exists():
        known = json.loads(passwords.read_text() or "{}")
        if known.get("admin"):
            return str(known["admin"])
    password = secrets.token_urlsafe(12)
    passwords.write_text(json.dumps({"admin": password}))
    passwords.chmod(0o600)
    return password


def prepare(env: dict[str, str], airflow: Path, log: Path) -> None:
    """The metadata database and the Heap apps' pools (a task waits forever for a missing pool)."""
    with log.open("ab") as out:
        for command in (
            [str(airflow), "db", "migrate"],
            [sys.executable, str(ROOT / "scripts" / "create_pools.py")],
        ):
            if subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT).returncode:
                sys.exit(f"{' '.join(command[-2:])} failed; see {log}")


def wait_until_ready(url: str, processes: dict[str, subprocess.Popen[bytes]], timeout: float = 240.0) -> None:
    """Until the API server answers and says the scheduler and DAG processor are healthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"the {name} stopped (exit {process.returncode}) while starting")
        try:
            with urlopen(f"{url}/api/v2/monitor/health", timeout=5) as answer:
                health = json.load(answer)
            if all(
                (health.get(part) or {}).get("status") == "healthy" for part in ("metadatabase", "scheduler")
            ):
                return
        except (URLError, OSError, ValueError):
            pass
        time.sleep(1)
    raise RuntimeError(f"Airflow did not become ready within {timeout:.0f} s")


def stop(processes: dict[str, subprocess.Popen[bytes]]) -> list[str]:
    """SIGTERM to each component's process group, SIGKILL to what is left after ``STOP_SECONDS``;
    returns the groups that still had processes then (empty: everything stopped by itself)."""
    for process in processes.values():
        _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes.values():
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    while time.monotonic() < deadline and any(_group_alive(p.pid) for p in processes.values()):
        time.sleep(0.2)  # workers of a stopped scheduler finishing
    killed = [name for name, p in processes.items() if _group_alive(p.pid)]
    for name in killed:
        _signal_group(processes[name].pid, signal.SIGKILL)
    for process in processes.values():
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    return killed


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (a zombie of ours, reaped later, does not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="the API server's port (the UI)")
    parser.add_argument(
        "--home",
        default=str(ROOT / ".airflow"),
        help="the Airflow home (created if missing; default .airflow)",
    )
    parser.add_argument("--parallelism", type=int, default=4, help="tasks at once (LocalExecutor workers)")
    args = parser.parse_args()
    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    log = home / "ui.log"
    log.write_bytes(b"")
    passwords = home / "simple_auth_manager_passwords.json"
    env = airflow_settings(home, args.port, args.parallelism, passwords)
    airflow = Path(sys.executable).with_name("airflow")

    print(f"Preparing the Airflow home {home} (SQLite) ...", flush=True)
    prepare(env, airflow, log)
    password = admin_password(passwords)
    ui_home = home / "walkme_heap_ui"  # the ledger and dead letters of this session, as the emulator
    shutil.rmtree(ui_home, ignore_errors=True)
    env["WALKME_HEAP_HOME"] = str(ui_home)
    from devtools.sample_warehouse import load_sqlite, payloads

    warehouse = load_sqlite(home / "walkme_warehouse.db", payloads())
    env["AIRFLOW_CONN_WALKME_WAREHOUSE"] = json.dumps({"conn_type": "sqlite", "host": str(warehouse)})
    emulator = EmulatorProcess(log=home / "emulator.log")
    env["AIRFLOW_CONN_HEAP_DEFAULT"] = json.dumps(
        {"conn_type": "heap", "host": emulator.url, "login": APP_ID}
    )

    processes: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def on_signal(signum: int, _: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    url = f"http://localhost:{args.port}"
    try:
        with log.open("ab") as out:
            for name in COMPONENTS:
                processes[name] = subprocess.Popen(
                    [str(airflow), name],
                    env=env,
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: it and its workers stop together
                )
        print(
            f"Starting Airflow (scheduler, DAG processor, triggerer, API server; log: {log}) ...", flush=True
        )
        wait_until_ready(url, processes)
        print(
            f"""
Airflow is ready: {url}
  log in as           admin / {password}
  Heap                the bundled emulator at {emulator.url} (Heap's limits on), connection
                      heap_default, app id {APP_ID}: nothing leaves this machine
  what it received    {emulator.url}/_emulator/stats, /_emulator/events, /_emulator/users
  replay report       {url}/walkme-heap/report (also under Browse in the navigation)
  ledger, dead letters {ui_home}
Try: open walkme_to_heap_sample_webhooks, Trigger, start 2024-03-10, end 2024-03-11, dry run on,
then again with dry run off. Ctrl-C stops everything.""",
            flush=True,
        )
        while True:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"the {name} stopped (exit {process.returncode}); see {log}", flush=True)
                    raise KeyboardInterrupt
            time.sleep(1)
    except KeyboardInterrupt:
        stopping = True
    except RuntimeError as exc:
        print(f"{exc}; see {log}", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        print("Stopping Airflow and the emulator ...", flush=True)
        killed = stop(processes)
        emulator.stop()
        left = [name for name, p in processes.items() if _group_alive(p.pid)]
        if left:
            print(f"could not stop: {', '.join(left)}", flush=True)
        else:
            note = f" ({', '.join(killed)} needed SIGKILL)" if killed else ""
            print(f"Stopped: no process of this session is left{note}.", flush=True)
    return 0 if stopping else 1


if __name__ == "__main__":
    sys.exit(main())
