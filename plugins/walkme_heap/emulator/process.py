"""The emulator in a process of its own (demo, benchmarks, measurements): start, wait, stop."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.request import urlopen


class EmulatorProcess:
    """``python -m walkme_heap.emulator`` on a free loopback port; ``flags`` are its CLI options."""

    def __init__(self, *flags: str, log: Path | None = None, timeout: float = 20.0) -> None:
        port_file = Path(tempfile.mkdtemp(prefix="walkme-heap-emulator-")) / "port"
        output = log.open("wb") if log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "walkme_heap.emulator",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                *flags,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            # not in the terminal's process group: a Ctrl-C reaches the caller, which stops it last
            start_new_session=True,
        )
        self._port_dir = port_file.parent
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            port = port_file.read_text().strip() if port_file.exists() else ""
            if port:
                self.url = f"http://127.0.0.1:{port}"
                try:
                    urlopen(f"{self.url}/_emulator/health", timeout=1).read()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        self.process.kill()
        raise RuntimeError(f"the Heap emulator did not start{f'; see {log}' if log else ''}")

    def stats(self) -> dict[str, Any]:
        with urlopen(f"{self.url}/_emulator/stats", timeout=10) as response:
            return json.load(response)

    def users(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The user profiles it holds: app id -> identity -> properties (``GET /_emulator/users``)."""
        with urlopen(f"{self.url}/_emulator/users", timeout=10) as response:
            return json.load(response)

    def stop(self) -> None:
        """Terminate it; kill it when it has not stopped within 10 s."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self._port_dir, ignore_errors=True)

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
