"""pipelines.yaml: the bundled file is valid, and every error names the pipeline and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from walkme_heap.config import ConfigError, load_pipelines

ROOT = Path(__file__).resolve().parents[1]

BASE = """
pipelines:
  p1:
    start_date: 2024-03-10
    source:
      path: data/{date:%Y-%m-%d}.csv
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipelines.yaml"
    path.write_text(text)
    return path


def test_bundled_configuration_is_valid() -> None:
    names = {p.name: p for p in load_pipelines(ROOT / "include" / "pipelines.yaml")}
    assert set(names) == {"sample_webhooks", "sample_survey_report", "sample_warehouse"}
    assert names["sample_warehouse"].source.query_file == str(
        ROOT / "include" / "sql" / "walkme_events_sqlite.sql"
    )
    webhooks = names["sample_webhooks"]
    assert webhooks.dag_id == "walkme_to_heap_sample_webhooks"
    assert webhooks.heap_conn_id == "heap_default"
    assert Path(webhooks.source.path).is_absolute()
    assert names["sample_survey_report"].mapping.preset == "report"


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    (pipeline,) = load_pipelines(write(tmp_path, BASE))
    assert pipeline.source.path == str(tmp_path / "data/{date:%Y-%m-%d}.csv")
    assert (pipeline.schedule, pipeline.heap_conn_id, pipeline.catchup) == ("@daily", "heap_default", True)
    assert pipeline.mapping.preset == "webhook" and pipeline.source.on_missing == "fail"
    assert pipeline.start_date.isoformat() == "2024-03-10T00:00:00+00:00"
    assert (pipeline.shards, pipeline.retry_delay_seconds) == (1, 120)


def test_a_templated_path_is_located_once_rendered(tmp_path: Path) -> None:
    """It may render to an absolute path or a URL: the configuration's folder is kept beside it."""
    text = BASE.replace("data/{date:%Y-%m-%d}.csv", '"{{ var.value.landing }}/{date:%Y-%m-%d}.csv"')
    (pipeline,) = load_pipelines(write(tmp_path, text))
    assert pipeline.source.path == "{{ var.value.landing }}/{date:%Y-%m-%d}.csv"
    assert pipeline.source.base_dir == str(tmp_path)
    assert pipeline.source.located("s3://landing/x.csv") == "s3://landing/x.csv"
    assert pipeline.source.located("landing/x.csv") == str(tmp_path / "landing/x.csv")


def test_environment_variable_selects_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALKME_HEAP_CONFIG", str(write(tmp_path, BASE)))
    assert [p.name for p in load_pipelines()] == ["p1"]


@pytest.mark.parametrize(
    ("addition", "message"),
    [
        ("    colour: blue\n", "pipeline 'p1': key 'colour' is not a known setting"),
        ("    mapping:\n      preset: csv\n", "key 'mapping.preset' must be one of webhook, report"),
        ("    mapping:\n      properties:\n        include: 5\n", "key 'mapping.properties.include'"),
        ("    mapping:\n      event_name:\n        constant: ''\n", "mapping.event_name.constant"),
        ("    mapping:\n      event_name:\n        names: {wt: X}\n", "'item_type.event_type'"),
        ("    mapping:\n      columns:\n        who: [a]\n", "key 'mapping.columns.who' is not a known"),
        ("    retries: yes\n", "key 'retries' must be int"),
        ("    end_date: 2024-03-01\n", "key 'end_date' must be after start_date"),
        ("    mapping:\n      preset: none\n", "key 'mapping.columns.identity' is required"),
        ("    shards: 0\n", "key 'shards' must be between 1 and 64, got 0"),
        ("    shards: 65\n", "key 'shards' must be between 1 and 64, got 65"),
        ("    shards: two\n", "key 'shards' must be int"),
        ("    retry_delay_seconds: -5\n", "key 'retry_delay_seconds' must not be negative"),
    ],
)
def test_errors_name_pipeline_and_key(tmp_path: Path, addition: str, message: str) -> None:
    with pytest.raises(ConfigError, match="pipeline 'p1'") as info:
        load_pipelines(write(tmp_path, BASE + addition))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            BASE.replace("      path: data/{date:%Y-%m-%d}.csv\n", "      type: csv\n"),
            "key 'source.path' is required",
        ),
        (
            BASE.replace("type: csv", "").replace("path:", "on_missing: ignore\n      path:"),
            "key 'source.on_missing' must be one of fail, skip",
        ),
        (BASE.replace("    start_date: 2024-03-10\n", ""), "key 'start_date' is required"),
        (BASE.replace("start_date: 2024-03-10", "start_date: soon"), "key 'start_date' must be a date"),
        (BASE.replace("  p1:", "  bad-name:"), "only letters, digits and underscores"),
        ("pipelines: [1]\n", "key 'pipelines' must be dict"),
        ("pipelines:\n  p: [\n", "not valid YAML"),
    ],
)
def test_more_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_pipelines(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_pipelines(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("type: sql\n      table: t", "key 'source.conn_id' is required for a sql source"),
        ("type: sql\n      conn_id: w", "key 'source.table' or 'query_file' is needed"),
        ("type: sql\n      conn_id: w\n      table: t\n      query_file: q.sql", "not both"),
        (
            "type: sql\n      conn_id: w\n      table: t\n      time_type: epoch_ms",
            "'source.time_column' is required",
        ),
        (
            "type: sql\n      conn_id: w\n      table: t\n      time_column: c",
            "'source.time_type' is required",
        ),
        (
            "type: sql\n      conn_id: w\n      table: t\n      time_column: c\n      time_type: date",
            "must be one of timestamptz, timestamp, epoch_ms, epoch_s",
        ),
        ("type: sql\n      conn_id: w\n      query_file: nope.sql", "'source.query_file' names no file"),
        (
            "type: sql\n      conn_id: w\n      table: t\n      time_column: c\n      time_type: epoch_ms\n"
            "      path: x.csv",
            "key 'source.path' is not a known setting",
        ),
        (
            "type: jsonl\n      path: x.jsonl\n      delimiter: ';'",
            "'source.delimiter' is not a known setting",
        ),
        ("type: parquet\n      path: x", "must be one of csv, jsonl, sql"),
    ],
)
def test_sql_and_jsonl_source_errors(tmp_path: Path, source: str, message: str) -> None:
    text = f"pipelines:\n  p1:\n    start_date: 2024-03-10\n    source:\n      {source}\n"
    with pytest.raises(ConfigError, match="pipeline 'p1'") as info:
        load_pipelines(write(tmp_path, text))
    assert message in str(info.value)


