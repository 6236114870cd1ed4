"""Sending again what waits for a vendor's answer: a confirmed agreement until its
countersignature, a revocation until its acknowledgement (pure: time and randomness passed in).

Why: the market connection keeps no session, so an answer a vendor published while the box was
away (or reconnecting) is gone. The vendor answers the very same message again (the reference
kit re-sends its countersignature or its acknowledgement), so the box re-sends the same signed
token, sealed afresh, on a back-off until the answer comes. Why each on its own clock: messages
of several intents re-sent together, or right after a reconnect, would tie the intents to one
box; so each waits a delay drawn for it alone (first 15-60 s, then doubling to 15 minutes,
each drawn +-25 %), and at most one goes out per call.
"""
from __future__ import annotations

import random
from typing import Hashable, Iterable

FIRST_S = (15.0, 60.0)     # the first re-send, drawn for each message
MAX_S = 900.0              # the longest wait between two re-sends
SPREAD = 0.25              # each later delay drawn within +-25 % of the doubled one


class Resends:
    """When each waiting message goes out again."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._next: dict[Hashable, tuple[float, float]] = {}     # key -> (at, delay)

    def due(self, waiting: Iterable[Hashable], now: float) -> Hashable | None:
        """Of the messages waiting now, the one to send again now (the earliest due), else None.
        A message no longer waiting is forgotten; a new one gets its first moment."""
        keep: dict[Hashable, tuple[float, float]] = {}
        for key in waiting:
            if key in self._next:
                keep[key] = self._next[key]
            else:
                first = self._rng.uniform(*FIRST_S)
                keep[key] = (now + first, first)
        self._next = keep
        due = [(at, i, key) for i, (key, (at, _)) in enumerate(keep.items()) if at <= now]
        if not due:
            return None
        _at, _i, key = min(due)
        _, delay = keep[key]
        delay = min(MAX_S, delay * 2)
        keep[key] = (now + delay * self._rng.uniform(1 - SPREAD, 1 + SPREAD), delay)
        return key

    def __len__(self) -> int:
        return len(self._next)
