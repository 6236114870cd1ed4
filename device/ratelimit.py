"""Token buckets per key: one flooding vendor cannot starve the others. Pure; the clock is passed in.

Bounded: past `max_keys` the least recently used bucket is forgotten (it had the longest to refill,
so forgetting it gives away the least), never all of them at once.
"""
from __future__ import annotations

import threading
from collections import OrderedDict


class RateLimiter:
    """`rate_per_minute` sustained, `burst` at once, per key; at most `max_keys` buckets."""

    def __init__(self, rate_per_minute: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()   # the network thread and the worker both ask

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, now: float) -> bool:
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return allowed
