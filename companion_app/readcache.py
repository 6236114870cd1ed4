"""Answers to the box's read operations, kept until the box says something changed.

Why: ranking 10,000 offers takes the daemon's single worker a while, and twenty phones asking at
once would queue behind each other. The daemon streams an event for every change (a stored
offer, any write operation, a countersignature, a deletion receipt ...), so an answer can be
reused until the next event: a listener thread holds the `subscribe` stream and drops every
cached answer on each event. While that stream is not connected nothing is cached. What time
alone changes (an offer expiring, a snooze ending) is bounded by a short TTL: an answer older
than that, with no event since, is still given once more while one background call refreshes
it (so at most about TTL + one ranking stale). Concurrent misses for the same question share
one daemon call. Security checks (`phone_session`) never come from here.
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
MAX_PAGES = 256


@dataclass
class _Flight:
    gen: int
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
        self._refreshing: set[str] = set()
        self._pages: dict[str, tuple[int, float, str]] = {}
        self._live = False
        self._started = False
        self._stop = threading.Event()

    # ------------------------------------------------------------------ invalidation
    def invalidate(self) -> None:
        """Forget every answer (after a change this app made, or an event from the box)."""
        with self._lock:
            self._gen += 1
            self._entries.clear()
            self._pages.clear()

    def _set_live(self, live: bool) -> None:
        with self._lock:
            self._live = live
            self._gen += 1
            self._entries.clear()
            self._pages.clear()

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

    # ------------------------------------------------------------------ rendered pages
    def page(self, key: str, render: Callable[[], str]) -> str:
        """A rendered page, reused under the same rule as the reads it was made from: until the
        next event from the box (or TTL). Not cached while the event stream is down."""
        self.start()
        now = self._clock()
        with self._lock:
            live, gen = self._live, self._gen
            hit = self._pages.get(key)
            if live and hit and hit[0] == gen and now - hit[1] < self.ttl_s:
                return hit[2]
        html = render()
        with self._lock:
            if live and self._live and self._gen == gen:
                if len(self._pages) > MAX_PAGES:
                    self._pages.clear()
                self._pages[key] = (gen, now, html)
        return html

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
                return_direct = True
            else:
                return_direct = False
                gen = self._gen
                hit = self._entries.get(key)
                if hit and hit[0] == gen:
                    if now - hit[1] < self.ttl_s:
                        return hit[2]
                    # nothing changed but it is getting old: answer it, refresh in the background
                    if key not in self._refreshing:
                        self._refreshing.add(key)
                        threading.Thread(target=self._refresh, args=(key, op, args, gen), daemon=True).start()
                    return hit[2]
                flight = self._flights.get(key)
                leader = flight is None or flight.gen != gen
                if leader:
                    flight = self._flights[key] = _Flight(gen=gen)
        if return_direct:
            return self.box.call(op, args)
        assert flight is not None
        if not leader:
            if flight.done.wait(self.box.timeout) and flight.error is None:
                return flight.value
            if flight.error is not None:
                raise flight.error
            return self.box.call(op, args)
        try:
            flight.value = self._fetch(key, op, args, gen, now)
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            flight.done.set()
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
        return flight.value

    def _fetch(self, key: str, op: str, args: dict[str, Any] | None, gen: int, now: float) -> Any:
        value = self.box.call(op, args)
        with self._lock:
            if self._gen == gen:          # nothing changed while we asked
                self._entries[key] = (gen, now, value)
        return value

    def _refresh(self, key: str, op: str, args: dict[str, Any] | None, gen: int) -> None:
        try:
            self._fetch(key, op, args, gen, self._clock())
        except BoxError as exc:
            log.debug("background refresh of %s failed: %s", op, exc)
        finally:
            with self._lock:
                self._refreshing.discard(key)
