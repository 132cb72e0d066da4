"""The Heap bulk track client: one pooled HTTP session, timeouts, HTTPS unless loopback.

Only Heap's acknowledgement counts: HTTP 200 from the track API (what Heap answers and its public
clients require) whose body is not an HTML document (Heap documents no body: JSON, text or none).
Redirects are never followed (a 301/302 would turn the POST into a GET that something answers 200;
a 307/308 would re-post app id and identities to any address), and a 3xx, another 2xx or an HTML
page (a captive portal, a proxy's login) is not an acknowledgement: each raises
``HeapRequestError`` naming what answered and what to check.

``check_api_key`` asks Heap's auth endpoint for a token (HTTP Basic ``app_id:api_key``): it checks
an API key and writes nothing. Same session, base URL rules and redirect refusal; neither the key nor
the token ever appears in a message.
"""

from __future__ import annotations

import ipaddress
import math
import time
from datetime import UTC
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from walkme_heap.heap_api import AUTH_TOKEN_PATH, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, TRACK_PATH


class HeapConfigError(ValueError):
    """The Heap connection is not usable as configured."""


class HeapRequestError(RuntimeError):
    """Heap answered a request with a non-2xx status (or did not answer)."""

    def __init__(self, status: int | None, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.attempts = 1  # how many times the request was sent before this answer (the sender counts)

    @property
    def retryable(self) -> bool:
        """Network errors, timeouts, throttling and server errors may succeed later."""
        return self.status is None or self.status in (408, 429) or self.status >= 500

    @property
    def rejects_content(self) -> bool:
        """Heap refused what was sent (400, or a body too large): retrying the same is pointless.
        (A 422 is not Heap's: Heap documents 400 for what it refuses.)"""
        return self.status in (400, 413)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str) -> str:
    """Normalise the base URL; refuse plain HTTP except to loopback (the emulator), and a user or
    password in it (Heap's API takes none; never repeated in a message)."""
    url = urlsplit(base_url.strip().rstrip("/"))
    if url.username is not None or url.password is not None:
        shown = url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()
        raise HeapConfigError(
            f"Heap base URL {shown!r} (credentials removed) must hold no user or password: the app id "
            "goes in the connection's login"
        )
    if url.scheme not in ("http", "https") or not url.hostname:
        raise HeapConfigError(f"Heap base URL {base_url!r} must look like https://heapanalytics.com")
    if url.scheme == "http" and not is_loopback(url.hostname):
        raise HeapConfigError(
            f"refusing plain http to {url.hostname}: Heap must be reached over https "
            "(http is allowed only to loopback, for the emulator)"
        )
    if url.path not in ("", "/"):
        raise HeapConfigError(f"Heap base URL {base_url!r} should have no path (it is added)")
    return f"{url.scheme}://{url.netloc}"


