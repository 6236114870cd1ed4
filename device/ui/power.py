"""Burn-in care for the OLED: dim after a minute idle, blank after five, move the picture by a
pixel now and then; any button wakes it, and the waking press does nothing else. Pure: the
clock is passed in."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)

DIM_AFTER_S = 60.0
BLANK_AFTER_S = 300.0
SHIFT_EVERY_S = 120.0
SHIFTS: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (1, 1), (0, 1))
DIM_CONTRAST = 0x10


@dataclass(frozen=True)
class Power:
    last_input: float
    level: str = "on"                    # on | dim | blank
    swallowing: frozenset[str] = frozenset()   # roles whose current press woke the screen
    dim_after: float = DIM_AFTER_S
    blank_after: float = BLANK_AFTER_S
    shift_every: float = SHIFT_EVERY_S


def start(now: float, **kw: float) -> Power:
    return Power(last_input=now, **kw)


def tick(p: Power, now: float) -> Power:
    """The level the screen should be at by now."""
    idle = now - p.last_input
    level = "blank" if idle >= p.blank_after else "dim" if idle >= p.dim_after else "on"
    return p if level == p.level else replace(p, level=level)


def on_key(p: Power, role: str, kind: str, now: float) -> tuple[Power, bool]:
    """(new power state, whether the key should reach the UI). A press that comes while the
    screen is dim or dark wakes it and is swallowed: its release or hold too."""
    p = tick(p, now)
    if kind == "down":
        if p.level != "on":
            return replace(p, level="on", last_input=now, swallowing=p.swallowing | {role}), False
        return replace(p, last_input=now, swallowing=p.swallowing - {role}), True
    if role in p.swallowing:
        return replace(p, last_input=now, swallowing=p.swallowing - {role}), False
    if p.level != "on":                  # a key source without "down" events (a terminal)
        return replace(p, level="on", last_input=now), False
    return replace(p, last_input=now), True


def shift(p: Power, now: float) -> tuple[int, int]:
    """The pixel offset for this moment: a slow walk round a 2x2 square."""
    return SHIFTS[int(now // p.shift_every) % len(SHIFTS)]
