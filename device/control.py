"""The box's local interface: a Unix socket speaking JSON lines (docs/architecture.md).

Request: one line `{"op": "...", "args": {...}}`. Reply: one line `{"ok": true, "result": ...}`
or `{"ok": false, "error": "..."}`. `{"op": "subscribe"}` instead streams one event per line
until the client hangs up. The socket file is 0600 in the box's data dir: only the box's user
(the daemon's own buttons/display, the CLI, the companion app) can use it.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import Any, Callable

from . import pairing
from .events import EventBus
from .market import Market, MarketError

log = logging.getLogger(__name__)

MAX_REQUEST = 256 * 1024
REPLY_TIMEOUT_S = 30


class ControlError(RuntimeError):
    """The daemon could not be reached, or refused the request."""


def _need(args: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in args:
        raise MarketError(f"missing argument {name!r}")
    value = args[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise MarketError(f"argument {name!r} = {str(value)[:40]!r} has the wrong type")
    return value


def _opt(args: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    return _need(args, name, kind) if args.get(name) is not None else None


# op -> handler(market, args). The one table of what the local interface can do.
OPS: dict[str, Callable[[Market, dict[str, Any]], Any]] = {
    "intents": lambda m, a: m.list_intents(_opt(a, "status", str)),
    "intent_add": lambda m, a: m.add_intent(_need(a, "category", str), _opt(a, "attributes", dict),
                                            _opt(a, "description", str), _opt(a, "ttl", int)),
    "intent_preset": lambda m, a: m.add_intent_from_preset(_need(a, "name", str)),
    "intent_withdraw": lambda m, a: m.withdraw_intent(_need(a, "intent", str)),
    "offers": lambda m, a: m.ranked_offers(_opt(a, "intent", str), bool(a.get("all")), bool(a.get("all"))),
    "offer_accept": lambda m, a: m.accept(_need(a, "offer", str), list(_need(a, "fields", list)),
                                          _opt(a, "purpose", str), _opt(a, "duration_days", int)),
    "offer_decline": lambda m, a: m.decline(_need(a, "offer", str)),
    "offer_snooze": lambda m, a: m.snooze(_need(a, "offer", str),
                                          86400 if a.get("seconds") is None else _need(a, "seconds", int)),
    "confirm": lambda m, a: m.confirm(_need(a, "agreement", str), _need(a, "source", str)),
    "cancel": lambda m, a: m.cancel(_need(a, "agreement", str)),
    "revoke": lambda m, a: m.revoke(_need(a, "agreement", str), _opt(a, "reason", str)),
    "agreements": lambda m, a: m.list_agreements(),
    "vendors": lambda m, a: m.list_vendors(),
    "vendor_accept_key": lambda m, a: m.accept_vendor_key(_need(a, "vendor", str), _need(a, "did", str)),
    "vendor_status": lambda m, a: m.set_vendor_status(_need(a, "vendor", str), _need(a, "status", str)),
    "rejections": lambda m, a: m.rejections(),
    "rules": lambda m, a: m.rules(),
    "rules_set": lambda m, a: m.set_rules(_need(a, "rules", dict)),
    "setting_set": lambda m, a: m.set_setting(_need(a, "key", str), a.get("value")),
    # pairing phones with the box (device/pairing.py, docs/companion.md)
    "pair_code": lambda m, a: pairing.new_code(m.store),
    "pair_complete": lambda m, a: pairing.complete(m.store, _need(a, "code", str), _need(a, "name", str),
                                                   _opt(a, "client", str)),
    "phone_session": lambda m, a: pairing.session(m.store, _need(a, "secret", str)),
    "phones": lambda m, a: pairing.list_phones(m.store),
    "phone_unpair": lambda m, a: pairing.unpair(m.store, _need(a, "phone", str)),
}
READ_ONLY_OPS = frozenset({"intents", "offers", "agreements", "vendors", "rejections", "rules", "phones",
                           "phone_session"})
# What may be done on the button socket, and as whom each socket confirms: a client never says
# "I am the button" — the socket it can open says it.
BUTTON_OPS = frozenset({"confirm", "cancel", "agreements", "status"})
CONTROL_SOURCE = "companion"
BUTTON_SOURCE = "button"


def button_socket(control_socket: Path | str) -> Path:
    """The button handler's socket, next to the control socket (docs/architecture.md)."""
    return Path(control_socket).with_name("button.sock")


