"""Headless Chromium driven over the DevTools protocol, for tests that use a page as a person does
(click, type, wait for text). Only what the UI tests need: open a URL, run JavaScript in the page,
wait until an expression is true, take a screenshot. ``websockets`` (in the lock) carries it."""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from websockets.sync.client import connect

from tests.helpers import free_port


class BrowserError(RuntimeError):
    """The page did not do what the test waited for."""


class Browser:
    """One headless Chromium with one page; ``close`` (or the ``with`` block) stops it."""

    def __init__(self, chromium: str, flags: list[str], size: tuple[int, int] = (1280, 900)) -> None:
        self.port = free_port()
        self.profile = tempfile.TemporaryDirectory(prefix="walkme-heap-chromium-", ignore_cleanup_errors=True)
        self.process = subprocess.Popen(
            [
                chromium,
                *flags,
                f"--remote-debugging-port={self.port}",
                f"--user-data-dir={self.profile.name}",
                f"--window-size={size[0]},{size[1]}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its renderer and GPU processes are stopped with it
        )
        self._ids = itertools.count(1)
        try:
            self.socket = connect(self._page_socket(), max_size=64 * 1024 * 1024, open_timeout=30)
            self.send("Page.enable")
            self.send("Runtime.enable")
        except BaseException:
            self._stop_chromium()
            raise

    def _page_socket(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as answer:
                    pages = [t for t in json.load(answer) if t.get("type") == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            except OSError:
                pass
            time.sleep(0.2)
        raise BrowserError("Chromium did not open its DevTools port")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events that arrive meanwhile are dropped)."""
        ident = next(self._ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=120))
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return dict(message.get("result") or {})

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def type(self, selector: str, text: str) -> None:
        """Type ``text`` into the element ``selector`` finds, as keystrokes would (React sees it),
        replacing what it holds."""
        found = self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; "
            "e.focus(); if (e.select) e.select(); return true; })()"
        )
        if not found:
            raise BrowserError(f"no element {selector}")
        self.send("Input.insertText", text=text)

    def click(self, selector: str) -> None:
        if not self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; "
            "e.click(); return true; })()"
        ):
            raise BrowserError(f"no element {selector}")

    def click_text(self, selector: str, text: str) -> None:
        """Click the last element ``selector`` finds whose text is ``text`` (a menu item, a button)."""
        if not self.js(
            f"(() => {{ const e = Array.from(document.querySelectorAll({json.dumps(selector)}))"
            f".filter(e => e.innerText.trim() === {json.dumps(text)}).pop(); if (!e) return false; "
            "e.click(); return true; })()"
        ):
            raise BrowserError(f"no {selector} reading {text!r}")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str = "") -> Any:
        """Until the expression is truthy; its value. Fails naming ``what`` and the page's text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.js(expression)
            except BrowserError:
                value = None
            if value:
                return value
            time.sleep(0.25)
        text = self.js("document.body ? document.body.innerText.slice(0, 1500) : ''")
        raise BrowserError(f"waited {timeout:.0f} s for {what or expression}; the page shows:\n{text}")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.socket.close()
        finally:
            self._stop_chromium()

    def _stop_chromium(self) -> None:
        """Chromium and its helper processes (its own process group), then its profile."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
