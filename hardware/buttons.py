"""The board's buttons as gpiozero `Button`s: the only place that constructs them.

Why gpiozero's own pin-factory mechanism: the same code then runs on lgpio (Pi 5, Bookworm),
on other factories via $GPIOZERO_PIN_FACTORY, and on `MockFactory` in tests (pass `pin_factory`).
Each press is reported once as ("down"), then either ("short") on release or ("long") when held
for the profile's hold_time; a long press is not also a short one.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from .profile import Profile, logical_role

log = logging.getLogger(__name__)

# emit(role, kind): kind is "down", "short" or "long"; role after rotation.
Emit = Callable[[str, str], None]


class ButtonsError(RuntimeError):
    """A button's pin cannot be claimed; the message names the button and the pin."""


@dataclass
class _Tracked:
    name: str
    role: str
    button: Any
    held: bool = False


class Buttons:
    """The claimed buttons; `attach(emit)` starts reporting presses."""

    def __init__(self, tracked: list[_Tracked]) -> None:
        self._tracked = tracked
        self._lock = threading.Lock()

    @property
    def roles(self) -> dict[str, str]:
        """button name -> role (after rotation)."""
        return {t.name: t.role for t in self._tracked}

    def button(self, name: str) -> Any:
        return next(t.button for t in self._tracked if t.name == name)

    def attach(self, emit: Emit) -> None:
        for t in self._tracked:
            t.button.when_pressed = self._pressed(t, emit)
            t.button.when_held = self._held(t, emit)
            t.button.when_released = self._released(t, emit)

    def _pressed(self, t: _Tracked, emit: Emit) -> Callable[[], None]:
        def on() -> None:
            with self._lock:
                t.held = False
            emit(t.role, "down")
        return on

    def _held(self, t: _Tracked, emit: Emit) -> Callable[[], None]:
        def on() -> None:
            with self._lock:
                if t.held:
                    return
                t.held = True
            emit(t.role, "long")
        return on

    def _released(self, t: _Tracked, emit: Emit) -> Callable[[], None]:
        def on() -> None:
            with self._lock:
                was_held, t.held = t.held, False
            if not was_held:
                emit(t.role, "short")
        return on

    def close(self) -> None:
        for t in self._tracked:
            t.button.close()


def make_buttons(profile: Profile, pin_factory: Any = None) -> Buttons:
    """Claim every button of the profile (pull-ups, bounce_time, hold_time from it)."""
    try:
        from gpiozero import Button
        from gpiozero.exc import GPIOZeroError
    except ImportError as exc:  # pragma: no cover - gpiozero is a dependency of the pi/dev extras
        raise ButtonsError("gpiozero is not installed (pip install 'vrmbox[pi]')") from exc
    tracked: list[_Tracked] = []
    for spec in profile.buttons:
        try:
            button = Button(spec.pin, pull_up=profile.pull_up, bounce_time=profile.bounce_time,
                            hold_time=profile.hold_time, pin_factory=pin_factory)
        except (GPIOZeroError, OSError, RuntimeError, ValueError) as exc:
            for t in tracked:
                t.button.close()
            raise ButtonsError(f"profile {profile.name}: button {spec.name!r} on GPIO {spec.pin} "
                               f"cannot be claimed: {type(exc).__name__}: {exc}") from exc
        tracked.append(_Tracked(spec.name, logical_role(spec.role, profile.display.rotate), button))
    log.info("buttons: %s", ", ".join(f"{t.name}=GPIO{s.pin}->{t.role}"
                                      for t, s in zip(tracked, profile.buttons)))
    return Buttons(tracked)
