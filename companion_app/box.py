"""The app's one seam to the box: requests over control.sock, and its event stream.

Why a class passed in through app config: the companion app never opens the store (it is sealed
with keys the companion's user cannot read), so every read and write is a daemon operation; tests
point a `Box` at a real daemon's socket, and everything else in the app only sees this interface.
"""
from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any, Iterator

from device.client import ControlError, DaemonNotRunning, call

log = logging.getLogger(__name__)

DOWN_MESSAGE = "the box daemon is not running"
HELD = "waiting_for_button"
SUBSCRIBED = "_subscribed"           # Box.events' own first item: the stream is connected


class BoxError(Exception):
    """Base: the box did not do what was asked."""


class BoxDown(BoxError):
    """The daemon is not answering; nothing was changed."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(DOWN_MESSAGE)
        self.detail = detail


class BoxSlow(BoxDown):
    """The daemon did not answer within the time the caller gave it (it may be busy)."""


class BoxRefused(BoxError):
    """The daemon answered with a refusal; the message says why (shown to the person)."""


def _is_down(exc: ControlError) -> bool:
    """No usable daemon (not running, unreachable, or not letting this user in)."""
    return isinstance(exc, DaemonNotRunning) or any(
        s in str(exc) for s in ("cannot talk to", "closed the connection", "may not open", "not JSON"))


class Box:
    """A client of one daemon's control socket."""

    def __init__(self, socket_path: Path | str, timeout: float = 35.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    def call(self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """One operation; `timeout` (seconds) bounds this call more tightly than the default."""
        try:
            return call(self.socket_path, op, args or {}, timeout=self.timeout if timeout is None else timeout)
        except ControlError as exc:
            if isinstance(exc.__cause__, TimeoutError):
                raise BoxSlow(str(exc)) from exc
            if _is_down(exc):
                raise BoxDown(str(exc)) from exc
            raise BoxRefused(str(exc)) from exc

    def running(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(str(self.socket_path))
            return True
        except OSError:
            return False

    def events(self, idle_s: float = 15.0) -> Iterator[dict[str, Any] | None]:
        """The daemon's events, one dict each; None after `idle_s` without one (a heartbeat, so a
        caller can re-check its session and notice a client that went away). BoxDown if no daemon."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(b'{"op": "subscribe"}\n')
        except OSError as exc:
            s.close()
            raise BoxDown(str(exc)) from exc
        buf = b""
        try:
            s.settimeout(idle_s)
            first = True
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    yield None
                    continue
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if first:      # the "subscribed" acknowledgement: say so, once
                        first = False
                        yield {"type": SUBSCRIBED}
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(event, dict):
                        yield event
        finally:
            s.close()
