"""Per-vendor token buckets: one flooding vendor cannot starve the others. Pure; the clock is passed in."""
from __future__ import annotations


class RateLimiter:
    """`rate_per_minute` sustained, `burst` at once, per key; bounded number of keys."""

    def __init__(self, rate_per_minute: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float) -> bool:
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._buckets.clear()  # forgetting every bucket only ever lets more through
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True
