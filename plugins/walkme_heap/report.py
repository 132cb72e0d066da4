"""The replay report: a page in the Airflow UI (a FastAPI app served by the API server).

Per pipeline and window: the newest run's status and counts from the ledger (read, sent, already
sent, invalid, rejected, skipped), when it ran, and where the window's dead letters are; and a chart
of the events Heap acknowledged per day. The dead letters shown are the newest complete run's (the
file its run record names: on object stores each run writes a version of its own), whatever runs
came after it: a partial run (a trial's row limit, a skipped missing day) writes its own beside them,
named in the same cell, and a run that stopped on an error keeps none.

Per pipeline and event day (the UTC day of the events' time, not the run's window): how many events
were sent on time, how many arrived late (older than the window of the run that sent them) and by
which Airflow run, and how many were past the lateness bound (dead-lettered), as the newest run of
each window counted them.

The ledgers are those the configured pipelines write (each one's ``ledger_conn_id``), opened as the
replay tasks open them, once for the app's lifetime; the page names them. A ledger that cannot be
read makes the page say so (HTTP 503), never an empty report.

``/walkme-heap/report?pipeline=...&day=...`` highlights one day (the replay task's "Replay report"
link points there); ``/walkme-heap/api/days`` is the same as JSON.

Access: Airflow does not authenticate a plugin's app, and the report shows run errors (which may
quote Heap's answers) and dead-letter locations. Both routes take the user from Airflow's own
dependency (``GetUserDep``: the ``_token`` cookie the UI's login sets, or an ``Authorization: Bearer``
token), so nobody logged in gets 401; and show only the pipelines whose DAG Airflow's auth manager
lets that user read. A pipeline asked for by name that the user may not read is 403, and so is the
whole report for a user who may read none of the pipelines.
"""

from __future__ import annotations

import asyncio
import html
import logging
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.configuration import conf
from airflow.models.dag import DagModel
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from walkme_heap.config import DEFAULT_LEDGER_CONN_ID, ConfigError, Pipeline, config_path, load_pipelines
from walkme_heap.connections import Connections, UnusableConnection
from walkme_heap.deadletters import is_partial
from walkme_heap.hooks.connections import AirflowConnections
from walkme_heap.ledger import Ledger, open_ledger
from walkme_heap.ledger.acks import DayArrivals
from walkme_heap.ledger.runs import TABLE as RUNS_TABLE
from walkme_heap.operators.replay import task_heartbeat_timeout

T = TypeVar("T")
log = logging.getLogger(__name__)


class ReportUnavailable(RuntimeError):
    """A ledger the replays write cannot be read: the report says so instead of showing nothing."""


@dataclass(frozen=True)
class Configuration:
    """The configured pipelines, the ledgers they write, and what the page must say about them."""

    pipelines: list[Pipeline]
    ledger_conn_ids: list[str]
    notices: list[str] = field(default_factory=list)


def read_configuration() -> Configuration:
    """The pipelines file as the replay tasks read it; without it, the default ledger only."""
    dags_folder = conf.get("core", "dags_folder", fallback=None)
    try:
        pipelines = load_pipelines(dags_folder=dags_folder)
    except ConfigError as exc:
        notice = (
            f"The pipelines file ({config_path(dags_folder)}) could not be read, so only the ledger of "
            f"connection '{DEFAULT_LEDGER_CONN_ID}' is shown: {exc}"
        )
        return Configuration([], [DEFAULT_LEDGER_CONN_ID], [notice])
    return Configuration(pipelines, sorted({p.ledger_conn_id for p in pipelines}))


