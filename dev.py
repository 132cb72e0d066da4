#!/usr/bin/env python3
"""One entry point for a fresh machine with Python 3.11 and nothing else.

    python3 dev.py demo     # set up, then replay a sample day into the bundled Heap emulator, twice
    python3 dev.py test     # set up, then run the whole pytest suite (extra args go to pytest)
    python3 dev.py bench    # set up, then run the benchmarks (writes docs/benchmarks.*; ~15 minutes)
    python3 dev.py ui       # set up, then the Airflow UI with the bundled Heap emulator (Ctrl-C stops all)
    python3 dev.py airflow  # set up, then run any airflow CLI command in the project's environment
    python3 dev.py lock     # re-resolve constraints.txt from requirements-dev.txt

Setup creates ``.venv`` (installing the pinned dependencies and the project, editable) and a local
Airflow home in ``.airflow`` (SQLite, no example DAGs), and is skipped when nothing changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
AIRFLOW_HOME = ROOT / ".airflow"
INPUTS = ("requirements.txt", "requirements-dev.txt", "constraints.txt", "pyproject.toml")


def airflow_env(home: Path = AIRFLOW_HOME, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every command runs in: a local Airflow home (``.airflow``; ``scripts/ui.py``
    passes its own), this project's DAGs; on top of ``base`` (default: this process's)."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run([str(a) for a in args], cwd=ROOT, env=env)
    if result.returncode:
        sys.exit(result.returncode)


def setup() -> None:
    digest = hashlib.sha256(b"".join((ROOT / name).read_bytes() for name in INPUTS)).hexdigest()
    stamp = VENV / ".walkme-heap-installed"
    if not (stamp.exists() and stamp.read_text() == digest):
        print(f"==> creating {VENV.name} and installing pinned dependencies", flush=True)
        venv.EnvBuilder(with_pip=True, clear=not (BIN / "python").exists()).create(VENV)
        pip = [BIN / "python", "-m", "pip", "--disable-pip-version-check", "-q", "install"]
        run(*pip, "-c", "constraints.txt", "-r", "requirements-dev.txt", "-e", ".")
        stamp.write_text(digest)
    AIRFLOW_HOME.mkdir(exist_ok=True)
    db_stamp = AIRFLOW_HOME / ".migrated"
    if not (db_stamp.exists() and db_stamp.read_text() == digest):
        print("==> preparing the local Airflow home (SQLite)", flush=True)
        result = subprocess.run(
            [BIN / "airflow", "db", "migrate"],
            cwd=ROOT,
            env=airflow_env(),
            capture_output=True,
            text=True,
        )
        if result.returncode:
            sys.stderr.write(result.stdout + result.stderr)
            sys.exit(result.returncode)
        run(BIN / "python", "scripts/create_pools.py", env=airflow_env())
        db_stamp.write_text(digest)


def lock() -> None:
    tmp = ROOT / ".lock-venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(tmp)
    run(tmp / "bin" / "python", "-m", "pip", "-q", "install", "-r", "requirements-dev.txt")
    frozen = subprocess.run(
        [tmp / "bin" / "python", "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    header = (ROOT / "constraints.txt").read_text().split("\n")
    comments = "\n".join(line for line in header if line.startswith("#"))
    (ROOT / "constraints.txt").write_text(comments + "\n" + frozen)
    subprocess.run(["rm", "-rf", str(tmp)], check=True)


def main(argv: list[str]) -> None:
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if command == "lock":
        lock()
        return
    if command not in ("demo", "test", "bench", "airflow", "setup", "ui"):
        print(__doc__)
        sys.exit(0 if command == "help" else 2)
    setup()
    env = airflow_env()
    if command == "demo":
        run(BIN / "python", "scripts/demo.py", *rest, env=env)
    elif command == "test":
        run(BIN / "python", "-m", "pytest", *rest, env=env)
    elif command == "bench":
        run(BIN / "python", "scripts/bench.py", *rest, env=env)
    elif command == "airflow":
        run(BIN / "airflow", *rest, env=env)
    elif command == "ui":
        # Replaced, not a child: Ctrl-C reaches the UI script alone, which stops what it started
        # (subprocess.run would kill it mid-shutdown on the KeyboardInterrupt).
        os.execve(BIN / "python", [str(BIN / "python"), str(ROOT / "scripts" / "ui.py"), *rest], env)


if __name__ == "__main__":
    main(sys.argv[1:])
