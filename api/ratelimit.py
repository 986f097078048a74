"""A token bucket per API key for ingest: bursts are fine, a runaway gateway is slowed with 429s."""

from __future__ import annotations

import threading
import time


class TokenBuckets:
    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self._state: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: int, cost: float = 1.0) -> float:
        """Take `cost` tokens; returns 0 if allowed, else the seconds to wait before retrying."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= cost:
                self._state[key] = (tokens - cost, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (cost - tokens) / self.rate