@dataclass(frozen=True)
class LedgerRecords:
    """What the ledgers hold, before anything is left out for the user who asked."""

    runs: list[dict[str, Any]]
    sent: list[tuple[str, str, str | None, int]]  # (pipeline, day, Heap app, events)
    ledgers: list[str]  # each ledger's description, for the page
    # The newest complete dead letters of each (pipeline, window label, shard or "").
    dead_letters: dict[tuple[str, str, str], str] = field(default_factory=dict)
    arrivals: list[DayArrivals] = field(default_factory=list)  # per pipeline and event day
    past_bound: list[tuple[str, str, int]] = field(default_factory=list)  # (pipeline, event day, events)

    @property
    def pipelines(self) -> set[str]:
        return (
            {run["pipeline"] for run in self.runs}
            | {sent[0] for sent in self.sent}
            | {a.pipeline for a in self.arrivals}
            | {p[0] for p in self.past_bound}
        )


class LedgerReader:
    """The report's ledgers: opened once and kept for the app's lifetime, read on a thread of their own.

    One thread, because a SQLite connection may only be used by the thread that opened it while the
    API server answers on a pool of threads; it also keeps each ledger to one connection, used by one
    read at a time. Each read still resolves the ledgers' connections (no database is opened for that),
    so a pipeline or connection defined since is seen; a ledger already open at that location is
    reused. A ledger whose read fails is closed, and opened afresh by the next read.
    """

    def __init__(self, connections: Callable[[], Connections] = AirflowConnections) -> None:
        self._connections = connections
        self._lock = threading.Lock()  # guards _executor
        self._executor: ThreadPoolExecutor | None = None
        self._open: dict[str, Ledger] = {}  # by location; used on the reader thread only

    def read(self, conn_ids: Sequence[str]) -> LedgerRecords:
        """Every run record and events-sent count of the ledgers of ``conn_ids``."""
        return self._on_reader_thread(self._read, conn_ids)

    def close(self) -> None:
        """Close every open ledger (when the API server stops); a later read opens them again."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.submit(self._close_all).result()
            executor.shutdown()

    def _on_reader_thread(self, function: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="walkme-heap-report-ledgers")
            future = self._executor.submit(function, *args)
        return future.result()

    def _read(self, conn_ids: Sequence[str]) -> LedgerRecords:
        runs: list[dict[str, Any]] = []
        sent: list[tuple[str, str, str | None, int]] = []
        dead_letters: dict[tuple[str, str, str], str] = {}
        arrivals: list[DayArrivals] = []
        past_bound: list[tuple[str, str, int]] = []
        ledgers = self._ledgers(conn_ids)
        for description, ledger in ledgers:
            try:
                runs += ledger.runs.latest(task_heartbeat_timeout())
                sent += ledger.acks.sent_per_day()
                dead_letters.update(complete_dead_letters(ledger))
                arrivals += ledger.acks.arrivals_per_day()
                past_bound += ledger.runs.past_bound_per_day()
            except Exception as exc:  # a database that cannot be reached or read: say which
                with suppress(Exception):  # a broken connection may not even close; it is dropped
                    ledger.close()  # the next read opens it afresh
                raise ReportUnavailable(f"the ledger ({description}) cannot be read: {exc}") from None
        return LedgerRecords(
            runs, sent, [description for description, _ in ledgers], dead_letters, arrivals, past_bound
        )

    def _ledgers(self, conn_ids: Sequence[str]) -> list[tuple[str, Ledger]]:
        """The open ledger of each connection, with its description as of now (undefined connections
        share the embedded file: one ledger)."""
        connections = self._connections()
        ledgers: dict[str, tuple[str, Ledger]] = {}
        for conn_id in conn_ids:
            try:
                ledger = open_ledger(conn_id, connections)
            except Exception as exc:
                problem = (
                    f"the ledger {exc}"
                    if isinstance(exc, UnusableConnection)
                    else f"a ledger cannot be opened: {exc}"
                )
                raise ReportUnavailable(problem) from None
            kept = self._open.setdefault(ledger.location, ledger)
            if kept is not ledger:
                ledger.close()  # never connected: the one open at that location serves
            ledgers.setdefault(ledger.location, (ledger.description, kept))
        return list(ledgers.values())

    def _close_all(self) -> None:
        ledgers, self._open = self._open, {}
        for ledger in ledgers.values():
            try:
                ledger.close()
            except Exception as exc:  # the others are closed all the same
                log.warning("replay report: closing the ledger (%s) failed: %s", ledger.description, exc)


def complete_dead_letters(ledger: Ledger) -> dict[tuple[str, str, str], str]:
    """The dead letters of the newest run of each pipeline, window and shard ("") that kept complete
    ones (a partial run's are under ``partial/``)."""
    newest: dict[tuple[str, str, str], str] = {}
    for run in ledger.database.fetch_records(
        f"SELECT pipeline, window_label, shard, dead_letters FROM {RUNS_TABLE.name} "
        "WHERE dead_letters IS NOT NULL ORDER BY id"
    ):
        if not is_partial(run["dead_letters"], run["pipeline"]):
            newest[(run["pipeline"], run["window_label"], run["shard"] or "")] = run["dead_letters"]
    return newest


def event_days(records: LedgerRecords, shown: Collection[str]) -> list[dict[str, Any]]:
    """Per pipeline ``shown`` and event day (in that order): the events sent on time, those sent late
    with the Airflow runs that sent them (``run_id`` None: a run outside Airflow), and those found
    later than the lateness bound. A pipeline in two ledgers (its ``ledger_conn_id`` changed) is
    summed."""
    days: dict[tuple[str, str], dict[str, Any]] = {}

    def entry(pipeline: str, day: str) -> dict[str, Any]:
        new = {"pipeline": pipeline, "day": day, "on_time": 0, "late": 0, "late_by_run": {}, "past_bound": 0}
        return days.setdefault((pipeline, day), new)

    for arrived in records.arrivals:
        if arrived.pipeline in shown:
            row = entry(arrived.pipeline, arrived.day)
            row["on_time"] += arrived.on_time
            row["late"] += arrived.late
            for run_id, events in arrived.late_by_run.items():
                row["late_by_run"][run_id] = row["late_by_run"].get(run_id, 0) + events
    for pipeline, day, events in records.past_bound:
        if pipeline in shown:
            entry(pipeline, day)["past_bound"] += events
    return [
        {**row, "late_by_run": [{"run_id": r, "events": n} for r, n in row["late_by_run"].items()]}
        for _, row in sorted(days.items())
    ]


def report_data(records: LedgerRecords, shown: Collection[str]) -> dict[str, Any]:
    """The newest run per pipeline, day and shard, the events sent per day, and the per-event-day
    arrivals (``event_days``) of the pipelines ``shown``. A run's ``dead_letters`` are the window's
    newest complete ones, its ``partial_dead_letters`` its own when it was a partial run."""
    newest: dict[tuple[str, str, str], dict[str, Any]] = {}  # one row per day and shard
    for run in records.runs:
        if run["pipeline"] in shown:
            key = (run["pipeline"], run["window_label"], run.get("shard") or "")
            if key not in newest or run["started_at"] > newest[key]["started_at"]:
                own = run.get("dead_letters")
                newest[key] = {
                    **run,
                    "dead_letters": records.dead_letters.get(key),
                    "partial_dead_letters": own if own and is_partial(own, run["pipeline"]) else None,
                }
    runs = sorted(newest.values(), key=lambda r: r.get("shard") or "")
    runs.sort(key=lambda r: r["window_start"], reverse=True)
    runs.sort(key=lambda r: r["pipeline"])
    return {
        "days": runs,
        "sent_per_day": [
            {"pipeline": p, "day": d, "app_id": a, "events": n}
            for p, d, a, n in sorted(records.sent, key=lambda s: (s[0], s[1], s[2] or ""))
            if p in shown
        ],
        "event_days": event_days(records, shown),
        "ledgers": records.ledgers,
    }


def auth_manager() -> BaseAuthManager:
    """Airflow's auth manager (a dependency of its own, so a test can put another in its place)."""
    return get_auth_manager()


AuthManagerDep = Annotated[BaseAuthManager, Depends(auth_manager)]
NONE_READABLE = "You may read none of the replay pipelines' DAGs."


class Access:
    """Which pipelines a user may see: those whose DAG Airflow's auth manager lets them read (GET),
    asked as Airflow's own DAG list asks it (``filter_authorized_dag_ids``, by team in multi-team mode).
    """

    def __init__(self, user: BaseUser, manager: BaseAuthManager, pipelines: Sequence[Pipeline]) -> None:
        self.user = user
        self.manager = manager
        self.configured = {p.name: p.dag_id for p in pipelines}
        self.decided: dict[str, bool] = {}  # by DAG id: one question per DAG and request

    def dag_id(self, pipeline: str) -> str:
        """The pipeline's DAG: the DAG factory's ``Pipeline.dag_id``; for a pipeline only the ledger
        still knows, the id the factory gives that name."""
        return self.configured.get(pipeline) or f"walkme_to_heap_{pipeline}"

    def readable(self, pipelines: Iterable[str]) -> set[str]:
        dag_ids = {name: self.dag_id(name) for name in pipelines}
        undecided = sorted(set(dag_ids.values()) - set(self.decided))
        if undecided:
            teams = (
                DagModel.get_dag_id_to_team_name_mapping(undecided)
                if conf.getboolean("core", "multi_team")
                else {}
            )
            by_team: dict[str | None, set[str]] = defaultdict(set)
            for dag_id in undecided:
                by_team[teams.get(dag_id)].add(dag_id)
            allowed: set[str] = set()
            for team, team_dag_ids in by_team.items():
                allowed |= self.manager.filter_authorized_dag_ids(
                    dag_ids=team_dag_ids, user=self.user, method="GET", team_name=team
                )
            self.decided.update({dag_id: dag_id in allowed for dag_id in undecided})
        return {name for name, dag_id in dag_ids.items() if self.decided[dag_id]}

    def require(self, pipeline: str) -> None:
        if not self.readable([pipeline]):
            raise HTTPException(
                403, f"You may not read the DAG {self.dag_id(pipeline)}, so not the replays of '{pipeline}'."
            )


def _chart(sent: list[dict[str, Any]]) -> str:
    """An inline SVG bar chart of events acknowledged per day (no JavaScript needed)."""
    if not sent:
        return "<p>No events acknowledged yet.</p>"
    width, height, pad = 760, 220, 40
    top = max(s["events"] for s in sent) or 1
    bar = min(48, max(4, (width - 2 * pad) // len(sent) - 4))
    bars = []
    for i, s in enumerate(sent):
        h = round((height - 2 * pad) * s["events"] / top)
        x, y = pad + i * (bar + 4), height - pad - h
        app = f" into app {s['app_id']}" if s["app_id"] else ""
        label = html.escape(f"{s['pipeline']} {s['day']}: {s['events']} events{app}")
        bars.append(
            f'<rect x="{x}" y="{y}" width="{bar}" height="{h}" fill="#5b4bc4"><title>{label}</title>'
            f'</rect><text x="{x}" y="{height - pad + 14}" font-size="10">{html.escape(s["day"][5:])}'
            "</text>"
        )
    return (
        f'<svg role="img" aria-label="events sent per day" width="{width}" height="{height}">'
        f'<text x="{pad}" y="20" font-size="12">events sent per day (max {top})</text>'
        + "".join(bars)
        + "</svg>"
    )


COLUMNS = [
    ("pipeline", "Pipeline"),
    ("window_label", "Day"),
    ("shard", "Shard"),
    ("status", "Status"),
    ("read_rows", "Read"),
    ("sent", "Sent"),
    ("already_sent", "Already sent"),
    ("invalid", "Invalid"),
    ("rejected", "Rejected"),
    ("skipped", "Skipped"),
    ("users", "Users updated / unchanged / refused"),
    ("finished_at", "Last run"),
    ("dead_letters", "Dead letters"),
]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "finished_at":
        return str(value)[:16].replace("T", " ") + " UTC"
    return str(value)


def _users_cell(run: dict[str, Any]) -> str:
    """User properties of a run that synced them ("" for one that did not)."""
    counts = [run.get(name) for name in ("users_updated", "users_unchanged", "users_refused")]
    return "" if all(c is None for c in counts) else " / ".join(str(c or 0) for c in counts)


def _dead_letters_cell(run: dict[str, Any]) -> str:
    """The window's complete dead letters, then on a line of its own a partial newest run's."""
    lines = [run["dead_letters"]] if run.get("dead_letters") else []
    if run.get("partial_dead_letters"):
        lines.append(f"partial run: {run['partial_dead_letters']}")
    return "\n".join(lines)


PAST_BOUND_HINT = "in the dead letters (later_than_lateness): the manual run the task log names replays them"


def _event_days(days: list[dict[str, Any]], day: str | None) -> str:
    """A table per pipeline of its event days, newest first: sent on time, sent late (by which
    Airflow run), past the lateness bound; the ``day`` asked for is highlighted."""
    by_pipeline: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in sorted(days, key=lambda e: e["day"], reverse=True):
        by_pipeline[entry["pipeline"]].append(entry)
    sections = []
    for pipeline in sorted(by_pipeline):
        rows = []
        for entry in by_pipeline[pipeline]:
            anchor = html.escape(f"event-day-{pipeline}-{entry['day']}")
            mark = ' class="selected"' if day and entry["day"] == day else ""
            runs = "".join(
                '<span class="by-run">'
                + html.escape(f"by run {r['run_id']}" if r["run_id"] else "by a run outside Airflow")
                + f": {r['events']}</span>"
                for r in entry["late_by_run"]
            )
            hint = f'<span class="hint">{html.escape(PAST_BOUND_HINT)}</span>' if entry["past_bound"] else ""
            rows.append(
                f'<tr id="{anchor}"{mark}><td data-col="event_day">{html.escape(entry["day"])}</td>'
                f'<td data-col="on_time">{entry["on_time"]}</td>'
                f'<td data-col="late">{entry["late"]}{runs}</td>'
                f'<td data-col="past_bound">{entry["past_bound"]}{hint}</td></tr>'
            )
        sections.append(
            f"<h3>{html.escape(pipeline)}</h3>"
            f'<table class="event-days" id="{html.escape(f"event-days-{pipeline}")}"><thead><tr>'
            "<th>Event day</th><th>Sent on time</th><th>Sent late</th><th>Past the bound</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    if not sections:
        return ""
    heading = "Events per event day: sent on time, sent late, past the lateness bound"
    return f'<h2 id="event-days">{heading}</h2>' + "".join(sections)


def render(data: dict[str, Any], pipeline: str | None, day: str | None, notices: Sequence[str] = ()) -> str:
    rows = []
    for run in data["days"]:
        shard = str(run.get("shard") or "").replace("/", "-of-")
        anchor = f"day-{run['pipeline']}-{run['window_label']}" + (f"-shard-{shard}" if shard else "")
        mark = (
            ' class="selected"'
            if day and run["window_label"].startswith(day) and (not pipeline or run["pipeline"] == pipeline)
            else ""
        )
        cells = "".join(
            f'<td data-col="{key}">'
            + html.escape(
                _dead_letters_cell(run)
                if key == "dead_letters"
                else _users_cell(run)
                if key == "users"
                else _cell(key, run.get(key))
            )
            + "</td>"
            for key, _ in COLUMNS
        )
        rows.append(f'<tr id="{html.escape(anchor)}"{mark}>{cells}</tr>')
    head = "".join(f"<th>{title}</th>" for _, title in COLUMNS)
    title = f"WalkMe to Heap replays{': ' + html.escape(pipeline) if pipeline else ''}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin-top: 16px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; }}
th {{ background: #f0eefc; }} tr.selected td {{ background: #fff3c4; font-weight: bold; }}
td[data-col=status] {{ text-transform: uppercase; }}
td[data-col=dead_letters] {{ word-break: break-all; white-space: pre-line; }}
.by-run, .hint {{ display: block; color: #555; font-size: 90%; }} h3 {{ margin: 16px 0 0; }}
.notice {{ background: #fff3c4; padding: 8px; }} .ledgers {{ color: #555; }}
</style></head><body><h1>{title}</h1>{"".join(f'<p class="notice">{html.escape(n)}</p>' for n in notices)}
<p class="ledgers">Ledger: {html.escape("; ".join(data["ledgers"]))}</p>{_chart(data["sent_per_day"])}
<table id="days"><thead><tr>{head}</tr></thead><tbody>{
        "".join(rows) or '<tr><td colspan="13">No replays recorded yet.</td></tr>'
    }</tbody></table>{_event_days(data.get("event_days", []), day)}</body></html>"""


def _page(message: str) -> str:
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>WalkMe to Heap replays</title></head>'
        f"<body><h1>WalkMe to Heap replays</h1><p>{message}</p></body></html>"
    )


def _refusal(request: Request, exc: StarletteHTTPException) -> str:
    """The page's answer to a refusal: the reason, and for nobody logged in, a way to log in."""
    if exc.status_code != 401:
        return _page(html.escape(str(exc.detail)))
    manager = request.app.dependency_overrides.get(auth_manager, auth_manager)()
    login = manager.get_url_login(next_url=str(request.url))
    return _page(
        f"The report is for logged-in Airflow users ({html.escape(str(exc.detail))}): "
        f'<a href="{html.escape(login)}">log in</a>.'
    )


def create_app(reader: LedgerReader | None = None) -> FastAPI:
    """The report's routes. The ledgers are read through one ``LedgerReader``, closed when the API
    server stops (it runs the lifespan of each plugin app)."""
    reader = reader or LedgerReader()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(reader.close)

    app = FastAPI(title="WalkMe to Heap replay report", lifespan=lifespan)

    def read(
        user: BaseUser, manager: BaseAuthManager, pipeline: str | None
    ) -> tuple[dict[str, Any], list[str]]:
        """The report ``user`` may see. Why a ledger cannot be read (which may name database hosts) is
        told only to a user who may read the pipeline asked for, or one of the configured ones (to
        any logged-in user when the API server has no pipelines file: who may read what is not known)."""
        config = read_configuration()
        access = Access(user, manager, config.pipelines)
        if pipeline:
            access.require(pipeline)
        try:
            records = reader.read(config.ledger_conn_ids)
        except ReportUnavailable:
            if not pipeline and config.pipelines and not access.readable(p.name for p in config.pipelines):
                raise HTTPException(403, NONE_READABLE) from None
            raise
        if pipeline:
            shown = {pipeline}
        else:
            names = records.pipelines | {p.name for p in config.pipelines}
            shown = access.readable(names)
            if names and not shown:
                raise HTTPException(403, NONE_READABLE)
        return {**report_data(records, shown), "notices": config.notices}, config.notices

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, exc: StarletteHTTPException) -> Response:
        """The page refuses with a page; the API as Airflow's API does (JSON ``detail``)."""
        if request.url.path.endswith("/report") and exc.status_code in (401, 403):
            return HTMLResponse(_refusal(request, exc), status_code=exc.status_code, headers=exc.headers)
        return await http_exception_handler(request, exc)

    @app.get("/api/days", response_model=None)
    def days(
        user: GetUserDep, manager: AuthManagerDep, pipeline: str | None = Query(None)
    ) -> dict[str, Any] | JSONResponse:
        try:
            return read(user, manager, pipeline)[0]
        except ReportUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)

    @app.get("/report", response_class=HTMLResponse)
    def report(
        user: GetUserDep,
        manager: AuthManagerDep,
        pipeline: str | None = Query(None),
        day: str | None = Query(None),
    ) -> HTMLResponse:
        try:
            data, notices = read(user, manager, pipeline)
        except ReportUnavailable as exc:
            return HTMLResponse(
                _page(f"The report is not available: {html.escape(str(exc))}"), status_code=503
            )
        return HTMLResponse(render(data, pipeline, day, notices))

    return app
