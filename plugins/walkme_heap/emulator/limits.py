"""Heap's rate limits as the emulator enforces them: sliding 60-second windows.

A sliding window (rather than a token bucket) makes the guarantee checkable: no 60-second span ever
holds more accepted events than the limit, for the app or for any one identity.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

WINDOW_SECONDS = 60.0


@dataclass
class _Window:
    """Accepted event counts in the last WINDOW_SECONDS, as (time, count) entries."""

    entries: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def prune(self, now: float) -> None:
        cutoff = now - WINDOW_SECONDS
        while self.entries and self.entries[0][0] <= cutoff:
            self.total -= self.entries.popleft()[1]

    def wait_for(self, needed: int, limit: int, now: float) -> float:
        """Seconds until ``needed`` more events would fit under ``limit``."""
        excess = self.total + needed - limit
        freed = 0
        for when, count in self.entries:
            freed += count
            if freed >= excess:
                return max(0.0, when + WINDOW_SECONDS - now)
        return WINDOW_SECONDS

    def add(self, now: float, count: int) -> None:
        self.entries.append((now, count))
        self.total += count


class RateLimiter:
    """Per-app and per-identity events-per-minute limits; ``None`` turns a limit off."""

    def __init__(self, app_limit: int | None, identity_limit: int | None) -> None:
        self.app_limit = app_limit
        self.identity_limit = identity_limit
        self._apps: dict[str, _Window] = {}
        self._identities: dict[tuple[str, str], _Window] = {}

    def admit(self, app_id: str, identities: list[str], now: float) -> float | None:
        """Record the events and return None, or return seconds to wait (nothing recorded)."""
        app = self._apps.setdefault(app_id, _Window())
        per_identity = Counter(identities)
        waits: list[float] = []
        if self.app_limit is not None:
            app.prune(now)
            if app.total + len(identities) > self.app_limit:
                waits.append(app.wait_for(len(identities), self.app_limit, now))
        if self.identity_limit is not None:
            for identity, count in per_identity.items():
                window = self._identities.get((app_id, identity))
                if window is None:
                    continue
                window.prune(now)
                if window.total + count > self.identity_limit:
                    waits.append(window.wait_for(count, self.identity_limit, now))
        if waits:
            return max(waits)
        if self.app_limit is not None:
            app.add(now, len(identities))
        if self.identity_limit is not None:
            for identity, count in per_identity.items():
                self._identities.setdefault((app_id, identity), _Window()).add(now, count)
            if len(self._identities) > 200_000:
                self._drop_idle(now)
        return None

    def _drop_idle(self, now: float) -> None:
        for key in [k for k, w in self._identities.items() if (w.prune(now), w.total)[1] == 0]:
            del self._identities[key]
