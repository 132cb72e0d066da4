"""The Heap connection type, as Airflow's providers manager sees it, and the canary test."""

from __future__ import annotations

import json

import pytest
import requests

from walkme_heap.emulator import HeapEmulator
from walkme_heap.hooks.heap import CANARY_EVENT, CANARY_IDENTITY, HeapHook


def test_the_heap_connection_type_is_registered_with_its_fields() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "walkme-heap" in manager.providers
    hook = manager.hooks["heap"]
    assert hook is not None
    assert (hook.hook_class_name, hook.hook_name, hook.connection_testable) == (
        "walkme_heap.hooks.heap.HeapHook",
        "Heap",
        True,
    )
    behaviour = manager.field_behaviours["heap"]
    assert behaviour["relabeling"] == {
        "host": "Base URL (optional)",
        "login": "App ID",
        "password": "API key (optional, for Test)",
    }
    assert "password" not in behaviour["hidden_fields"]  # the API key: a password field, masked
    # Standard fields take no description: the placeholder says what Test does with and without a key.
    placeholder = behaviour["placeholders"]["password"]
    assert "auth endpoint and sends nothing" in placeholder
    assert f"canary event '{CANARY_EVENT}', visible in Heap" in placeholder
    widgets = {
        k: v.field for k, v in manager.connection_form_widgets.items() if k.startswith("extra__heap__")
    }
    assert set(widgets) == {
        f"extra__heap__{name}"
        for name in (
            "region",
            "app_rate_limit",
            "identity_rate_limit",
            "max_batch_events",
            "max_batch_bytes",
            "retry_max_seconds",
        )
    }
    assert widgets["extra__heap__region"]["schema"]["title"] == "Region"
    assert widgets["extra__heap__app_rate_limit"]["value"] == 15000


def test_the_ui_form_shows_the_api_key_field_and_what_test_does() -> None:
    """What the UI's connection form reads (the hook metadata API): the password is shown as the key."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    (meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "heap"]
    password = meta.standard_fields.model_dump(mode="json")["password"]
    assert (password["hidden"], password["title"]) == (False, "API key (optional, for Test)")
    assert "sends nothing" in password["placeholder"] and "canary event" in password["placeholder"]


def test_form_fields_reach_the_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {
        "extra__heap__region": "eu",
        "extra__heap__app_rate_limit": 0,
        "extra__heap__identity_rate_limit": 500,
        "extra__heap__max_batch_bytes": None,
    }
    monkeypatch.setenv(
        "AIRFLOW_CONN_HEAP_FORM", json.dumps({"conn_type": "heap", "login": "a", "extra": extra})
    )
    hook = HeapHook(heap_conn_id="heap_form")
    settings = hook.settings()
    assert (settings.app_rate_limit, settings.identity_rate_limit) == (None, 500)
    assert settings.max_batch_bytes == 1_000_000
    assert hook.get_conn().base_url == "https://c.eu.heap-api.com"


def test_connection_test_sends_one_clearly_named_canary(
    emulator: HeapEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_HEAP_CANARY", json.dumps({"conn_type": "heap", "host": emulator.url, "login": "app-42"})
    )
    ok, message = HeapHook(heap_conn_id="heap_canary").test_connection()
    assert ok and "canary event" in message and "unknown app ids silently" in message
    (event,) = requests.get(f"{emulator.url}/_emulator/events", timeout=5).json()
    assert (event["app_id"], event["identity"], event["event"]) == ("app-42", CANARY_IDENTITY, CANARY_EVENT)


def test_connection_test_reports_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_HEAP_BAD", json.dumps({"conn_type": "heap", "host": "http://example.com", "login": "a"})
    )
    ok, message = HeapHook(heap_conn_id="heap_bad").test_connection()
    assert not ok and "refusing plain http" in message
    monkeypatch.setenv(
        "AIRFLOW_CONN_HEAP_DOWN",
        json.dumps({"conn_type": "heap", "host": "http://127.0.0.1:9", "login": "a"}),
    )
    ok, message = HeapHook(heap_conn_id="heap_down").test_connection()
    assert not ok and "Heap refused the canary event" in message
