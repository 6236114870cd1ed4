"""The replay check of protocol §11 for a long-running vendor: ids seen, until they expire.

Why not vrm_protocol.ReplayGuard: once full (200 000 ids) it prunes the whole map and scans
for the minimum on every new message. Here a heap by expiry makes pruning and eviction
O(log n) per message.
"""
from __future__ import annotations

import heapq
import logging

from vrm_protocol import ProtocolError
from vrm_protocol.codec import CLOCK_SKEW

log = logging.getLogger(__name__)


class ReplayWindow:
    """Message ids seen, until they expire (same interface as vrm_protocol.ReplayGuard)."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._seen: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._max = max_entries

    def __contains__(self, msg_id: str) -> bool:
        return msg_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_remember(self, msg_id: str, exp: int, now: float) -> None:
        if msg_id in self._seen:
            raise ProtocolError("replay", f"message id {msg_id} seen before")
        if len(self._seen) >= self._max:
            self.prune(now)
            while len(self._seen) >= self._max:   # still full: forget the soonest-expiring
                self._pop()
        self._seen[msg_id] = exp
        heapq.heappush(self._heap, (exp, msg_id))

    def prune(self, now: float) -> None:
        cutoff = now - CLOCK_SKEW
        while self._heap and self._heap[0][0] < cutoff:
            self._pop()

    def _pop(self) -> None:
        exp, msg_id = heapq.heappop(self._heap)
        if self._seen.get(msg_id) == exp:
            del self._seen[msg_id]
