"""The Airflow UI on embedded defaults: ``python3 dev.py ui`` (or ``make ui``).

It prepares a local Airflow home (SQLite, the project's DAGs and plugin, the pools), starts the
bundled Heap emulator on a free loopback port with Heap's limits and points the ``heap_default``
connection at it (a clearly local app id), gives the sample warehouse pipeline its SQLite warehouse,
then starts Airflow's scheduler, DAG processor, triggerer and API server, each in a session of its
own (the API server on loopback only), waits until the sample DAGs are parsed, and prints where to
log in. Ctrl-C (or SIGTERM, or closing the terminal) stops all of them with every process of their
sessions (the LocalExecutor's workers and their tasks, which run in process groups of their own):
the scheduler first, so running tasks finish while the API server still answers them, the API
server last, then the emulator; and it says whether anything is left. The caller's ``AIRFLOW_*``
and ``WALKME_HEAP_*`` variables are not passed on: the session is the embedded defaults.

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
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # devtools/ (the sample warehouse)

from dev import airflow_env  # noqa: E402
from walkme_heap.emulator.process import EmulatorProcess  # noqa: E402

APP_ID = "walkme-heap-local-emulator"  # what the emulator receives: never a real Heap app's id
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
SAMPLE_DAG = "walkme_to_heap_sample_webhooks"
SIMPLE_AUTH = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
STOP_SECONDS = 30.0  # a component that has not stopped after SIGTERM by then gets SIGKILL


def airflow_settings(home: Path, port: int, parallelism: int, passwords: Path) -> dict[str, str]:
    """The environment of every Airflow process: this project's DAGs and plugin on a local home.
    The components are separate processes: they share the secrets that sign the task and UI tokens
    (made once per home) and the address of the API server's execution API."""
    keys = _kept(home / "ui_secrets.json", {"jwt": secrets.token_hex(32), "api": secrets.token_hex(32)})
    # Embedded defaults only: the caller's Airflow settings and connections and walkme-heap settings
    # (another pipelines file, a ledger connection, a secrets backend) would make this session
    # another than the one the README walks through.
    caller = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "WALKME_HEAP_"))}
    return {
        **airflow_env(home, caller),  # dev.py's: the project's DAGs and plugin, SQLite, LocalExecutor
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",  # this machine only: the UI, its login, the execution API
        # the components' log servers on free ports (8793/8794, Airflow's, may be another Airflow's)
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt"],
        "AIRFLOW__API__SECRET_KEY": keys["api"],
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }


def admin_password(passwords: Path) -> str:
    """The admin's password, made once per home and kept (the API server reads this file)."""
    return str(_kept(passwords, {"admin": secrets.token_urlsafe(12)})["admin"])


def _kept(path: Path, made: dict[str, str]) -> dict[str, str]:
    """What ``path`` holds when it holds every key of ``made``; else ``made``, written there
    (readable by its owner only)."""
    try:
        known = json.loads(path.read_text())
        if isinstance(known, dict) and all(isinstance(known.get(k), str) and known[k] for k in made):
            return known
    except (OSError, ValueError):
        pass
    path.write_text(json.dumps(made))
    path.chmod(0o600)
    return made


def prepare(env: dict[str, str], airflow: Path, log: Path) -> None:
    """The metadata database and the Heap apps' pools (a task waits forever for a missing pool)."""
    with log.open("ab") as out:
        for command in (
            [str(airflow), "db", "migrate"],
            [sys.executable, str(ROOT / "scripts" / "create_pools.py")],
        ):
            if subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT).returncode:
                sys.exit(f"{' '.join(command[-2:])} failed; see {log}")


