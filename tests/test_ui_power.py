"""Burn-in care (dim, blank, pixel shift; the waking press does nothing else) and the keyboard
stand-in for the buttons (held key = long press). Clocks are passed in: no sleeping."""
from __future__ import annotations

from device.ui import power as pw
from device.ui.keyboard import HoldTracker, parse_terminal


def test_dims_after_a_minute_and_blanks_after_five():
    p = pw.start(1000.0)
    assert pw.tick(p, 1059.0).level == "on"
    assert pw.tick(p, 1060.0).level == "dim"
    assert pw.tick(p, 1299.0).level == "dim"
    assert pw.tick(p, 1300.0).level == "blank"


def test_the_waking_press_is_swallowed_whole():
    p = pw.start(0.0)
    p, passes = pw.on_key(p, "select", "down", 400.0)       # dark screen: wakes, swallowed
    assert not passes and p.level == "on"
    p, passes = pw.on_key(p, "select", "long", 401.5)       # its hold is swallowed too
    assert not passes
    p, passes = pw.on_key(p, "select", "down", 402.0)       # the next press counts
    assert passes
    p, passes = pw.on_key(p, "select", "short", 402.1)
    assert passes and p.level == "on"


def test_a_press_while_on_keeps_it_on_and_counts():
    p = pw.start(0.0)
    p, passes = pw.on_key(p, "down", "down", 30.0)
    assert passes
    assert pw.tick(p, 80.0).level == "on" and pw.tick(p, 90.0).level == "dim"


def test_release_only_sources_wake_without_acting():
    p = pw.start(0.0)
    p, passes = pw.on_key(p, "up", "short", 100.0)           # a terminal sends no "down"
    assert not passes and p.level == "on"


def test_pixel_shift_walks_a_small_square():
    p = pw.start(0.0)
    seen = {pw.shift(p, t) for t in range(0, 600, 30)}
    assert seen == set(pw.SHIFTS) and all(abs(dx) <= 1 and abs(dy) <= 1 for dx, dy in seen)


def test_key_down_up_is_short_and_held_is_long():
    t = HoldTracker(hold_time=1.0)
    assert t.down("select", 0.0) == [("select", "down")]
    assert t.poll(0.5) == []
    assert t.up("select", 0.6) == [("select", "short")]
    assert t.down("select", 1.0) == [("select", "down")]
    assert t.poll(2.1) == [("select", "long")]
    assert t.poll(2.5) == []
    assert t.up("select", 3.0) == []


def test_terminal_repeats_are_a_hold_and_silence_is_a_release():
    t = HoldTracker(hold_time=1.0, release_gap=0.6)
    out = t.down("select", 0.0)
    for i in range(1, 13):                                   # auto-repeat every 0.1 s
        out += t.down("select", i * 0.1) + t.poll(i * 0.1)
    out += t.poll(2.0)
    assert out == [("select", "down"), ("select", "long")]
    out = t.down("up", 3.0) + t.poll(3.3) + t.poll(3.7)
    assert out == [("up", "down"), ("up", "short")]
    out = t.down("up", 5.0) + t.down("down", 5.1)            # another key ends the first
    assert out == [("up", "down"), ("up", "short"), ("down", "down")]


def test_terminal_sequences():
    assert parse_terminal("\x1b[A\x1b[B\x1b[C\x1b[D\r\x1bh") == (
        ["up", "down", "right", "left", "select", "back", "home"], "")
    assert parse_terminal("\x1b[") == ([], "\x1b[")
    assert parse_terminal("\x1b[Zq") == ([], "")             # unknown keys are ignored


def test_the_pygame_window_keys_are_the_buttons(monkeypatch):
    """A real pygame window on SDL's dummy video driver; key events as pygame delivers them."""
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    import pygame

    from device.ui.keyboard import PygameKeys
    from hardware.display import make_display
    from hardware.profile import emulated_profile
    from PIL import Image

    device = make_display(emulated_profile(64), "pygame")
    try:
        device.display(Image.new("1", (128, 64)))            # opens the window
        got = []
        keys = PygameKeys(lambda role, kind: got.append((role, kind)), hold_time=1.0)
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE))
        pygame.event.post(pygame.event.Event(pygame.KEYUP, key=pygame.K_ESCAPE))
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RETURN))
        keys.pump(10.0)
        device.display(Image.new("1", (128, 64)))            # drawing goes on between pumps
        keys.pump(11.5)
        pygame.event.post(pygame.event.Event(pygame.KEYUP, key=pygame.K_RETURN))
        keys.pump(11.6)
        assert got == [("back", "down"), ("back", "short"), ("select", "down"), ("select", "long")]
    finally:
        pygame.quit()
