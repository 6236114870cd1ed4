"""Answers to the box's read operations, kept until the box says something changed.

Why: ranking 10,000 offers takes the daemon's single worker a while, and twenty phones asking at
once would queue behind each other. The daemon streams an event for every change (a stored
offer, any write operation, a countersignature, a deletion receipt ...), so an answer can be
reused until the next event: a listener thread holds the `subscribe` stream and drops every
cached answer on each event. While that stream is not connected nothing is cached. A short TTL
bounds what time alone changes (an offer expiring, a snooze ending). Concurrent misses for the
same question share one daemon call. Security checks (`phone_session`) never come from here.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .box import Box, BoxError

log = logging.getLogger(__name__)

CACHED_OPS = frozenset({"offers", "intents", "agreements", "vendors", "rules", "presets", "settings",
                        "profile", "stuff", "suppliers", "reviews", "claims"})
TTL_S = 5.0
RETRY_S = 1.0


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


class ReadCache:
    def __init__(self, box: Box, ttl_s: float = TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.box = box
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._gen = 0
        self._entries: dict[str, tuple[int, float, Any]] = {}
        self._flights: dict[str, _Flight] = {}
        self._live = False
        self._started = False
        self._stop = threading.Event()

    # ------------------------------------------------------------------ invalidation
    def invalidate(self) -> None:
        """Forget every answer (after a change this app made, or an event from the box)."""
        with self._lock:
            self._gen += 1
            self._entries.clear()

    def _set_live(self, live: bool) -> None:
        with self._lock:
            self._live = live
            self._gen += 1
            self._entries.clear()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                for event in self.box.events(idle_s=15.0):
                    if self._stop.is_set():
                        return
                    if event is None:
                        continue
                    if event.get("type") == "_subscribed":
                        self._set_live(True)
                    else:
                        self.invalidate()
            except (BoxError, OSError) as exc:
                log.debug("event stream for the read cache ended: %s", exc)
            self._set_live(False)
            self._stop.wait(RETRY_S)

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._listen, name="companion-readcache", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def live(self) -> bool:
        return self._live

    # ------------------------------------------------------------------ reads
    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """The box's answer to a read, from the cache when nothing changed since it was asked."""
        if op not in CACHED_OPS:
            return self.box.call(op, args)
        self.start()
        key = op + json.dumps(args or {}, sort_keys=True, default=str)
        now = self._clock()
        with self._lock:
            if not self._live:
                gen = None
            else:
                gen = self._gen
                hit = self._entries.get(key)
                if hit and hit[0] == gen and now - hit[1] < self.ttl_s:
                    return hit[2]
                flight = self._flights.get(key + f"#{gen}")
                leader = flight is None
                if leader:
                    flight = self._flights[key + f"#{gen}"] = _Flight()
        if gen is None:
            return self.box.call(op, args)
        assert flight is not None
        if not leader:
            flight.done.wait(self.box.timeout)
            if flight.error is not None:
                raise flight.error
            if flight.done.is_set():
                return flight.value
            return self.box.call(op, args)
        try:
            flight.value = self.box.call(op, args)
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            flight.done.set()
            with self._lock:
                self._flights.pop(key + f"#{gen}", None)
                if flight.error is None and self._gen == gen:   # nothing changed meanwhile
                    self._entries[key] = (gen, now, flight.value)
        return flight.value
