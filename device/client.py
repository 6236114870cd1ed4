"""The client side of the box's local interface (docs/architecture.md): one JSON-line request per
connection to `control.sock` or `button.sock`, or a `subscribe` stream of events.

Why its own module: the CLI, the box's UI and the companion app are all clients; none of them may
import the daemon to talk to it.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Iterator

REPLY_TIMEOUT_S = 30     # how long the daemon waits on its worker before it answers "busy"
MAX_REQUEST = 256 * 1024  # the longest request line the daemon reads (device/daemon/sockets.py)


class ControlError(RuntimeError):
    """The daemon could not be reached, or refused the request (the message says why)."""


class DaemonNotRunning(ControlError):
    """No daemon answers on the socket."""


def call(path: Path | str, op: str, args: dict[str, Any] | None = None,
         timeout: float = REPLY_TIMEOUT_S + 5) -> Any:
    """One request to a running daemon; ControlError if it is not running or refuses."""
    request = json.dumps({"op": op, "args": args or {}}).encode() + b"\n"
    if len(request) > MAX_REQUEST:      # refused by the daemon mid-send: say why, not "Broken pipe"
        raise ControlError(f"request too large: {len(request)} bytes, the box takes at most "
                           f"{MAX_REQUEST} (256 KiB)")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(request)
            with s.makefile("rb") as f:
                line = f.readline()
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise DaemonNotRunning(f"the box daemon is not running (no socket at {path})") from exc
    except PermissionError as exc:
        raise ControlError(f"this user may not open {path}") from exc
    except OSError as exc:
        raise ControlError(f"cannot talk to the box daemon: {exc}") from exc
    if not line:
        raise ControlError("the box daemon closed the connection")
    try:
        reply = json.loads(line)
    except ValueError as exc:
        raise ControlError("the box daemon sent a reply that is not JSON") from exc
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise ControlError(reply.get("error", "refused") if isinstance(reply, dict) else "refused")
    return reply.get("result")


def daemon_running(path: Path | str) -> bool:
    """Is a daemon answering on this socket? (A socket file left by a killed daemon is not one.)"""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(path))
        return True
    except OSError:
        return False


def subscribe(path: Path | str, timeout: float | None = None) -> Iterator[dict[str, Any]]:
    """Events from a running daemon until the connection ends. Connects and waits for the
    daemon's "subscribed" before returning, so nothing that happens after this call is missed;
    ControlError if it is not running or refuses."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        s.sendall(b'{"op": "subscribe"}\n')
        f = s.makefile("rb")
        first = json.loads(f.readline() or b"{}")
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        s.close()
        raise DaemonNotRunning(f"the box daemon is not running (no socket at {path})") from exc
    except (OSError, ValueError) as exc:
        s.close()
        raise ControlError(f"cannot subscribe to the box daemon: {exc}") from exc
    if not isinstance(first, dict) or not first.get("ok"):
        f.close()
        s.close()
        raise ControlError(first.get("error", "the box daemon closed the connection")
                           if isinstance(first, dict) else "refused")
    return _events(s, f)


def _events(s: socket.socket, f: Any) -> Iterator[dict[str, Any]]:
    try:
        for line in f:
            yield json.loads(line)
    finally:
        f.close()
        s.close()