class HeapClient:
    """Posts prepared bulk bodies to ``{base}/api/track``; only Heap's 200 is success."""

    def __init__(
        self,
        base_url: str,
        app_id: str,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        if not app_id or not app_id.strip():
            raise HeapConfigError("the Heap app_id (the connection's login) is empty")
        self.base_url = check_base_url(base_url)
        self.app_id = app_id.strip()
        self.url = self.base_url + TRACK_PATH
        self.timeout = (connect_timeout, read_timeout)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self.session = session

    def post(self, body: bytes, path: str = TRACK_PATH) -> requests.Response:
        """Send one body (to ``path``: the track API unless told); raise HeapRequestError unless
        Heap acknowledges it (200, not a page)."""
        url = self.base_url + path
        try:
            response = self.session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise HeapRequestError(None, f"no answer from {self.base_url}: {exc}") from exc
        status = response.status_code
        if status == 200 and not _is_page(response):
            return response
        retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        raise HeapRequestError(status, self._explain(response, url), retry_after)

    def _explain(self, response: requests.Response, url: str) -> str:
        """The answer, and for one no retry can fix, what to check."""
        status, answer = response.status_code, _message(response)
        hosts = "https://heapanalytics.com (US) or https://c.eu.heap-api.com (EU)"
        if 300 <= status < 400:
            location = response.headers.get("Location", "(no Location)")
            return (
                f"{url} answered with a redirect to {location}; Heap's track API does not "
                f"redirect, so the connection's host is wrong or a proxy is in between. Set the host to "
                f"{hosts}. Redirects are never followed; nothing of this batch counts as sent"
            )
        if status == 200:
            return (
                f"{url} answered 200 with an HTML page, not Heap's answer (a captive portal or a "
                f"proxy's page?); check the connection's host ({hosts}) and the network path. "
                f"Nothing of this batch counts as sent. The page began: {answer[:200]!r}"
            )
        if 200 < status < 300:
            return (
                f"{url} answered {status}, not Heap's acknowledgement (Heap answers 200); check the "
                f"connection's host ({hosts}). Nothing of this batch counts as sent. Answer: {answer}"
            )
        if status in (401, 403, 407):
            return (
                f"{answer} -- Heap's track API asks for no credentials, so a proxy or firewall between "
                f"this worker and {self.base_url} refused the request; check the network path (proxy "
                f"settings, allow-lists) and the connection's host ({hosts})"
            )
        if status in (404, 405):
            return (
                f"{answer} -- there is no Heap API at {url}; check the connection's host "
                f"({hosts}; the host only, no path)"
            )
        return answer

    def check_api_key(self, api_key: str) -> None:
        """Ask Heap for a bearer token with HTTP Basic ``app_id:api_key``: a credentials check that
        writes nothing. Raises HeapRequestError unless Heap answers 200 with a token; the token is
        dropped unread (nothing here needs one) and neither it nor the key is in any message."""
        url = self.base_url + AUTH_TOKEN_PATH
        try:
            response = self.session.post(
                url, auth=(self.app_id, api_key), timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            # from None: the chained exception holds the request, Authorization header included
            raise HeapRequestError(None, _redact(f"no answer from {self.base_url}: {exc}", api_key)) from None
        if response.status_code == 200 and not _is_page(response) and _has_token(response):
            return
        raise HeapRequestError(response.status_code, _redact(self._explain_auth(response), api_key))

    def _explain_auth(self, response: requests.Response) -> str:
        """What the auth endpoint's answer means. Heap documents no error status for a wrong key:
        401 and 403 are both taken as a refusal of the app id and key. A 200 body is never quoted
        (it may hold a token)."""
        status, url = response.status_code, self.base_url + AUTH_TOKEN_PATH
        if 300 <= status < 400:
            location = response.headers.get("Location", "(no Location)")
            return (
                f"{url} answered with a redirect to {location}; Heap does not document one, so the "
                "connection's host is wrong or a proxy is in between (never followed: the key goes nowhere "
                "else)"
            )
        if status == 200 and _is_page(response):
            return f"{url} answered 200 with an HTML page, not Heap's answer (a captive portal or a proxy?)"
        if 200 <= status < 300:
            return f"{url} answered {status} without a token: not Heap's auth endpoint?"
        answer = _message(response)
        if status in (401, 403):
            return (
                f"Heap refused app id {self.app_id} with this API key ({answer}); check the key, and that "
                "the App ID is the Main Production environment's (the one Heap's auth endpoint takes)"
            )
        if status in (404, 405):
            return f"{answer} -- no Heap auth endpoint at {url}; check the connection's host (host only)"
        return answer

    def close(self) -> None:
        self.session.close()


def _has_token(response: requests.Response) -> bool:
    """Heap documents only that a bearer token comes back, not its shape: a JSON object with a
    non-empty ``access_token`` or ``token``, a JSON string, or plain text are each taken as one."""
    try:
        payload = response.json()
    except ValueError:
        return bool(response.text.strip())
    if isinstance(payload, dict):
        return any(isinstance(payload.get(k), str) and payload[k].strip() for k in ("access_token", "token"))
    return isinstance(payload, str) and bool(payload.strip())


def _redact(text: str, secret: str) -> str:
    """The text without the secret (should a proxy or server echo it back)."""
    return text.replace(secret, "***") if secret else text


def _is_page(response: requests.Response) -> bool:
    """An HTML document (the body begins with a tag): what a portal or proxy answers, never Heap's
    track API. Judged by the body, not the Content-Type, which Heap does not document for its 200
    (a framework may label even an empty answer text/html)."""
    return response.content[:256].lstrip()[:1] == b"<"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds, or an HTTP date: a date without a
    zone or with ``-0000`` is taken as UTC), or None when absent, unreadable, zero or already past:
    the caller then backs off with jitter instead of sending again at once."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def _message(response: requests.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:500] or response.reason
    if isinstance(payload, dict):
        return str(payload.get("error") or payload.get("message") or payload)[:500]
    return str(payload)[:500]
