"""Installed as a user installs it: the wheel, into a fresh venv holding only Airflow (same pins).

The Airflow home has a DAGs folder with a DAG file and a pipelines file only, and no plugins folder:
everything else (the connection type and its form, the operators, the report page and its
navigation entry, the extra link) must come from the installed distribution. The venv is built once
per run and every check shares it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import DATA, ROOT, received, running_api_server
from tests.test_report import BROWSER_FLAGS, PASSWORDS, _CookieSetter, chromium, fetch, log_in
from walkme_heap.emulator import HeapEmulator

pytestmark = pytest.mark.e2e
DAG_ID = "walkme_to_heap_installed"
DAG_FILE = """\
\"\"\"Airflow DAGs replaying WalkMe exports into Heap: one DAG per pipeline in pipelines.yaml.\"\"\"

from walkme_heap.dag_factory import build_dags

globals().update(build_dags())  # pipelines.yaml in this DAGs folder
"""
PIPELINES = """\
pipelines:
  installed:
    start_date: 2024-03-10
    end_date: 2024-03-11
    retries: 0
    max_invalid_ratio: 0.5
    source:
      path: {exports}/walkme_webhooks_{{date:%Y-%m-%d}}.csv
    mapping:
      event_name:
        event_type: complete
      properties:
        exclude: [oType]
"""


@dataclass
class Installed:
    """The fresh venv's Airflow, its home, and the emulator it replays into."""

    home: Path
    env: dict[str, str]
    emulator: HeapEmulator
    dags_test: subprocess.CompletedProcess[str]

    def airflow(self, *args: str) -> str:
        result = subprocess.run(
            [str(self.home / "venv" / "bin" / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, (
            f"airflow {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        return result.stdout


def _run(*command: str | Path, env: dict[str, str] | None = None, timeout: float = 1200) -> None:
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    home = tmp_path_factory.mktemp("installed")
    wheels = home / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", wheels, ROOT)
    (wheel,) = wheels.glob("walkme_heap-*.whl")
    venv.EnvBuilder(with_pip=True).create(home / "venv")
    pip = home / "venv" / "bin" / "pip"
    # only Airflow and the wheel: what the wheel needs must come from its own metadata
    _run(pip, "install", "--quiet", "-c", ROOT / "constraints.txt", "apache-airflow==3.3.2", wheel)

    (home / "dags").mkdir()
    (home / "exports").mkdir()
    shutil.copy(DATA / "e2e" / "walkme_webhooks_2024-03-10.csv", home / "exports")
    (home / "dags" / "walkme_to_heap.py").write_text(DAG_FILE)
    (home / "dags" / "pipelines.yaml").write_text(PIPELINES.format(exports=home / "exports"))
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "CI")
    with HeapEmulator() as emulator:
        env = {
            **{k: os.environ[k] for k in keep if k in os.environ},
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),  # does not exist: nothing from a folder
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "viewer:admin,nobody:",  # the form: admins
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW_CONN_HEAP_DEFAULT": json.dumps(
                {"conn_type": "heap", "host": emulator.url, "login": "installed-app"}
            ),
            "WALKME_HEAP_HOME": str(home / "walkme_heap"),
        }
        result = Installed(home, env, emulator, None)  # type: ignore[arg-type]
        result.airflow("db", "migrate")
        result.airflow("dags", "reserialize")  # what a DAG processor does: the DAG into the database
        result.dags_test = subprocess.run(
            [str(home / "venv" / "bin" / "airflow"), "dags", "test", DAG_ID, "2024-03-11"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        yield result


def test_the_wheel_declares_every_runtime_dependency(installed: Installed) -> None:
    check = subprocess.run(
        [str(installed.home / "venv" / "bin" / "pip"), "check"], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout
    found = subprocess.run(
        [
            str(installed.home / "venv" / "bin" / "python"),
            "-c",
            "import walkme_heap; print(walkme_heap.__file__)",
        ],
        env=installed.env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "site-packages" in found and str(ROOT) not in found  # the installed copy, not this folder


def test_airflow_lists_the_provider_its_plugin_and_the_dag_without_import_errors(
    installed: Installed,
) -> None:
    providers = installed.airflow("providers", "list")
    assert re.search(r"walkme-heap\s", providers), providers
    plugins = installed.airflow("plugins", "--output", "json")
    (plugin,) = [p for p in json.loads(plugins) if p["name"] == "walkme_heap"]
    assert "walkme_heap.airflow_plugin" in json.dumps(plugin)
    hooks = installed.airflow("providers", "hooks", "--output", "json")
    assert {"connection_type": "heap"}.items() <= next(
        h for h in json.loads(hooks) if h["connection_type"] == "heap"
    ).items()
    assert "No data found" in installed.airflow("dags", "list-import-errors")
    assert DAG_ID in installed.airflow("dags", "list")
    print(providers, plugins, sep="\n")


def test_dags_test_replays_the_day_into_heap(installed: Installed) -> None:
    run = installed.dags_test
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    got = received(installed.emulator)
    assert len(got) == 6 and {e["app_id"] for e in got} == {"installed-app"}


@pytest.fixture(scope="module")
def api_server(installed: Installed) -> Iterator[str]:
    airflow = [str(installed.home / "venv" / "bin" / "airflow")]
    with running_api_server(airflow, installed.env, installed.home / "api-server.log") as url:
        yield url


def test_the_connection_form_has_the_heap_fields(installed: Installed, api_server: str) -> None:
    token = log_in(api_server, "viewer")
    status, body = fetch(f"{api_server}/ui/connections/hook_meta", {"Authorization": f"Bearer {token}"})
    assert status == 200, body
    (heap,) = [h for h in json.loads(body) if h["connection_type"] == "heap"]
    assert heap["hook_name"] == "Heap"
    fields = json.dumps(heap)
    for label in ("App ID", "Region", "App rate limit (events/minute)", "Retry budget per batch (s)"):
        assert label in fields, fields


def test_the_report_page_is_served_by_the_api_server(
    installed: Installed, api_server: str, tmp_path: Path
) -> None:
    assert installed.dags_test.returncode == 0
    browser = chromium()
    handler = type("ViewerCookie", (_CookieSetter,), {"token": log_in(api_server, "viewer")})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = f"http://127.0.0.1:{server.server_address[1]}/go?{api_server}/walkme-heap/report?pipeline=installed"
        dom = subprocess.run(
            [browser, *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    finally:
        server.shutdown()
        server.server_close()
    row = re.search(r'<tr id="day-installed-2024-03-10"[^>]*>(.*?)</tr>', dom, re.S)
    assert row, dom[-2000:]
    cells = dict(re.findall(r'<td data-col="(\w+)">([^<]*)</td>', row.group(1)))
    assert (cells["sent"], cells["status"]) == ("6", "success")
    token = log_in(api_server, "viewer")
    status, body = fetch(f"{api_server}/api/v2/plugins", {"Authorization": f"Bearer {token}"})
    (plugin,) = [p for p in json.loads(body)["plugins"] if p["name"] == "walkme_heap"]
    (view,) = plugin["external_views"]  # the navigation entry under Browse
    assert (status, view["url_route"], view["href"]) == (200, "walkme-heap-report", "/walkme-heap/report")
