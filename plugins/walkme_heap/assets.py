"""The Airflow Asset of a pipeline: "this pipeline's events of a window are in its Heap app".

URI ``walkme-heap://<heap_conn_id>/<pipeline>``, name ``walkme_heap.<pipeline>``:

- the Heap connection's id, not the app id: the app id is the connection's login, which a DAG file
  could only read with a connection lookup (secrets backend or metadata database) on every parse;
  the connection id is in pipelines.yaml. Each asset event's extra names the app the run sent to.
- a scheme of this project's own: ``heap://`` would read as a Heap host, which a connection id is
  not, and a scheme nobody else registers stays ours. Airflow 3.3 accepts a scheme without a
  registered handler as it is (no warning); the provider info registers ``sanitize_uri`` for it, so a
  malformed ``walkme-heap`` URI fails when its DAG is parsed.
- downstream DAGs schedule on the asset itself (``pipeline_asset``), not on
  ``Asset.ref(name=...)``: under Airflow 3.3's scheduler a run started through a name reference is
  handed none of the events (``triggering_asset_events`` empty).

Light on purpose: Airflow's providers manager imports this module (the URI handler) in every
component; no pandas, no Airflow at import time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult

from walkme_heap.summary import ReplaySummary

if TYPE_CHECKING:
    from airflow.sdk import Asset

SCHEME = "walkme-heap"
NAME_PREFIX = "walkme_heap."
_PIPELINE_PATH = re.compile(r"^/[A-Za-z0-9_]+$")  # one pipeline name (config.py's rule)


def asset_name(pipeline: str) -> str:
    """The asset's name, what downstream DAGs refer to."""
    return f"{NAME_PREFIX}{pipeline}"


def asset_uri(heap_conn_id: str, pipeline: str) -> str:
    return f"{SCHEME}://{heap_conn_id}/{pipeline}"


def pipeline_asset(pipeline: str, heap_conn_id: str | None = None) -> Asset:
    """The asset a pipeline's DAG declares as the outlet of the task that ends its window (the
    replay task, or a sharded day's summary task); the same object for a downstream DAG's schedule.

    :param pipeline: the pipeline's name in pipelines.yaml.
    :param heap_conn_id: its Heap connection (default ``heap_default``, as in pipelines.yaml).
    """
    from airflow.sdk import Asset

    if heap_conn_id is None:
        from walkme_heap.config import DEFAULT_HEAP_CONN_ID

        heap_conn_id = DEFAULT_HEAP_CONN_ID
    return Asset(
        name=asset_name(pipeline),
        uri=asset_uri(heap_conn_id, pipeline),
        extra={"pipeline": pipeline, "heap_conn_id": heap_conn_id},
    )


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Airflow's URI handler of the ``walkme-heap`` scheme (provider info ``asset-uris``): a URI that
    does not name a connection and one pipeline is refused when its DAG is parsed, not left to
    match nothing. Airflow has lower-cased the scheme, dropped the fragment and trailing slashes."""
    if not uri.netloc:
        raise ValueError(
            f"a {SCHEME} asset URI names the Heap connection: {SCHEME}://<heap_conn_id>/<pipeline>"
        )
    if not _PIPELINE_PATH.match(uri.path):
        raise ValueError(
            f"a {SCHEME} asset URI names one pipeline (letters, digits, underscores) after the "
            f"connection: {SCHEME}://<heap_conn_id>/<pipeline>, got path {uri.path!r}"
        )
    if uri.query:
        raise ValueError(f"a {SCHEME} asset URI takes no query, got {uri.query!r}")
    return uri


def not_in_heap(parts: Sequence[ReplaySummary], row_limit: int | None) -> str:
    """Why a finished run must not announce its window as in Heap ("" when it may).

    A dry run sent nothing; a trial run that reached its row limit sent part of the window. A run
    that sent nothing new (all already sent, or an empty day) is announced: the window is in Heap.
    A day whose file was missing under ``on_missing: skip`` is announced too: that setting declares
    a missing file an empty day (a later run still sends the file if it lands within the lateness).

    :param parts: the window's summaries: the run's, or a sharded day's shards'.
    :param row_limit: the run's ``limit`` param (a trial run), if any.
    """
    if any(part.dry_run for part in parts):
        return "a dry run sends nothing"
    if row_limit is not None and any(part.read >= row_limit for part in parts):
        return f"a trial run read only its row limit of {row_limit} rows"
    return ""


def event_extra(summary: ReplaySummary) -> dict[str, Any]:
    """The asset event's extra: which window reached which app, and the counts (small, no identity)."""
    return {
        "pipeline": summary.pipeline,
        "window": dict(summary.window),
        "app_id": summary.app_id,
        "read": summary.read,
        "sent": summary.sent,
        "already_sent": summary.already_sent,
        "invalid": summary.total_invalid,
        "rejected": summary.total_rejected,
        "skipped": summary.total_skipped,
        "force": summary.force,
    }
