"""A strict stand-in for Heap's track API, served over real HTTP on loopback.

It validates bodies exactly as ``heap-track-api.md`` documents, enforces the per-app and
per-identity limits with 429, drops repeated idempotency keys (counting them), records what it
accepted, and can inject faults. It is used by the demo, the tests and the benchmarks; loosening it
to make a client pass would make those mean nothing.

It also answers Heap's auth endpoint (``POST /api/public/v0/auth_token``, HTTP Basic
``app_id:api_key``), which the reference documents only as "returns a bearer token (expires in about
5 minutes)" and "writes nothing". Where it is silent this emulator chose, and clients must not rely
on the choice: a token is answered as ``200 {"access_token": "<opaque>", "expires_in": 300}``; a
missing or malformed Authorization header, an unknown app id and a wrong key all get
``401 {"error": ...}`` with ``WWW-Authenticate: Basic`` (Heap may answer 403: clients take both).
Valid pairs are the ``api_keys`` setting (Heap issues keys for the Main Production environment's
app id); tokens are not kept, since nothing here accepts one. Nothing is recorded or rate-limited
by it: it only counts ``auth_requests``, ``auth_tokens`` and ``auth_rejected_401``.

It also implements ``POST /api/add_user_properties``, both forms (single ``{app_id, identity,
properties}`` and bulk ``{app_id, users: [...]}``), validated as ``validation.py`` describes (with
the choices made where the reference is silent). Each accepted user's properties are merged into
the profile it holds per app (a property of the same name is overwritten, others kept; an unknown
identity creates a user with no events): ``GET /_emulator/users[?app_id=]`` and ``state.users``.
Its limit is the documented 30 requests per 30 seconds per identity per app_id
(``user_properties_limit``), a sliding window of its own, separate from track's: a bulk request
counts once against each identity it names, and one identity over the limit refuses the whole
request with 429 (nothing of it counted or applied), as a leaky bucket per identity would; the
Retry-After behaviour is track's. The reference documents no per-app limit for this endpoint, so
none is enforced (a client must still not assume there is none). The fault injection applies to
it too (``error_rate``, ``burst_5xx``, ``throttle_burst``, ``latency_ms``, ``slow_burst``,
``drop_rate``, ``drop_after_accept_rate``, ``max_body_bytes``, ``intercept``, and ``poison``
matched against each user's JSON); ``burst_5xx``, ``throttle_burst`` and ``slow_burst`` count the
next N requests to either endpoint. ``hold_after`` counts track events and holds track answers only;
``store_events`` and ``--jsonl`` concern events only (the profiles are always kept: one entry per
user). Its counters are separate from track's, prefixed ``user_properties_``: ``requests``,
``users_updated``, ``users_created``, ``rejected_400``, ``throttled_429``, ``errors_5xx``,
``dropped``, ``dropped_after_accept``, ``intercepted``, ``rejected_413``. It answers 200 with
``{"updated": n, "created": k}``; Heap documents only the status, so clients must not read the body.

Control endpoints (not part of Heap's API) live under ``/_emulator/``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from walkme_heap.emulator.limits import RateLimiter, UserPropertiesLimiter
from walkme_heap.emulator.validation import (
    HeapValidationError,
    validate_body,
    validate_user_properties_body,
)

log = logging.getLogger(__name__)

DEFAULT_APP_LIMIT = 15_000
DEFAULT_IDENTITY_LIMIT = 1_000
DEFAULT_USER_PROPERTIES_LIMIT = 30  # add_user_properties requests per 30 s per identity per app
HOLD_SECONDS = 120.0
RETRY_AFTER_FORMS = {"seconds", "date", "date-0000", "date-nozone", "zero", "past"}
AUTH_TOKEN_PATH = "/api/public/v0/auth_token"
USER_PROPERTIES_PATH = "/api/add_user_properties"
USER_PROPERTIES_COUNTERS = "user_properties_"  # prefix of that endpoint's counters
TOKEN_SECONDS = 300  # "expires in about 5 minutes"


def retry_after_header(wait: float, form: str, now: float) -> str:
    """A Retry-After value meaning ``wait`` seconds, written in ``form`` (see ``retry_after_form``)."""
    seconds = max(1, int(wait + 0.999))
    if form == "zero":
        return "0"
    if form == "seconds":
        return str(seconds)
    when = now - 30 if form == "past" else now + seconds + 1  # dates have whole seconds: round up
    text = formatdate(when, usegmt=True)  # "Wed, 21 Oct 2015 07:28:00 GMT"
    if form == "date-0000":
        return text.replace("GMT", "-0000")
    if form == "date-nozone":
        return text.removesuffix(" GMT")
    return text


@dataclass
class EmulatorSettings:
    """Everything that can be switched at start (CLI flags) or later (``POST /_emulator/config``)."""

    app_limit: int | None = DEFAULT_APP_LIMIT  # events per 60 s per app_id; None = off
    identity_limit: int | None = DEFAULT_IDENTITY_LIMIT  # events per 60 s per identity per app
    # add_user_properties requests per 30 s per identity per app; None or 0 = off
    user_properties_limit: int | None = DEFAULT_USER_PROPERTIES_LIMIT
    retry_after: bool = False  # send a Retry-After header with 429 ...
    # ... in this form: "seconds" (delta-seconds), "date" (an HTTP date in GMT), "date-0000" and
    # "date-nozone" (the date forms RFC 5322 allows without a known zone), "zero", "past" (a date
    # already gone): what a client must parse without crashing or hammering.
    retry_after_form: str = "seconds"
    max_body_bytes: int = 5_000_000  # bodies above this get 413 (Heap documents no cap)
    error_rate: float = 0.0  # share of requests answered 500
    burst_5xx: int = 0  # the next N requests are answered 503
    throttle_burst: int = 0  # the next N requests are answered 429 (a throttling storm)
    latency_ms: int = 0  # delay before answering every request
    slow_burst: int = 0  # the next N requests are answered after slow_burst_ms ...
    slow_burst_ms: int = 0  # ... (after processing them: a client timeout may hide an acceptance)
    drop_rate: float = 0.0  # share of requests whose connection is closed unanswered
    drop_after_accept_rate: float = 0.0  # share accepted, then the connection closed unanswered
    # events (and add_user_properties users) whose JSON contains this text are rejected with 400
    poison: str | None = None
    # Once more than this many events were accepted, a track request is processed but its answer
    # is held until the setting is cleared (or raised): a test can act at an exact point of a run.
    hold_after: int | None = None
    # Something between the client and Heap (a proxy, a WAF, a captive portal, a wrong host) answers
    # every track and add_user_properties request instead of Heap: {"status": 301, "headers":
    # {"Location": ...}, "body": "...", "content_type": "text/html"}. Nothing is validated or
    # recorded while it is set.
    intercept: dict[str, Any] | None = None
    store_events: bool = True  # keep accepted events for /_emulator/events
    seed: int = 0
    # The API keys the auth endpoint accepts: {app_id: api_key}. Empty: every key is refused.
    api_keys: dict[str, str] = field(default_factory=dict)

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown emulator settings: {sorted(unknown)}")
        keys = changes.get("api_keys", {})
        if not isinstance(keys, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in keys.items()
        ):
            raise ValueError("api_keys must map app ids to API keys (non-empty strings)")
        if changes.get("retry_after_form", "seconds") not in RETRY_AFTER_FORMS:
            raise ValueError(f"retry_after_form must be one of {sorted(RETRY_AFTER_FORMS)}")
        limit = changes.get("user_properties_limit")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValueError("user_properties_limit must be a non-negative integer or null (0 or null: off)")
        intercept = changes.get("intercept")
        if intercept is not None and not isinstance(intercept.get("status"), int):
            raise ValueError("intercept needs an integer 'status'")
        for key, value in changes.items():
            setattr(self, key, value)


class EmulatorState:
    """What the emulator received; guarded by one lock so counts stay consistent."""

    def __init__(
        self,
        settings: EmulatorSettings,
        jsonl_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # settings changed (held answers may go)
        self.clock = clock  # the limits' and per-minute counts' time
        self.jsonl_path = jsonl_path
        self.reset()

    def reset(self) -> None:
        self.limiter = RateLimiter(self.settings.app_limit, self.settings.identity_limit)
        self.user_limiter = UserPropertiesLimiter(self.settings.user_properties_limit)
        self.random = random.Random(self.settings.seed)
        self.keys: dict[str, set[str]] = {}
        # add_user_properties: app_id -> identity -> the latest value of each property
        self.users: dict[str, dict[str, dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.per_minute: Counter[tuple[str, int]] = Counter()
        if self.jsonl_path is not None:
            self.jsonl_path.write_text("")

    def configure(self, changes: dict[str, Any]) -> None:
        """Change settings (the caller holds the lock)."""
        self.settings.update(changes)
        self.changed.notify_all()
        if {"app_limit", "identity_limit"} & set(changes):
            self.limiter = RateLimiter(self.settings.app_limit, self.settings.identity_limit)
        if "user_properties_limit" in changes:
            self.user_limiter = UserPropertiesLimiter(self.settings.user_properties_limit)
        if "seed" in changes:
            self.random = random.Random(self.settings.seed)

    def record(self, app_id: str, events: list[dict[str, Any]], now: float) -> tuple[int, int]:
        """Store new events, drop repeated keys; return (new, duplicates)."""
        seen = self.keys.setdefault(app_id, set())
        new: list[dict[str, Any]] = []
        duplicates = 0
        for event in events:
            key = event.get("idempotency_key")
            if key is not None:
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
            new.append(event)
        self.counts["accepted_events"] += len(events)
        self.counts["unique_events"] += len(new)
        self.counts["duplicate_events"] += duplicates
        self.per_minute[(app_id, int(now // 60))] += len(events)
        if new and self.settings.store_events:
            stored = [{"app_id": app_id, **event} for event in new]
            self.events.extend(stored)
            if self.jsonl_path is not None:
                with self.jsonl_path.open("a", encoding="utf-8") as fh:
                    for event in stored:
                        fh.write(json.dumps(event, ensure_ascii=False) + "\n")
        return len(new), duplicates

    def record_users(self, app_id: str, users: list[dict[str, Any]]) -> int:
        """Merge each user's properties into its profile (same name: overwritten; others kept);
        return how many identities were new (a user with no events)."""
        profiles = self.users.setdefault(app_id, {})
        created = 0
        for user in users:
            profile = profiles.get(user["identity"])
            if profile is None:
                profile = profiles[user["identity"]] = {}
                created += 1
            profile.update(user["properties"])
        self.counts[USER_PROPERTIES_COUNTERS + "users_updated"] += len(users)
        self.counts[USER_PROPERTIES_COUNTERS + "users_created"] += created
        return created

    def stats(self) -> dict[str, Any]:
        per_minute: dict[str, dict[str, int]] = {}
        for (app_id, minute), count in sorted(self.per_minute.items()):
            per_minute.setdefault(app_id, {})[str(minute * 60)] = count
        return {**dict(self.counts), "per_minute": per_minute, "settings": public_settings(self.settings)}


def public_settings(settings: EmulatorSettings) -> dict[str, Any]:
    """The settings as the control endpoints show them: API keys masked (stats end up in logs)."""
    shown = asdict(settings)
    shown["api_keys"] = {app_id: "***" for app_id in settings.api_keys}
    return shown


def _refuse_poisoned(poison: str | None, items: list[dict[str, Any]], where: str, kind: str) -> None:
    """The ``poison`` fault: an item whose JSON holds the marker is refused as Heap refuses a bad one
    (``where`` formats the item's index into its place in the body)."""
    if not poison:
        return
    for index, item in enumerate(items):
        if poison in json.dumps(item, ensure_ascii=False):
            raise HeapValidationError(f"{where.format(index)} was rejected (poisoned {kind})")


def _decode(raw: bytes) -> Any:
    """JSON text -> values: orjson for speed; the standard parser for what orjson refuses.

    orjson rejects integers beyond 64 bits (JavaScript takes them as numbers) and NaN (which the
    standard parser accepts, and the validator then refuses with the field's path), so a body
    orjson refuses gets the standard parser's verdict: the contract does not depend on the speed-up.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an HTTP Basic Authorization header, or None when absent or malformed."""
    scheme, _, encoded = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


class _DropConnectionError(Exception):
    """Close the connection without an answer."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer (headers and body buffered, flushed after each request) and no Nagle:
    # otherwise every keep-alive request waits out the client's delayed ACK (~40 ms).
    wbufsize = -1
    disable_nagle_algorithm = True
    server: EmulatorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("emulator: " + format, *args)

    # -- helpers -------------------------------------------------------------------------------
    def _reply(
        self,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- routes --------------------------------------------------------------------------------
    def do_GET(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        if url.path == "/_emulator/health":
            self._reply(200, {"ok": True})
        elif url.path == "/_emulator/stats":
            with state.lock:
                self._reply(200, state.stats())
        elif url.path == "/_emulator/events":
            app_id = parse_qs(url.query).get("app_id", [None])[0]
            with state.lock:
                events = [e for e in state.events if app_id is None or e["app_id"] == app_id]
            self._reply(200, events)
        elif url.path == "/_emulator/users":
            app_id = parse_qs(url.query).get("app_id", [None])[0]
            with state.lock:  # {app_id: {identity: properties}}, copied under the lock
                users = {
                    app: {identity: dict(profile) for identity, profile in profiles.items()}
                    for app, profiles in state.users.items()
                    if app_id is None or app == app_id
                }
            self._reply(200, users)
        else:
            self._reply(404, {"error": f"no route {url.path}"})

    def do_POST(self) -> None:
        state = self.server.state
        path = urlsplit(self.path).path
        if path in ("/api/track", USER_PROPERTIES_PATH):
            try:
                self._track() if path == "/api/track" else self._user_properties()
            except _DropConnectionError:
                self.close_connection = True
                self.connection.close()
            return
        raw = self._read_body()
        if path == AUTH_TOKEN_PATH:
            self._auth_token()
            return
        if path == "/_emulator/reset":
            with state.lock:
                state.reset()
            self._reply(200, {"ok": True})
        elif path == "/_emulator/config":
            try:
                changes = json.loads(raw or b"{}")
                with state.lock:
                    state.configure(changes)
            except (ValueError, TypeError) as exc:
                self._reply(400, {"error": str(exc)})
                return
            self._reply(200, public_settings(state.settings))
        else:
            self._reply(404, {"error": f"no route {path}"})

    def _auth_token(self) -> None:
        """Heap's auth endpoint: HTTP Basic ``app_id:api_key`` against ``api_keys``; a token or 401.
        The body is not read (the reference documents none); nothing is recorded."""
        state = self.server.state
        self._count("auth_requests")
        credentials = _basic_credentials(self.headers.get("Authorization"))
        with state.lock:
            expected = state.settings.api_keys.get(credentials[0]) if credentials else None
        if (
            credentials is None
            or expected is None
            or not hmac.compare_digest(credentials[1].encode(), expected.encode())
        ):
            self._count("auth_rejected_401")
            reason = (
                "missing or malformed Basic credentials"
                if credentials is None
                else "invalid app_id or api_key"
            )
            self._reply(401, {"error": reason}, {"WWW-Authenticate": 'Basic realm="heap"'})
            return
        self._count("auth_tokens")
        self._reply(200, {"access_token": secrets.token_urlsafe(32), "expires_in": TOKEN_SECONDS})

    def _front(self, prefix: str = "") -> tuple[bytes, bool] | None:
        """What happens before Heap looks at a body, for both endpoints: the size cap, the injected
        faults and latency, an interceptor, the Content-Type. Returns (body, answer late) or None
        when already answered; counters get ``prefix`` (track: none)."""
        state = self.server.state
        settings = state.settings
        length = int(self.headers.get("Content-Length") or 0)
        if length > settings.max_body_bytes:
            self.rfile.read(length)
            self._count(prefix + "rejected_413")
            self._reply(413, {"error": f"request body over {settings.max_body_bytes} bytes"})
            return None
        raw = self.rfile.read(length) if length else b""
        with state.lock:
            state.counts[prefix + "requests"] += 1
            roll = state.random.random()
            drop = roll < settings.drop_rate
            error = not drop and state.random.random() < settings.error_rate
            burst = settings.burst_5xx > 0
            if burst:
                settings.burst_5xx -= 1
            storm = not burst and settings.throttle_burst > 0
            if storm:
                settings.throttle_burst -= 1
            slow = settings.slow_burst > 0
            if slow:
                settings.slow_burst -= 1
        if settings.latency_ms:
            time.sleep(settings.latency_ms / 1000)
        if drop:
            self._count(prefix + "dropped")
            raise _DropConnectionError
        if burst or error:
            self._count(prefix + "errors_5xx")
            self._reply(503 if burst else 500, {"error": "injected server error"})
            return None
        if storm:
            self._count(prefix + "throttled_429")
            headers = self._retry_after(1.0) if settings.retry_after else None
            self._reply(429, {"error": "rate limit exceeded (injected)"}, headers)
            return None
        if settings.intercept is not None:
            self._count(prefix + "intercepted")
            intercept = settings.intercept
            self._reply(
                intercept["status"],
                intercept.get("body", ""),
                intercept.get("headers"),
                intercept.get("content_type", "text/html"),
            )
            return None
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type != "application/json":
            self._count(prefix + "rejected_400")
            self._reply(400, {"error": "Content-Type should be application/json"})
            return None
        return raw, slow

    def _track(self) -> None:
        state = self.server.state
        settings = state.settings
        front = self._front()
        if front is None:
            return
        raw, slow = front
        try:
            body = _decode(raw)
            app_id, events = validate_body(body)
            _refuse_poisoned(settings.poison, events, "postBody.events[{}]", "event")
        except (ValueError, HeapValidationError) as exc:
            self._refuse(exc, "")
            return
        now = state.clock()
        identities = [e.get("identity") or e.get("user_id") or "" for e in events]
        with state.lock:
            wait = state.limiter.admit(app_id, identities, now)
            if wait is not None:
                self._throttle(wait, "")
                return
            new, duplicates = state.record(app_id, events, now)
            drop_ack = state.random.random() < settings.drop_after_accept_rate
            accepted = state.counts["accepted_events"]
            if settings.hold_after is not None and accepted > settings.hold_after:
                self._hold(accepted)
        if slow:
            time.sleep(settings.slow_burst_ms / 1000)
        if drop_ack:
            self._count("dropped_after_accept")
            raise _DropConnectionError
        try:
            self._reply(200, {"accepted": len(events), "new": new, "duplicates": duplicates})
        except OSError:  # a held answer whose client is gone (killed while waiting for it)
            self.close_connection = True

    def _user_properties(self) -> None:
        """``add_user_properties``, both forms: validated, limited per identity, merged into the
        profiles (see the module docstring for what the reference leaves open)."""
        state = self.server.state
        settings = state.settings
        prefix = USER_PROPERTIES_COUNTERS
        front = self._front(prefix)
        if front is None:
            return
        raw, slow = front
        try:
            body = _decode(raw)
            app_id, users = validate_user_properties_body(body)
            where = "postBody.users[{}]" if "users" in body else "postBody"
            _refuse_poisoned(settings.poison, users, where, "user")
        except (ValueError, HeapValidationError) as exc:
            self._refuse(exc, prefix)
            return
        now = state.clock()
        with state.lock:
            wait = state.user_limiter.admit(app_id, [user["identity"] for user in users], now)
            if wait is not None:
                self._throttle(wait, prefix)
                return
            created = state.record_users(app_id, users)
            drop_ack = state.random.random() < settings.drop_after_accept_rate
        if slow:
            time.sleep(settings.slow_burst_ms / 1000)
        if drop_ack:
            self._count(prefix + "dropped_after_accept")
            raise _DropConnectionError
        self._reply(200, {"updated": len(users), "created": created})

    def _refuse(self, exc: Exception, prefix: str) -> None:
        """400 for a body that is not JSON or breaks the contract (counted under ``prefix``)."""
        message = str(exc) if isinstance(exc, HeapValidationError) else "postBody is not JSON"
        self._count(prefix + "rejected_400")
        self._reply(400, {"error": message})

    def _throttle(self, wait: float, prefix: str) -> None:
        """429, with Retry-After when the settings ask for it; called with the state's lock held."""
        state = self.server.state
        state.counts[prefix + "throttled_429"] += 1
        headers = self._retry_after(wait) if state.settings.retry_after else None
        self._reply(429, {"error": "rate limit exceeded"}, headers)

    def _retry_after(self, wait: float) -> dict[str, str]:
        state = self.server.state
        return {"Retry-After": retry_after_header(wait, state.settings.retry_after_form, state.clock())}

    def _hold(self, accepted: int) -> None:
        """Keep the answer back while ``hold_after`` is below ``accepted`` (the caller holds the lock;
        waiting releases it). Gives up after ``HOLD_SECONDS``, so a forgotten hold cannot hang."""
        state = self.server.state
        state.counts["held_answers"] += 1
        deadline = time.monotonic() + HOLD_SECONDS
        while (limit := state.settings.hold_after) is not None and accepted > limit:
            if not state.changed.wait(timeout=max(0.0, deadline - time.monotonic())):
                break

    def _count(self, name: str, amount: int = 1) -> None:
        with self.server.state.lock:
            self.server.state.counts[name] += amount


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: EmulatorState) -> None:
        super().__init__(address, _Handler)
        self.state = state


class HeapEmulator:
    """Run the emulator in a background thread (tests) or in the foreground (``__main__``)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: EmulatorSettings | None = None,
        jsonl_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the Heap emulator only listens on loopback")
        self.state = EmulatorState(settings or EmulatorSettings(), jsonl_path, clock)
        self.httpd = EmulatorHTTPServer((host, port), self.state)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HeapEmulator:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> HeapEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
