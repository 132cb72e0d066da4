"""The replay report: a page in the Airflow UI (a FastAPI app served by the API server).

Per pipeline and window: the newest run's status and counts from the ledger (read, sent, already
sent, invalid, rejected, skipped), when it ran, and where its dead letters are; and a chart of the
events Heap acknowledged per day. The ledgers are those the configured pipelines write (each one's
``ledger_conn_id``), opened as the replay tasks open them; the page names them. A ledger that
cannot be read makes the page say so (HTTP 503), never an empty report.

``/walkme-heap/report?pipeline=...&day=...`` highlights one day (the replay task's "Replay report"
link points there); ``/walkme-heap/api/days`` is the same as JSON.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse

from walkme_heap.config import DEFAULT_LEDGER_CONN_ID, ConfigError, config_path, load_pipelines
from walkme_heap.connections import Connections, UnusableConnection
from walkme_heap.hooks.connections import AirflowConnections
from walkme_heap.ledger import Ledger, open_ledger

URL_PREFIX = "/walkme-heap"


class ReportUnavailable(RuntimeError):
    """A ledger the replays write cannot be read: the report says so instead of showing nothing."""


def open_ledgers(connections: Connections) -> tuple[list[Ledger], list[str]]:
    """The ledgers the configured pipelines write (each pipeline's ``ledger_conn_id``), opened the
    way the replay tasks open them, and notices for the page (what could not be known)."""
    notices: list[str] = []
    try:
        conn_ids = sorted({p.ledger_conn_id for p in load_pipelines()})
    except ConfigError as exc:
        conn_ids = [DEFAULT_LEDGER_CONN_ID]
        notices.append(
            f"The pipelines file ({config_path()}) could not be read, so only the ledger of "
            f"connection '{DEFAULT_LEDGER_CONN_ID}' is shown: {exc}"
        )
    ledgers: dict[str, Ledger] = {}  # by location: undefined connections share the embedded file
    try:
        for conn_id in conn_ids:
            ledger = open_ledger(conn_id, connections)
            if ledger.location in ledgers:
                ledger.close()
            else:
                ledgers[ledger.location] = ledger
    except Exception as exc:
        for ledger in ledgers.values():
            ledger.close()
        problem = (
            f"the ledger {exc}"
            if isinstance(exc, UnusableConnection)
            else f"a ledger cannot be opened: {exc}"
        )
        raise ReportUnavailable(problem) from None
    return list(ledgers.values()), notices


def report_data(ledgers: Sequence[Ledger], pipeline: str | None = None) -> dict[str, Any]:
    """Runs and events sent per day from every ledger, of one pipeline or all."""
    runs: list[dict[str, Any]] = []
    sent: list[tuple[str, str, int]] = []
    for ledger in ledgers:
        try:
            runs += ledger.runs.latest()
            sent += ledger.acks.sent_per_day()
        except Exception as exc:  # a database that cannot be reached or read: say which
            raise ReportUnavailable(f"the ledger ({ledger.description}) cannot be read: {exc}") from None
    newest: dict[tuple[str, str, str], dict[str, Any]] = {}  # one row per day and shard
    for run in runs:
        if pipeline in (None, "", run["pipeline"]):
            key = (run["pipeline"], run["window_label"], run.get("shard") or "")
            if key not in newest or run["started_at"] > newest[key]["started_at"]:
                newest[key] = run
    runs = sorted(newest.values(), key=lambda r: r.get("shard") or "")
    runs.sort(key=lambda r: r["window_start"], reverse=True)
    runs.sort(key=lambda r: r["pipeline"])
    return {
        "days": runs,
        "sent_per_day": [
            {"pipeline": p, "day": d, "events": n} for p, d, n in sorted(sent) if pipeline in (None, "", p)
        ],
        "ledgers": [ledger.description for ledger in ledgers],
    }


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
        label = html.escape(f"{s['pipeline']} {s['day']}: {s['events']} events")
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
    ("finished_at", "Last run"),
    ("dead_letters", "Dead letters"),
]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "finished_at":
        return str(value)[:16].replace("T", " ") + " UTC"
    return str(value)


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
            f'<td data-col="{key}">{html.escape(_cell(key, run.get(key)))}</td>' for key, _ in COLUMNS
        )
        rows.append(f'<tr id="{html.escape(anchor)}"{mark}>{cells}</tr>')
    head = "".join(f"<th>{title}</th>" for _, title in COLUMNS)
    title = f"WalkMe to Heap replays{': ' + html.escape(pipeline) if pipeline else ''}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin-top: 16px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; }}
th {{ background: #f0eefc; }} tr.selected td {{ background: #fff3c4; font-weight: bold; }}
td[data-col=status] {{ text-transform: uppercase; }} td[data-col=dead_letters] {{ word-break: break-all; }}
.notice {{ background: #fff3c4; padding: 8px; }} .ledgers {{ color: #555; }}
</style></head><body><h1>{title}</h1>{"".join(f'<p class="notice">{html.escape(n)}</p>' for n in notices)}
<p class="ledgers">Ledger: {html.escape("; ".join(data["ledgers"]))}</p>{_chart(data["sent_per_day"])}
<table id="days"><thead><tr>{head}</tr></thead><tbody>{
        "".join(rows) or '<tr><td colspan="12">No replays recorded yet.</td></tr>'
    }</tbody></table></body></html>"""


def _page(message: str) -> str:
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>WalkMe to Heap replays</title></head>'
        f"<body><h1>WalkMe to Heap replays</h1><p>The report is not available: {html.escape(message)}</p>"
        "</body></html>"
    )


def create_app() -> FastAPI:
    """The report's routes; every request reads the ledgers afresh."""
    app = FastAPI(title="WalkMe to Heap replay report")

    def read(pipeline: str | None) -> tuple[dict[str, Any], list[str]]:
        ledgers, notices = open_ledgers(AirflowConnections())
        try:
            data = report_data(ledgers, pipeline)
        finally:
            for ledger in ledgers:
                ledger.close()
        return {**data, "notices": notices}, notices

    @app.get("/api/days", response_model=None)
    def days(pipeline: str | None = Query(None)) -> dict[str, Any] | JSONResponse:
        try:
            return read(pipeline)[0]
        except ReportUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)

    @app.get("/report", response_class=HTMLResponse)
    def report(pipeline: str | None = Query(None), day: str | None = Query(None)) -> HTMLResponse:
        try:
            data, notices = read(pipeline)
        except ReportUnavailable as exc:
            return HTMLResponse(_page(str(exc)), status_code=503)
        return HTMLResponse(render(data, pipeline, day, notices))

    return app
