"""Requests that wait for a press on the box: erase, accepting a vendor's new key, turning on
companion-only confirmation — asked for from the phone or the CLI, done only after the person
long-presses SELECT on the box (`approve` on `button.sock`).

Why in memory: a held request is a question to the person standing at the box now; after a
restart, or after HOLD_S, it is gone and must be asked again. Pure: the clock is passed in.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

HOLD_S = 300          # how long a request waits for the press
KEEP_DONE_S = 300     # how long its outcome stays readable by the one who asked
MAX_HELD = 16         # a client cannot queue up an unbounded list of questions
MAX_HELD_PER_ROLE = 3 # nor crowd out another asker's (the phone cannot block the box's own erase)


class HeldError(ValueError):
    """No such request waiting (unknown, expired, or already answered)."""


@dataclass
class Held:
    request: str
    op: str
    args: dict[str, Any]
    what: str
    requested_by: str
    role: str                          # the asker's role: the op runs as that role once pressed
    created_at: float
    status: str = "waiting"            # waiting | done | denied | failed | expired
    result: Any = None
    error: str | None = None
    answered_at: float | None = None

    def public(self) -> dict[str, Any]:
        out = {"request": self.request, "op": self.op, "what": self.what,
               "requested_by": self.requested_by, "status": self.status,
               "expires_at": int(self.created_at + HOLD_S)}
        if self.status == "done":
            out["result"] = self.result
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class HeldRequests:
    clock: Callable[[], float]
    _items: dict[str, Held] = field(default_factory=dict)

    def _expire(self) -> None:
        now = self.clock()
        for key, h in list(self._items.items()):
            if h.status == "waiting" and now - h.created_at > HOLD_S:
                h.status, h.answered_at = "expired", now
            if h.status != "waiting" and now - (h.answered_at or now) > KEEP_DONE_S:
                del self._items[key]

    def add(self, op: str, args: dict[str, Any], what: str, requested_by: str, role: str) -> Held:
        self._expire()
        waiting = [h for h in self._items.values() if h.status == "waiting"]
        for h in waiting:
            if h.op == op and h.args == args:
                return h                    # the same question again: one entry on the box
        if sum(h.role == role for h in waiting) >= MAX_HELD_PER_ROLE:
            raise HeldError(f"{MAX_HELD_PER_ROLE} of your requests already wait for a press on the box")
        if len(waiting) >= MAX_HELD:
            raise HeldError(f"{MAX_HELD} requests already wait for a press on the box")
        h = Held(secrets.token_hex(8), op, dict(args), what, requested_by, role, self.clock())
        self._items[h.request] = h
        log.info("request %s (%s) waits for a press on the box", h.request, op)
        return h

    def waiting(self) -> list[Held]:
        self._expire()
        return [h for h in self._items.values() if h.status == "waiting"]

    def get(self, request: str) -> Held:
        self._expire()
        h = self._items.get(request)
        if h is None:
            raise HeldError(f"no request {request!r} (it may have expired; ask again)")
        return h

    def take(self, request: str) -> Held:
        """The request to run now that the person pressed; it can be taken once."""
        h = self.get(request)
        if h.status != "waiting":
            raise HeldError(f"request {request} is {h.status}")
        h.status = "running"
        return h

    def finish(self, h: Held, result: Any = None, error: str | None = None) -> None:
        h.status = "failed" if error else "done"
        h.result, h.error, h.answered_at = result, error, self.clock()

    def deny(self, request: str) -> Held:
        h = self.take(request)
        h.status, h.answered_at = "denied", self.clock()
        return h
