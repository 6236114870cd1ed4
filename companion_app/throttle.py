"""Per-client throttle of wrong pairing codes, in front of the box's own limits.

Why both: the box (device/pairing.py) bounds the wrong codes per client and per code, so
guessing is bounded even if this app were compromised; this throttle slows one noisy client on
the Wi-Fi and answers it without bothering the daemon.
Pure state + a clock passed in, so tests drive time.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

FREE_TRIES = 3            # wrong codes per client before it waits
BASE_S = 30               # then 30 s, 60 s, 120 s ... per further wrong code
MAX_S = 3600
MAX_CLIENTS = 4096        # memory bound: forget the oldest beyond this


@dataclass
class _Client:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0


def backoff_s(failures: int) -> int:
    if failures < FREE_TRIES:
        return 0
    return min(MAX_S, BASE_S * 2 ** (failures - FREE_TRIES))


class Throttle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._clients: dict[str, _Client] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """Seconds this client must still wait (0: may try now)."""
        with self._lock:
            c = self._clients.get(client)
            if c is None:
                return 0
            return max(0, int(c.locked_until - self._clock() + 0.999))

    def failed(self, client: str) -> int:
        """Count a wrong code; returns the wait now imposed on the client."""
        now = self._clock()
        with self._lock:
            c = self._clients.setdefault(client, _Client())
            c.failures += 1
            c.last = now
            wait = backoff_s(c.failures)
            c.locked_until = now + wait
            if len(self._clients) > MAX_CLIENTS:
                oldest = min(self._clients, key=lambda k: self._clients[k].last)
                del self._clients[oldest]
        log.warning("wrong pairing code from %s (%d in a row, wait %d s)", client, c.failures, wait)
        return wait

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)
