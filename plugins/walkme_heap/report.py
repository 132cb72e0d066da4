"""The replay report: a page in the Airflow UI (a FastAPI app served by the API server).

Per pipeline and window: the newest run's status and counts from the ledger (read, sent, already
sent, invalid, rejected, skipped), when it ran, and where its dead letters are; and a chart of the
events Heap acknowledged per day. ``/walkme-heap/report?pipeline=...&day=...`` highlights one day
(the replay task's "Replay report" link points there); ``/walkme-heap/api/days`` is the same as JSON.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse

from walkme_heap.config import default_home
from walkme_heap.ledger import DEFAULT_LEDGER_CONN_ID, Ledger

log = logging.getLogger(__name__)
URL_PREFIX = "/walkme-heap"


def open_ledger(conn_id: str = DEFAULT_LEDGER_CONN_ID) -> Ledger:
    """The ledger the replays write: the SQL connection if defined, else the default SQLite file."""
    try:
        from airflow.models.connection import Connection

        hook = Connection.get_connection_from_secrets(conn_id).get_hook()
        return Ledger(hook.get_conn, hook.placeholder)
    except Exception as exc:  # not defined (or not reachable from here): the embedded default
        log.debug("ledger connection %s not usable here (%s); using the SQLite default", conn_id, exc)
        path = default_home() / "ledger.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return Ledger.sqlite(str(path))


def report_data(ledger: Ledger, pipeline: str | None = None) -> dict[str, Any]:
    runs = [r for r in ledger.latest_runs() if pipeline in (None, "", r["pipeline"])]
    sent = [(p, d, n) for p, d, n in ledger.sent_per_day() if pipeline in (None, "", p)]
    return {"days": runs, "sent_per_day": [{"pipeline": p, "day": d, "events": n} for p, d, n in sent]}


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


def render(data: dict[str, Any], pipeline: str | None, day: str | None) -> str:
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
</style></head><body><h1>{title}</h1>{_chart(data["sent_per_day"])}
<table id="days"><thead><tr>{head}</tr></thead><tbody>{
        "".join(rows) or '<tr><td colspan="12">No replays recorded yet.</td></tr>'
    }</tbody></table></body></html>"""


def create_app() -> FastAPI:
    app = FastAPI(title="WalkMe to Heap replay report")

    @app.get("/api/days")
    def days(pipeline: str | None = Query(None)) -> dict[str, Any]:
        ledger = open_ledger()
        try:
            return report_data(ledger, pipeline)
        finally:
            ledger.close()

    @app.get("/report", response_class=HTMLResponse)
    def report(pipeline: str | None = Query(None), day: str | None = Query(None)) -> str:
        ledger = open_ledger()
        try:
            return render(report_data(ledger, pipeline), pipeline, day)
        finally:
            ledger.close()

    return app