def wait_until_ready(
    url: str, processes: dict[str, subprocess.Popen[bytes]], database: Path, timeout: float = 240.0
) -> None:
    """Until the API server answers, says every component is healthy, and the sample DAGs are
    parsed (a newcomer's first click must not find "Dag not found")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"the {name} stopped (exit {process.returncode}) while starting")
        try:
            with urlopen(f"{url}/api/v2/monitor/health", timeout=5) as answer:
                health = json.load(answer)
            parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
            if all((health.get(part) or {}).get("status") == "healthy" for part in parts) and _parsed(
                database
            ):
                return
        except (URLError, OSError, ValueError):
            pass
        time.sleep(1)
    raise RuntimeError(f"Airflow did not become ready within {timeout:.0f} s")


def _parsed(database: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            return bool(db.execute("SELECT 1 FROM dag WHERE dag_id = ?", [SAMPLE_DAG]).fetchone())
    except sqlite3.Error:
        return False


def stop(processes: dict[str, subprocess.Popen[bytes]]) -> list[str]:
    """Stop the components in order (the scheduler first, so its running tasks end while the API
    server still answers them; the API server last): SIGTERM to every process of each one's session
    (a task runs in a process group of its own, in its worker's session), SIGKILL to what is left
    after ``STOP_SECONDS``. Returns the components that needed SIGKILL."""
    killed = []
    for name in ("scheduler", "dag-processor", "triggerer", "api-server"):
        process = processes.get(name)
        if process is None:
            continue
        _signal_session(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_SECONDS)
        while _session(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)  # its workers and their tasks finishing
        if _session(process.pid):
            killed.append(name)
            _signal_session(process.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    return killed


def _session(sid: int) -> list[int]:
    """The running processes of session ``sid`` (zombies, reaped by their parents soon, excluded)."""
    members = []
    for process in psutil.process_iter(["status"]):
        with suppress(psutil.Error, OSError):
            if os.getsid(process.pid) == sid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
    return members


def _signal_session(sid: int, sig: signal.Signals) -> None:
    for pid in _session(sid):
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


def _free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
    if not _free(args.port):
        sys.exit(f"port {args.port} is in use (another Airflow?): choose another with --port")

    def on_signal(signum: int, _: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, kill, a closed terminal: each stops everything started so far, from the first step on.
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, on_signal)
    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    log = home / "ui.log"
    log.write_bytes(b"")
    passwords = home / "simple_auth_manager_passwords.json"
    env = airflow_settings(home, args.port, args.parallelism, passwords)
    airflow = Path(sys.executable).with_name("airflow")
    url = f"http://127.0.0.1:{args.port}"
    processes: dict[str, subprocess.Popen[bytes]] = {}
    emulator: EmulatorProcess | None = None
    status = 1
    try:
        print(f"Preparing the Airflow home {home} (SQLite) ...", flush=True)
        prepare(env, airflow, log)
        password = admin_password(passwords)
        ui_home = home / "walkme_heap_ui"  # this session's ledger and dead letters, as the emulator
        shutil.rmtree(ui_home, ignore_errors=True)
        env["WALKME_HEAP_HOME"] = str(ui_home)
        from devtools.sample_warehouse import load_sqlite, payloads

        warehouse = load_sqlite(home / "walkme_warehouse.db", payloads())
        env["AIRFLOW_CONN_WALKME_WAREHOUSE"] = json.dumps({"conn_type": "sqlite", "host": str(warehouse)})
        emulator = EmulatorProcess(log=home / "emulator.log")
        env["AIRFLOW_CONN_HEAP_DEFAULT"] = json.dumps(
            {"conn_type": "heap", "host": emulator.url, "login": APP_ID}
        )
        with log.open("ab") as out:
            for name in COMPONENTS:
                processes[name] = subprocess.Popen(
                    [str(airflow), name],
                    env=env,
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its session: it, its workers and their tasks stop together
                )
        print(
            f"Starting Airflow (scheduler, DAG processor, triggerer, API server; log: {log}) ...", flush=True
        )
        wait_until_ready(url, processes, home / "airflow.db")
        print(
            f"""
Airflow is ready: {url}
  log in as           admin / {password}
  Heap                the bundled emulator at {emulator.url} (Heap's limits on), connection
                      heap_default, app id {APP_ID}: nothing leaves this machine
  what it received    {emulator.url}/_emulator/stats, /_emulator/events, /_emulator/users
  replay report       {url}/walkme-heap/report (also under Browse in the navigation)
  ledger, dead letters {ui_home}
Try: open {SAMPLE_DAG}, Trigger, start 2024-03-10, end 2024-03-11, dry run on,
then again with dry run off. Ctrl-C stops everything.""",
            flush=True,
        )
        while True:
            for name, process in processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"the {name} stopped (exit {process.returncode})")
            time.sleep(1)
    except KeyboardInterrupt:
        status = 0
    except (RuntimeError, OSError) as exc:
        print(f"{exc}; see {log}", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the shutdown short
        print("Stopping Airflow and the emulator ...", flush=True)
        killed = stop(processes)
        if emulator is not None:
            emulator.stop()
        left = [name for name, p in processes.items() if _session(p.pid)]
        if left or (emulator is not None and emulator.process.poll() is None):
            print(f"could not stop: {', '.join(left) or 'the emulator'}", flush=True)
            status = 1
        else:
            note = f" ({', '.join(killed)} needed SIGKILL)" if killed else ""
            print(f"Stopped: no process of this session is left{note}.", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
