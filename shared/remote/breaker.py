"""A circuit breaker per remote endpoint: closed -> open after N consecutive failures -> half-open probe.

    closed ──N failures──► open ──cool-down──► half-open ──probe ok──► closed
                             ▲                      │
                             └─────probe fails──────┘

While open, callers are turned away at once (they answer from the local variant or with 503), so a dead
endpoint costs nothing per request. After the cool-down exactly one request, the probe, reaches the
endpoint; the others keep being turned away until it settles. One breaker per process (per warm Lambda
environment): each environment learns on its own, which is what a stateless function can afford.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic):
        if failures < 1:
            raise ValueError("SLIMSERVE_BREAKER_FAILURES must be at least 1")
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.transitions: list[tuple[str, str]] = []  # (from, to), for logs, metrics and tests

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def allow(self) -> bool:
        """May this request call the endpoint? In half-open, only the one probe may."""
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown_s:
                self._move(HALF_OPEN)
            if self._state == CLOSED:
                return True
            if self._state == HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._probing = False
            if self._state != CLOSED:
                self._move(CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state == HALF_OPEN or (self._state == CLOSED and self._failures >= self.threshold):
                self._opened_at = self._clock()
                self._move(OPEN)
            self._probing = False

    def release(self) -> None:
        """The call ended with neither verdict (the caller's own bad input): let another probe through."""
        with self._lock:
            self._probing = False

    def retry_after_s(self) -> float:
        """Seconds until the endpoint may be tried again (0 when it may be tried now)."""
        with self._lock:
            if self._state != OPEN:
                return 0.0
            return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def _move(self, state: str) -> None:
        self.transitions.append((self._state, state))
        self._state = state
