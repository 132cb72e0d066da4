"""The Heap bulk track client: one pooled HTTP session, timeouts, HTTPS unless loopback."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from walkme_heap.heap_api import DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, TRACK_PATH


class HeapConfigError(ValueError):
    """The Heap connection is not usable as configured."""


class HeapRequestError(RuntimeError):
    """Heap answered a request with a non-2xx status (or did not answer)."""

    def __init__(self, status: int | None, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Network errors, timeouts, throttling and server errors may succeed later."""
        return self.status is None or self.status in (408, 429) or self.status >= 500

    @property
    def rejects_content(self) -> bool:
        """Heap refused what was sent (400, or a body too large): retrying the same is pointless."""
        return self.status in (400, 413, 422)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str) -> str:
    """Normalise the base URL; refuse plain HTTP except to loopback (the emulator)."""
    url = urlsplit(base_url.strip().rstrip("/"))
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
    """Posts prepared bulk bodies to ``{base}/api/track``; any 2xx is success."""

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

    def post(self, body: bytes) -> requests.Response:
        """Send one body; raise HeapRequestError unless Heap answers 2xx."""
        try:
            response = self.session.post(
                self.url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise HeapRequestError(None, f"no answer from {self.base_url}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise HeapRequestError(response.status_code, _message(response), _retry_after(response))
        return response

    def close(self) -> None:
        self.session.close()


def _retry_after(response: requests.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), if present and sane."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _message(response: requests.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:500] or response.reason
    if isinstance(payload, dict):
        return str(payload.get("error") or payload.get("message") or payload)[:500]
    return str(payload)[:500]