def test_sql_query_file_is_resolved_against_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "q.sql").write_text("SELECT 1")
    text = (
        "pipelines:\n  p1:\n    start_date: 2024-03-10\n    source:\n      type: sql\n      conn_id: w\n"
        "      query_file: sql/q.sql\n"
    )
    (pipeline,) = load_pipelines(write(tmp_path, text))
    assert pipeline.source.query_file == str(tmp_path / "sql" / "q.sql")
    assert pipeline.source.time_type == "timestamptz"


def test_record_bound_and_duplicate_headers_of_a_csv_source(tmp_path: Path) -> None:
    """Both guard hostile files; the header choices become a sorted tuple (the spec stays hashable)."""
    (pipeline,) = load_pipelines(write(tmp_path, BASE))
    assert pipeline.source.max_record_bytes == 1_048_576 and pipeline.source.duplicate_headers == ()
    text = BASE + "      max_record_bytes: 65536\n      duplicate_headers: {wm.euId: 2, Date: 1}\n"
    (pipeline,) = load_pipelines(write(tmp_path, text))
    assert pipeline.source.max_record_bytes == 65536
    assert pipeline.source.duplicate_headers == (("Date", 1), ("wm.euId", 2))
    hash(pipeline.source)
    jsonl = "type: jsonl\n      path: x.jsonl\n      max_record_bytes: 4096"
    (pipeline,) = load_pipelines(write(tmp_path, BASE.replace("path: data/{date:%Y-%m-%d}.csv", jsonl)))
    assert pipeline.source.max_record_bytes == 4096


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("max_record_bytes: 0", "key 'source.max_record_bytes' must be at least 1, got 0"),
        ("max_record_bytes: 1MiB", "key 'source.max_record_bytes' must be int"),
        ("max_record_bytes: true", "key 'source.max_record_bytes' must be int"),
        ("duplicate_headers: [wm.euId]", "key 'source.duplicate_headers' must be dict"),
        (
            "duplicate_headers: {wm.euId: 0}",
            "key 'source.duplicate_headers' must map header names to occurrences (1 is the first)",
        ),
        ("duplicate_headers: {wm.euId: first}", "must map header names to occurrences"),
        ("duplicate_headers: {wm.euId: true}", "must map header names to occurrences"),
    ],
)
def test_record_bound_and_duplicate_header_errors(tmp_path: Path, setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match="pipeline 'p1'") as info:
        load_pipelines(write(tmp_path, BASE + f"      {setting}\n"))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "type: jsonl\n      path: x.jsonl\n      duplicate_headers: {a: 1}",
            "'source.duplicate_headers' is not",
        ),
        (
            "type: sql\n      conn_id: w\n      table: t\n      time_column: c\n      time_type: epoch_ms\n"
            "      max_record_bytes: 10",
            "key 'source.max_record_bytes' is not a known setting",
        ),
    ],
)
def test_the_file_guards_are_not_settings_of_other_sources(tmp_path: Path, source: str, message: str) -> None:
    text = f"pipelines:\n  p1:\n    start_date: 2024-03-10\n    source:\n      {source}\n"
    with pytest.raises(ConfigError, match=message):
        load_pipelines(write(tmp_path, text))
