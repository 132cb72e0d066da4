"""OpenLineage facets of a replay task: what it read and what it wrote into Heap.

Inputs: the window's files (OpenLineage naming: a local file is namespace ``file`` and its absolute
path; object storage ``s3://<bucket>`` / ``gs://<bucket>`` (other fsspec schemes alike) and the key),
or the table or query of a SQL source, named by the connection's own hook and the provider's SQL
parser as common-sql's operators name theirs (``postgres://<host>:<port>``, ``<db>.<schema>.<table>``).

Output: the Heap app, namespace ``heap://<host of the connection's base URL>``, name the app id, with
``outputStatistics.rowCount`` = the events Heap acknowledged in this try. Why: a Heap app (environment)
is the dataset events land in, and the app id is unique only within a Heap region, which the API host
names (``heapanalytics.com``, ``c.eu.heap-api.com``); every pipeline sending to one app writes the same
dataset, so lineage shows all sources feeding it. ``heap`` rather than ``https``: the dataset is the
app's data, not an HTTP resource. A dry run wrote nothing: no output.

The OpenLineage provider is optional: its imports are inside the functions, and nothing here sends
anything: the provider's listener asks the operator for these facets and emits them itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from walkme_heap.sources.base import Source
from walkme_heap.sources.spec import SourceSpec
from walkme_heap.summary import ReplaySummary

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk.types import Logger

HEAP_NAMESPACE_SCHEME = "heap"
# The object-storage schemes OpenLineage names differently from fsspec.
_SCHEMES = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}
# The schema of an unqualified table for hooks that do not describe their database to OpenLineage.
_DEFAULT_SCHEMAS = {"sqlite": "main"}


@dataclass
class ReplayRecord:
    """What a replay task read and what reached Heap, kept on the operator during ``execute`` for
    the OpenLineage listener, which asks after the task ended (same process)."""

    spec: SourceSpec
    source: Source  # as opened: a file source's ``found`` files, a SQL source's ``query``
    summary: ReplaySummary | None = None  # the run's, or a failed run's counts so far


def file_dataset_id(url: str) -> tuple[str, str]:
    """(namespace, name) of a file under OpenLineage's naming spec."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        return "file", parts.path if scheme else url
    scheme = _SCHEMES.get(scheme, scheme)
    return f"{scheme}://{parts.netloc}", parts.path.lstrip("/")


def heap_dataset_id(base_url: str, app_id: str) -> tuple[str, str]:
    """(namespace, name) of a Heap app: the API host (its region) and the app id."""
    return f"{HEAP_NAMESPACE_SCHEME}://{urlsplit(base_url).netloc}", app_id


def heap_base_url(heap_conn_id: str) -> str:
    """The base URL the task sent to, as HeapHook builds it from the connection."""
    from walkme_heap.hooks.heap import HeapHook, base_url_from

    hook = HeapHook(heap_conn_id=heap_conn_id)
    connection = hook.get_connection(heap_conn_id)
    return base_url_from(connection.host, connection.schema, connection.port, hook.settings().region)


def sql_lineage(conn_id: str, query: str) -> OperatorLineage:
    """The tables a SQL source's query reads, named as common-sql's operators name theirs: the
    connection's hook describes its database, the provider's SQL parser finds the tables. No schema
    lookups (``use_connection=False``): Postgres's hook asks only for its current schema."""
    from airflow.providers.openlineage.sqlparser import DatabaseInfo, SQLParser
    from airflow.sdk import BaseHook

    hook: Any = BaseHook.get_hook(conn_id)
    connection = hook.get_connection(conn_id)
    info = hook.get_openlineage_database_info(connection)
    if info is None:  # a hook that does not describe itself (SQLite): its type, host and port
        host = connection.host or ""
        info = DatabaseInfo(
            scheme=connection.conn_type,
            authority=(f"{host}:{connection.port}" if connection.port else host) or None,
            database=connection.schema or None,
        )
        default_schema = _DEFAULT_SCHEMAS.get(connection.conn_type)
    else:
        default_schema = hook.get_openlineage_default_schema()
    parser = SQLParser(
        dialect=hook.get_openlineage_database_dialect(connection), default_schema=default_schema
    )
    return parser.generate_openlineage_metadata_from_sql(
        sql=query, hook=hook, database_info=info, use_connection=False
    )


def replay_lineage(record: ReplayRecord | None, heap_conn_id: str, log: Logger) -> OperatorLineage:
    """The task's ``OperatorLineage``; a part that cannot be named is left out (and logged), never
    failing the others or the task."""
    from airflow.providers.common.compat.openlineage.facet import (
        Dataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    if record is None:  # the task failed before its source was opened: it read and wrote nothing
        return OperatorLineage()
    inputs: list[Dataset] = []
    run_facets: dict[str, Any] = {}
    job_facets: dict[str, Any] = {}
    query = getattr(record.source, "query", None)
    if record.spec.type == "sql" and query and record.spec.conn_id:
        try:
            sql = sql_lineage(record.spec.conn_id, query)
        except Exception as exc:  # an unreachable database must not cost the rest of the lineage
            log.warning(
                "OpenLineage: the SQL source's tables could not be named (%s: %s)", type(exc).__name__, exc
            )
        else:
            inputs += sql.inputs
            run_facets.update(sql.run_facets)
            job_facets.update(sql.job_facets)
    else:
        files = getattr(record.source, "found", None) or []  # listed: read, or read until it stopped
        inputs += [Dataset(namespace=ns, name=name) for ns, name in map(file_dataset_id, files)]
    outputs: list[Dataset] = []
    summary = record.summary
    if summary is not None and not summary.dry_run and summary.app_id:
        try:
            namespace, name = heap_dataset_id(heap_base_url(heap_conn_id), summary.app_id)
        except Exception as exc:
            log.warning("OpenLineage: the Heap app could not be named (%s: %s)", type(exc).__name__, exc)
        else:
            statistics = OutputStatisticsOutputDatasetFacet(rowCount=summary.sent)
            outputs.append(
                OutputDataset(namespace=namespace, name=name, outputFacets={"outputStatistics": statistics})
            )
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets=run_facets, job_facets=job_facets)
