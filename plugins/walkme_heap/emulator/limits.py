"""Heap's rate limits as the emulator enforces them: sliding windows.

A sliding window (rather than a token bucket) makes the guarantee checkable: no 60-second span ever
holds more accepted track events than the limit, for the app or for any one identity, and no
30-second span holds more accepted ``add_user_properties`` updates of one identity than its limit.

The numbers are the emulator's own copy of ``heap_api.py``'s (on purpose: it is the other side of
the contract, and a change there must not silently change what is enforced here).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

WINDOW_SECONDS = 60.0  # track: "per minute"
USER_PROPERTIES_WINDOW_SECONDS = 30.0  # add_user_properties: "30 requests per 30 seconds"


@dataclass
class _Window:
    """Accepted counts in the last ``seconds``, as (time, count) entries."""

    entries: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0
    seconds: float = WINDOW_SECONDS

    def prune(self, now: float) -> None:
        cutoff = now - self.seconds
        while self.entries and self.entries[0][0] <= cutoff:
            self.total -= self.entries.popleft()[1]

    def wait_for(self, needed: int, limit: int, now: float) -> float:
        """Seconds until ``needed`` more would fit under ``limit``."""
        excess = self.total + needed - limit
        freed = 0
        for when, count in self.entries:
            freed += count
            if freed >= excess:
                return max(0.0, when + self.seconds - now)
        return self.seconds

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
        _drop_idle(self._identities, now)


class UserPropertiesLimiter:
    """``add_user_properties``: at most ``limit`` requests per identity per app_id in any
    USER_PROPERTIES_WINDOW_SECONDS span; ``None`` or 0 turns it off.

    A bulk request counts once against each identity it names (validation refuses an identity named
    twice). Like a leaky bucket per identity would for a single request, one identity over its limit
    refuses the whole request, and nothing of it is counted.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit or None
        self._identities: dict[tuple[str, str], _Window] = {}

    def admit(self, app_id: str, identities: list[str], now: float) -> float | None:
        """Count one request against each identity and return None, or return seconds to wait
        (nothing counted)."""
        if self.limit is None:
            return None
        waits: list[float] = []
        for identity in identities:
            window = self._identities.get((app_id, identity))
            if window is None:
                continue
            window.prune(now)
            if window.total + 1 > self.limit:
                waits.append(window.wait_for(1, self.limit, now))
        if waits:
            return max(waits)
        for identity in identities:
            key = (app_id, identity)
            window = self._identities.get(key)
            if window is None:
                window = self._identities[key] = _Window(seconds=USER_PROPERTIES_WINDOW_SECONDS)
            window.add(now, 1)
        if len(self._identities) > 200_000:
            self._drop_idle(now)
        return None

    def _drop_idle(self, now: float) -> None:
        _drop_idle(self._identities, now)


def _drop_idle(windows: dict[tuple[str, str], _Window], now: float) -> None:
    """Forget the identities with nothing left in their window (bounds memory on long runs)."""
    for key in [k for k, w in windows.items() if (w.prune(now), w.total)[1] == 0]:
        del windows[key]