def dispatch(market: Market, op: str, args: dict[str, Any]) -> Any:
    handler = OPS.get(op)
    if handler is None:
        raise MarketError(f"unknown operation {op!r}")
    if not isinstance(args, dict):
        raise MarketError("args must be an object")
    return handler(market, args)


class ControlServer:
    """Accepts local connections; each request runs on the daemon's worker via `submit`."""

    def __init__(self, path: Path | str, submit: Callable[[str, dict[str, Any]], Future],
                 events: EventBus, status: Callable[[], dict[str, Any]] | None = None,
                 source: str = CONTROL_SOURCE, ops: frozenset[str] | None = None) -> None:
        self.path = Path(path)
        self.source = source      # who a "confirm" on this socket comes from
        self.ops = ops            # None: every operation
        self.submit = submit
        self.events = events
        self.status = status
        self._sock: socket.socket | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_socket():
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        sock.settimeout(0.5)
        self._sock = sock
        threading.Thread(target=self._accept, name="vrmbox-control", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._sock:
            self._sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()  # type: ignore[union-attr]
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            try:
                line = f.readline(MAX_REQUEST + 1)
                if not line:
                    return
                if len(line) > MAX_REQUEST:
                    raise MarketError("request too large")
                try:
                    req = json.loads(line)
                except ValueError as exc:
                    raise MarketError("request is not JSON") from exc
                if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                    raise MarketError("request must be {\"op\": ..., \"args\": {...}}")
                op, args = req["op"], req.get("args") or {}
                if not isinstance(args, dict):
                    raise MarketError("args must be an object")
                if self.ops is not None and op not in self.ops:
                    raise MarketError(f"operation {op!r} is not available on this socket")
                if op == "confirm":
                    args = {**args, "source": self.source}
                if op == "subscribe":
                    self._stream(f)
                    return
                if op == "status":
                    result: Any = self.status() if self.status else {}
                else:
                    try:
                        result = self.submit(op, args).result(timeout=REPLY_TIMEOUT_S)
                    except FuturesTimeout as exc:
                        raise MarketError("the box is busy: the request is queued and may still "
                                          "complete; check again") from exc
                reply = {"ok": True, "result": result}
            except (MarketError, ValueError, KeyError, TypeError) as exc:
                reply = {"ok": False, "error": str(exc)}
            except Exception as exc:  # reported, never fatal to the daemon
                log.exception("control request failed")
                reply = {"ok": False, "error": f"internal error: {type(exc).__name__}"}
            try:
                f.write(json.dumps(reply, default=str).encode() + b"\n")
                f.flush()
            except OSError:
                pass

    def _stream(self, f: Any) -> None:
        q = self.events.subscribe()
        try:
            f.write(b'{"ok": true, "result": "subscribed"}\n')
            f.flush()
            while not self._stop.is_set():
                try:
                    event = q.get(timeout=1.0)
                except queue.Empty:
                    continue
                f.write(json.dumps(event, default=str).encode() + b"\n")
                f.flush()
        except OSError:
            pass
        finally:
            self.events.unsubscribe(q)


def call(path: Path | str, op: str, args: dict[str, Any] | None = None,
         timeout: float = REPLY_TIMEOUT_S + 5) -> Any:
    """One request to a running daemon; ControlError if it is not running or refuses."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(json.dumps({"op": op, "args": args or {}}).encode() + b"\n")
            with s.makefile("rb") as f:
                line = f.readline()
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ControlError(f"the box daemon is not running (no socket at {path})") from exc
    except OSError as exc:
        raise ControlError(f"cannot talk to the box daemon: {exc}") from exc
    if not line:
        raise ControlError("the box daemon closed the connection")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "refused"))
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


def subscribe(path: Path | str, timeout: float | None = None) -> Any:
    """Yield events from a running daemon until the connection ends."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    s.sendall(b'{"op": "subscribe"}\n')
    f = s.makefile("rb")
    try:
        f.readline()
        for line in f:
            yield json.loads(line)
    finally:
        f.close()
        s.close()
