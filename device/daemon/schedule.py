"""When to publish live intents again after a reconnect.

Why random and spread out: re-publishing all of a person's intents together, right after the box
came back, lets anyone on the broker tie them to one box (and a vendor that learned who the
person is through one agreement, to that person). Each intent gets its own moment within the
window, at least `min_gap_s` from any other. Pure: the random source is passed in.
"""
from __future__ import annotations

import random
from typing import Iterable

MIN_GAP_S = 1.0


def republish_times(intent_ids: Iterable[str], now: float, window_s: float, rng: random.Random,
                    min_gap_s: float = MIN_GAP_S) -> dict[str, float]:
    """intent id -> when to publish it again, in (now, now + window] (widened if the intents
    cannot all fit `min_gap_s` apart), in a random order."""
    ids = list(intent_ids)
    rng.shuffle(ids)
    n = len(ids)
    if n == 0:
        return {}
    window = max(float(window_s), min_gap_s * n)
    slot = window / n
    # one moment in each slot of the window, jittered inside its slot but keeping the gap
    jitter = max(0.0, slot - min_gap_s)
    return {intent: now + i * slot + min_gap_s + rng.uniform(0, jitter) for i, intent in enumerate(ids)}
