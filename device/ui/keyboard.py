"""The keyboard stands in for the buttons when the display is emulated: arrows, Enter (select),
Esc or Backspace (back), h (home); a key held down for the hold time is a long press.

A terminal reports no key releases, only auto-repeat: a key counts as held while repeats keep
coming, and as released after `release_gap` without one (so a tap is reported that long after
it). pygame reports real key-down and key-up. `HoldTracker` is the pure part both use.
"""
from __future__ import annotations

import logging
import os
import select
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

TERMINAL_KEYS = {"\x1b[A": "up", "\x1b[B": "down", "\x1b[C": "right", "\x1b[D": "left",
                 "\r": "select", "\n": "select", " ": "select", "\x1b": "back", "\x7f": "back",
                 "\x08": "back", "h": "home", "k": "up", "j": "down"}
RELEASE_GAP_S = 0.6        # longer than a terminal's auto-repeat delay (typically 250-500 ms)

Emit = Callable[[str, str], None]


@dataclass
class HoldTracker:
    """Turns key-down / key-up (or repeats) into ("down" | "short" | "long") per role."""
    hold_time: float
    release_gap: float | None = None          # None: real key-up events arrive
    _down: dict[str, list[Any]] = field(default_factory=dict)   # role -> [since, last_seen, long_sent]

    def down(self, role: str, now: float) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.release_gap is not None:                        # a new key ends the others
            for other in [r for r in self._down if r != role]:
                out += self.up(other, now)
        if role in self._down:
            self._down[role][1] = now
            return out
        self._down[role] = [now, now, False]
        return out + [(role, "down")]

    def up(self, role: str, now: float) -> list[tuple[str, str]]:
        entry = self._down.pop(role, None)
        if entry is None or entry[2]:
            return []
        return [(role, "short")]

    def poll(self, now: float) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for role, entry in list(self._down.items()):
            since, last, long_sent = entry
            if self.release_gap is not None and now - last > self.release_gap:
                out += self.up(role, now)
                continue
            if not long_sent and now - since >= self.hold_time:
                entry[2] = True
                out.append((role, "long"))
        return out


def parse_terminal(buf: str) -> tuple[list[str], str]:
    """Roles for the complete key sequences in `buf`, and the incomplete rest."""
    roles: list[str] = []
    i = 0
    while i < len(buf):
        ch = buf[i]
        if ch == "\x1b" and buf[i + 1:i + 2] == "[":
            if i + 2 >= len(buf):
                break                                   # the rest of the sequence is to come
            role = TERMINAL_KEYS.get(buf[i:i + 3])
            if role:
                roles.append(role)
            i += 3                                      # an unknown sequence is skipped
            continue
        role = TERMINAL_KEYS.get(ch)
        if role:
            roles.append(role)
        i += 1
    return roles, buf[i:]


class TerminalKeys:
    """Reads keys from the controlling terminal in raw mode (the asciiblock display draws on
    the same terminal); emits to `emit` from its own thread."""

    def __init__(self, emit: Emit, hold_time: float, clock: Callable[[], float],
                 stream: Any = None) -> None:
        self.emit, self.clock = emit, clock
        self.stream = stream or sys.stdin
        self.tracker = HoldTracker(hold_time, RELEASE_GAP_S)
        self._stop = threading.Event()
        self._saved: Any = None

    def start(self) -> bool:
        if not self.stream.isatty():
            log.info("no terminal on stdin: keyboard input is off")
            return False
        import termios
        import tty
        fd = self.stream.fileno()
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        threading.Thread(target=self._run, name="vrmbox-ui-keys", daemon=True).start()
        return True

    def _run(self) -> None:
        fd, buf = self.stream.fileno(), ""
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.05)
            now = self.clock()
            if ready:
                data = os.read(fd, 64).decode("latin-1")
                roles, buf = parse_terminal(buf + data)
                for role in roles:
                    for ev in self.tracker.down(role, now):
                        self.emit(*ev)
            for ev in self.tracker.poll(now):
                self.emit(*ev)

    def stop(self) -> None:
        self._stop.set()
        if self._saved is not None:
            import termios
            termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved)


class PygameKeys:
    """Key-down / key-up from the pygame emulator window; `pump(now)` runs on the main thread
    (pygame wants that), before each frame."""

    def __init__(self, emit: Emit, hold_time: float) -> None:
        import pygame
        self.pg, self.emit = pygame, emit
        self.tracker = HoldTracker(hold_time)
        k = pygame
        self.keys = {k.K_UP: "up", k.K_DOWN: "down", k.K_LEFT: "left", k.K_RIGHT: "right",
                     k.K_RETURN: "select", k.K_KP_ENTER: "select", k.K_SPACE: "select",
                     k.K_ESCAPE: "back", k.K_BACKSPACE: "back", k.K_h: "home"}

    def pump(self, now: float) -> None:
        if not self.pg.display.get_init():
            return
        for e in self.pg.event.get():              # all of them: per-type gets lose the order
            if e.type == self.pg.QUIT:
                self.pg.event.post(e)                  # luma's window closes on it
                break
            if e.type not in (self.pg.KEYDOWN, self.pg.KEYUP):
                continue
            role = self.keys.get(e.key)
            if role is None:
                continue
            evs = self.tracker.down(role, now) if e.type == self.pg.KEYDOWN else self.tracker.up(role, now)
            for ev in evs:
                self.emit(*ev)
        for ev in self.tracker.poll(now):
            self.emit(*ev)
