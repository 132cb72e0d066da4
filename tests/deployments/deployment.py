"""A real Airflow deployment started by a test: API server, scheduler, DAG processor and, for the
CeleryExecutor, workers; each its own process, configured through ``AIRFLOW__*`` variables."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import ROOT, free_port


def sqlite_local_executor(home: Path) -> dict[str, str]:
    """Settings of a one-machine deployment: LocalExecutor on a SQLite metadata database in ``home``
    (shared by the components: writers wait for each other, see ``airflow_settings``)."""
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": (
            "tests.deployments.airflow_settings.SQLITE_CONNECT_ARGS"
        ),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": (
            "tests.deployments.airflow_settings.SQLITE_CONNECT_ARGS_ASYNC"
        ),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
    }


class Deployment:
    """One pipelines file, whose day files are in ``data`` (``{exports}`` in ``pipelines``); ``env``
    adds to the base settings (executor, database, connections ...)."""

    def __init__(self, home: Path, pipelines: str, env: dict[str, str]) -> None:
        self.home = home
        self.data = home / "exports"
        self.data.mkdir(parents=True)
        (home / "pipelines.yaml").write_text(pipelines.replace("{exports}", str(self.data)))
        self.port = free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),  # settings that AIRFLOW__ variables name live in tests/
            "WALKME_HEAP_CONFIG": str(home / "pipelines.yaml"),
            "WALKME_HEAP_HOME": str(home / "walkme_heap"),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": "walkme-heap-test-secret-0123456789abcdef",
            "AIRFLOW__API__SECRET_KEY": "walkme-heap-test-api-secret-0123456789",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            **env,
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def airflow(self, *args: str, check: bool = True, locked_retries: int = 0) -> str:
        """Run an Airflow CLI command. ``locked_retries``: run it again when a SQLite metadata
        database was locked by the scheduler (SQLite refuses a lock upgrade at once rather than
        wait). Airflow removes the partial backfill of a locked attempt only as best it can: when
        that removal is locked out too, the orphan (a backfill without runs) makes the next attempt
        answer AlreadyRunningBackfill until the scheduler marks it complete, so that is waited out
        (for 90 s after the lock at most) and is never taken for success."""
        locked, deadline = 0, 0.0
        while True:
            result = subprocess.run(
                [sys.executable, "-m", "airflow", *args],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            output = result.stdout + result.stderr
            if result.returncode and "database is locked" in output and locked < locked_retries:
                locked, deadline = locked + 1, time.monotonic() + 90
            elif not (
                result.returncode
                and locked
                and "AlreadyRunningBackfill" in output
                and time.monotonic() < deadline
            ):
                break
            time.sleep(3)
        if check and result.returncode:
            raise AssertionError(
                f"airflow {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``airflow <args>`` in a session of its own (a worker "machine" can die whole)."""
        log = (self.home / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes[name] = process
        return process

    def start(self, dag_id: str) -> None:
        """Migrate, create the pools, start every component, wait until ``dag_id`` is parsed."""
        self.airflow("db", "migrate")
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "create_pools.py")],
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.spawn("api-server", "api-server", "--host", "127.0.0.1", "--workers", "1")
        self.spawn("scheduler", "scheduler")
        self.spawn("dag-processor", "dag-processor")
        deadline = time.monotonic() + 180
        while dag_id not in self.airflow("dags", "list", check=False):
            assert time.monotonic() < deadline, self.logs()
            self.assert_running()
            time.sleep(2)
        self.airflow("dags", "unpause", dag_id)  # runs of a paused DAG wait

    def assert_running(self) -> None:
        dead = [name for name, p in self.processes.items() if p.poll() is not None]
        assert not dead, f"stopped: {dead}\n{self.logs()}"

    def kill(self, name: str) -> list[int]:
        """SIGKILL a component and every process it started, as when its machine dies.

        A component runs in its own session; Airflow's task supervisor puts each task in a process
        group of its own, so the whole session is killed, not only the group.
        """
        process = self.processes.pop(name)
        killed = _signal_session(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        return killed

    def halt(self, name: str) -> None:
        """Stop a component as an operator would (SIGTERM; SIGKILL what is left after 30 s)."""
        process = self.processes.pop(name)
        _signal_session(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        _signal_session(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(self.home.glob("*.log"))
        )

    def stop(self) -> None:
        """SIGTERM every component's session; SIGKILL what is left after 30 s."""
        for process in self.processes.values():
            _signal_session(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_session(process.pid, signal.SIGKILL)  # what a component left behind, too
            process.wait(timeout=30)
        self.processes.clear()


def _signal_session(sid: int, sig: int) -> list[int]:
    """Signal every live process of a session (until none is left, for SIGKILL)."""
    import psutil

    signalled: set[int] = set()
    for _ in range(10):
        members = []
        for candidate in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(candidate.pid) == sid and candidate.status() != psutil.STATUS_ZOMBIE:
                    members.append(candidate)
        if not members:
            break
        for member in members:
            with contextlib.suppress(psutil.Error):
                member.send_signal(sig)
                signalled.add(member.pid)
        if sig != signal.SIGKILL:
            break
        time.sleep(0.2)
    return sorted(signalled)
