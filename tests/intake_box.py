"""A box's intake on a real on-disk store, fed messages directly (no broker): the shared harness
of the intake, hardening, consent and CLI tests."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from device.intake import Intake, Pre, Rejection
from device.market import Market
from device.ratelimit import RateLimiter
from device.store import Store


class Box:
    def __init__(self, path: Path, **intake_kw: Any) -> None:
        self.store = Store.open(path)
        self.market = Market(self.store)
        self.intake = Intake(self.market, limiter=RateLimiter(60, 20), max_bytes=64 * 1024,
                             clock=time.time, **intake_kw)
        self.intake.refresh()

    def feed(self, topic: str, payload: str | bytes) -> Any:
        raw = payload.encode() if isinstance(payload, str) else payload
        pre = self.intake.precheck(topic, raw)
        result = self.intake.handle(pre) if isinstance(pre, Pre) else pre
        if isinstance(result, Rejection):
            self.intake.count(result)
            self.intake.flush_counts()
        return result

    def outbox(self, topic: str) -> list[str]:
        return [r.payload for r in self.store.pending_outbox() if r.topic == topic]

    def reasons(self) -> dict[tuple[str, str | None], int]:
        return {(r, v): n for r, v, n in self.store.rejection_counts()}
