"""Fair lanes: messages waiting for their signature check, one lane per claimed sender.

Why: a flood of forgeries must cost the flood its own place in line, not the genuine vendors'.
Each message waits in the lane of the pinned vendor whose key it names (read
cheaply from its header, before verification); every message naming no pinned key shares ONE
lane (UNKNOWN). `take` serves the vendor lanes round-robin, one message each a round, and the
shared unknown lane one message at the end of each round: all strangers together get the place
of one vendor. So a forger naming vendor A's key slows A's own lane (those forgeries must be
verified to be told apart) but not B's.

Bounded per lane, in total and in bytes. `admit` never drops: when a bound is reached it says
no, and the caller waits (backpressure: it stops taking from the broker, which keeps the rest).
Pure: no threads, no clocks; the daemon wraps it with a lock (service.py).
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any, Hashable

log = logging.getLogger(__name__)

UNKNOWN = None   # the lane key of every message that names no pinned vendor's key


@dataclass
class Lanes:
    """FIFO within a lane; round-robin across vendor lanes; the unknown lane last in each round."""

    per_lane: int                 # messages at most in one lane
    total: int                    # messages at most in all lanes together
    max_bytes: int                # payload bytes at most in all lanes together
    size: int = 0
    bytes: int = 0
    _lanes: dict[Hashable, collections.deque] = field(default_factory=dict)
    _turn: collections.deque = field(default_factory=collections.deque)   # non-empty vendor lanes, next first
    _unknown: collections.deque = field(default_factory=collections.deque)
    _left: int = 0                # vendor lanes still to serve in this round
    _strangers_served: bool = True    # a round starts with the vendors

    def __post_init__(self) -> None:
        if min(self.per_lane, self.total, self.max_bytes) < 1:
            raise ValueError("lane bounds must be positive")

    def room(self, key: Hashable, nbytes: int) -> bool:
        """Whether a message of `nbytes` for lane `key` fits now. An empty box always takes one
        message, whatever its size, so no single message can wait forever."""
        if self.size == 0:
            return True
        lane = self._unknown if key is UNKNOWN else self._lanes.get(key)
        return (self.size < self.total and self.bytes + nbytes <= self.max_bytes
                and (lane is None or len(lane) < self.per_lane))

    def admit(self, key: Hashable, item: Any, nbytes: int) -> bool:
        """Queue `item` in lane `key`; False (nothing changed) if a bound says wait."""
        if not self.room(key, nbytes):
            return False
        if key is UNKNOWN:
            self._unknown.append((item, nbytes))
        else:
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = collections.deque()
                self._turn.append(key)        # a new lane joins the current round at its end
            lane.append((item, nbytes))
        self.size += 1
        self.bytes += nbytes
        return True

    def take(self, n: int) -> list[Any]:
        """Up to `n` messages in fair order (empty if none wait)."""
        out: list[Any] = []
        while len(out) < n and self.size:
            if self._left == 0:                       # a round is over
                if self._unknown and not self._strangers_served:
                    out.append(self._pop(self._unknown))   # the strangers' one place in it
                    self._strangers_served = True
                    continue
                self._left = len(self._turn)         # a new round: each vendor lane once
                self._strangers_served = False
                if self._left == 0:
                    continue                          # only strangers wait: served above
            key = self._turn.popleft()
            self._left -= 1
            lane = self._lanes[key]
            out.append(self._pop(lane))
            if lane:
                self._turn.append(key)                # again next round
            else:
                del self._lanes[key]                  # an empty lane costs nothing
        return out

    def _pop(self, lane: collections.deque) -> Any:
        item, nbytes = lane.popleft()
        self.size -= 1
        self.bytes -= nbytes
        return item

    def lengths(self) -> dict[Hashable, int]:
        """Messages waiting per lane (status and tests)."""
        out: dict[Hashable, int] = {k: len(v) for k, v in self._lanes.items()}
        if self._unknown:
            out[UNKNOWN] = len(self._unknown)
        return out
