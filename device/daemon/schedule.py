"""When to publish each live intent again: its own random clock, never the connection's.

Why: intents are published retained, so a vendor that subscribes later still finds them; a
broker that lost its retained copies (restarted without persistence) gets them back from these
re-publishes. Re-publishing after a reconnect showed which intents came back together, and two
restarts' intersection named one box's intents exactly. So each intent is re-published at the
moments of its own Poisson process (exponential gaps with mean `intents.republish_every_s`),
drawn from a random source of its own, whether or not the box is connected: a moment that
falls while the box is offline is skipped, not made up after the reconnect. What a watcher
sees after a restart is then what it sees at any other time. Pure: time and randomness passed in.
"""
from __future__ import annotations

import random
from typing import Iterable


def next_time(now: float, mean_s: float, rng: random.Random) -> float:
    """The next moment of one intent's re-publish clock after `now`."""
    return now + rng.expovariate(1.0 / mean_s)


def updated(schedule: dict[str, float], live: Iterable[str], now: float, mean_s: float,
            rng: random.Random) -> dict[str, float]:
    """`schedule` (intent id -> next moment) for the intents live now: a new intent gets its own
    first moment, an intent no longer live is dropped, the others keep theirs."""
    return {i: schedule[i] if i in schedule else next_time(now, mean_s, rng) for i in live}


def take_due(schedule: dict[str, float], now: float, mean_s: float,
             rng: random.Random) -> str | None:
    """The intent whose moment came first (at most one per call, so two never leave together),
    its next moment drawn at once; None when none is due. Mutates `schedule`."""
    due = [(at, i) for i, at in schedule.items() if at <= now]
    if not due:
        return None
    _at, intent = min(due)
    schedule[intent] = next_time(now, mean_s, rng)
    return intent
