"""Write the bundled sample exports (deterministic): ``python scripts/make_sample_exports.py``.

The files carry the traps of real WalkMe exports (walkme-exports.md): a BOM, quoted newlines,
non-ASCII text, placeholder and missing identities, a test-webhook row, non-production rows, late
rows from the previous day, a duplicate delivery, an over-long value and a malformed line.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "include" / "sample_exports"

WEBHOOK_COLUMNS = [
    "wm.euId",
    "created_at",
    "type",
    "oType",
    "oId",
    "oName",
    "sId",
    "value",
    "wm.env",
    "wm.language",
    "ctx.location.protocol",
    "ctx.location.hostname",
    "ctx.location.pathname",
    "ctx.title",
    "env.browser.name",
    "env.browser.version",
    "env.os.name",
    "wm.userVars.department",
    "wm.userVars.plan",
]
ITEMS = [
    ("wt", "play", "152605", "Automate IT Deploy Applications"),
    ("wt", "goalReach", "152605", "Automate IT Deploy Applications"),
    ("shoutout", "play", "88121", "New: expense reports,\nnow in one click"),
    ("launcher", "click", "40977", "Help me file a ticket"),
    ("survey", "submitted", "7731", "How easy was it to submit your request?"),
    ("task", "", "9102", "Complete your profile"),
    ("smartTip", "visible", "5510", "Cost center format"),
    ("wt", "play", "152777", "経費精算の申請方法"),
]
PAGES = [
    ("/app/requests", "Requests – Service Portal"),  # noqa: RUF001 - non-ASCII on purpose
    ("/app/expenses", "経費精算"),
    ("/app/home", "Home"),
]
BROWSERS = [("Chrome", "120.0"), ("Edge", "121.0"), ("Firefox", "122.0"), ("Safari", "17.2")]


def _user(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def _row(rng: random.Random, when: datetime, users: list[str]) -> dict[str, str]:
    item_type, event_type, item_id, name = rng.choice(ITEMS)
    path, title = rng.choice(PAGES)
    browser, version = rng.choice(BROWSERS)
    return {
        "wm.euId": rng.choice(users),
        "created_at": str(int(when.timestamp() * 1000)),
        "type": event_type,
        "oType": item_type,
        "oId": item_id,
        "oName": name,
        "sId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "value": str(rng.randint(1, 10)) if item_type == "survey" else "",
        "wm.env": "0",
        "wm.language": rng.choice(["English", "Japanese", "Deutsch"]),
        "ctx.location.protocol": "https:",
        "ctx.location.hostname": "portal.example.com",
        "ctx.location.pathname": path,
        "ctx.title": title,
        "env.browser.name": browser,
        "env.browser.version": version,
        "env.os.name": rng.choice(["Windows", "Mac OS", "Linux"]),
        "wm.userVars.department": rng.choice(["Finance", "IT", "Sales", ""]),
        "wm.userVars.plan": rng.choice(["", "enterprise"]),
    }


def webhook_day(day: datetime, rows: int, seed: int) -> str:
    rng = random.Random(seed)
    users = [_user(rng) for _ in range(40)]
    records = []
    for _ in range(rows):
        when = day + timedelta(milliseconds=rng.randrange(86_400_000))
        records.append(_row(rng, when, users))
    records.sort(key=lambda r: int(r["created_at"]))
    traps = []
    for identity in ("", "null", "undefined", "   "):
        bad = _row(rng, day + timedelta(hours=3), users)
        bad["wm.euId"] = identity
        traps.append(bad)
    long_id = _row(rng, day + timedelta(hours=4), users)
    long_id["wm.euId"] = "x" * 300
    traps.append(long_id)
    test_hook = {c: f"{{{{{c}}}}}" for c in WEBHOOK_COLUMNS}  # WalkMe's "test" button
    traps.append(test_hook)
    for hour in (5, 6, 7):
        preview = _row(rng, day + timedelta(hours=hour), users)
        preview["wm.env"] = "1"
        traps.append(preview)
    for minute in range(5):  # late rows of the previous day, in this day's file
        traps.append(_row(rng, day - timedelta(minutes=10 + minute), users))
    long_text = _row(rng, day + timedelta(hours=8), users)
    long_text["ctx.title"] = "Quarterly report " + "ä" * 1500
    traps.append(long_text)
    traps.append(dict(records[10]))  # an at-least-once redelivery of the same event
    rows_out = records + traps
    rng.shuffle(rows_out)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=WEBHOOK_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows_out)
    text = buffer.getvalue()
    header, _, body = text.partition("\n")
    malformed = ",".join(["broken"] * (len(WEBHOOK_COLUMNS) + 3))  # too many fields
    return "\ufeff" + header + "\n" + malformed + "\n" + body


REPORT_COLUMNS = [
    "Account Name",
    "End User ID",
    "Date (UTC)",
    "Question Date & Time (UTC)",
    "Survey Name",
    "Survey ID",
    "Question",
    "Answer",
    "Answer Freetext",
    "User Type",
]


def survey_report_day(day: datetime, rows: int, seed: int) -> str:
    rng = random.Random(seed)
    users = [f"user-{i:04d}@example.com" for i in range(30)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for _ in range(rows):
        when = day + timedelta(seconds=rng.randrange(86_400))
        writer.writerow(
            [
                "Example Corp",
                rng.choice(users),
                when.strftime("%Y-%m-%d"),
                when.strftime("%Y-%m-%d %H:%M:%S"),
                "Portal satisfaction",
                "7731",
                "How easy was it to submit your request?",
                str(rng.randint(1, 5)),
                rng.choice(["", "Great", "Too many steps,\nplease simplify", "とても簡単"]),
                rng.choice(["Employee", "Manager"]),
            ]
        )
    writer.writerow(
        [
            "Example Corp",
            "",
            "2024-03-10",
            "2024-03-10 12:00:00",
            "Portal satisfaction",
            "7731",
            "How easy was it to submit your request?",
            "3",
            "",
            "Employee",
        ]
    )
    return buffer.getvalue()


def main() -> None:
    webhooks = ROOT / "webhooks"
    reports = ROOT / "reports"
    webhooks.mkdir(parents=True, exist_ok=True)
    reports.mkdir(parents=True, exist_ok=True)
    for offset, rows in ((0, 480), (1, 360)):
        day = datetime(2024, 3, 10, tzinfo=UTC) + timedelta(days=offset)
        path = webhooks / f"walkme_webhooks_{day:%Y-%m-%d}.csv"
        path.write_text(webhook_day(day, rows, seed=100 + offset), encoding="utf-8")
        report = reports / f"survey_report_{day:%Y-%m-%d}.csv.gz"
        data = survey_report_day(day, rows // 4, seed=200 + offset).encode("utf-8")
        report.write_bytes(gzip.compress(data, mtime=0))
    print(f"wrote sample exports under {ROOT}")


if __name__ == "__main__":
    main()
