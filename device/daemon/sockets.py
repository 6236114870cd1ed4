"""The daemon's side of the local interface: Unix sockets speaking JSON lines.

Request: one line `{"op": "...", "args": {...}}`, strict JSON (a name given twice anywhere is
refused). Reply: one line `{"ok": true, "result": ...}`
or `{"ok": false, "error": "..."}`. `{"op": "subscribe"}` instead streams one event per line
until the client hangs up. Each connection's role comes from the kernel's peer credentials and
the config's allow-lists (access.py); what a role may do comes from ops.OPS.
"""
from __future__ import annotations

import json
import pwd
import logging
import os
import queue
import socket
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import Any, Callable

from ..client import MAX_REQUEST, REPLY_TIMEOUT_S
from ..market import MarketError
from .access import Access, Peer, peer_of
from .events import EventBus
from .ops import lookup

log = logging.getLogger(__name__)

MAX_CLIENTS = 64          # connections served at once per socket; more wait in the backlog
MAX_PER_UID = 24          # deployed: one user may hold at most this many of them (streams included)
MAX_REFUSALS = 8          # refusals answered at once; past that a refused peer is just closed
REFUSE_TIMEOUT_S = 2
MAX_REFUSED_READ = 4096
REQUEST_TIMEOUT_S = 5     # for the request line: a slow client cannot hold a slot

Submit = Callable[[str, dict[str, Any], str], Future]


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Strict JSON: a name given twice (`{"op": "status", "op": "erase"}`) is refused, never
    resolved to whichever came last."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """A request line as (op, args), or MarketError: what any local client can send (pure)."""
    if len(line) > MAX_REQUEST:
        raise MarketError("request too large")
    try:
        req = json.loads(line, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise MarketError(f"request is not strict JSON: the name {json.dumps(str(exc)[:64])}"
                          " appears twice") from exc
    except (ValueError, RecursionError) as exc:
        raise MarketError("request is not JSON") from exc
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        raise MarketError("request must be {\"op\": ..., \"args\": {...}}")
    op, args = req["op"], req.get("args") or {}
    if not isinstance(args, dict):
        raise MarketError("args must be an object")
    return op, args


class ControlServer:
    """Accepts local connections; each request runs on the daemon's worker via `submit`."""

    def __init__(self, path: Path | str, kind: str, access: Access, submit: Submit,
                 events: EventBus, status: Callable[[str], dict[str, Any]]) -> None:
        self.path = Path(path)
        self.kind = kind            # access.CONTROL_SOCKET or access.BUTTON_SOCKET
        self.access = access
        self.submit = submit
        self.events = events
        self.status = status
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._refusals = threading.BoundedSemaphore(MAX_REFUSALS)
        self._per_uid: dict[int, int] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_socket():
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Single user: only the box's user can even connect. With allow-lists the peer check
        # decides, so the file is open to connect and the kernel's credentials are the gate.
        mode = 0o600 if self.access.single_user else 0o666
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, mode)
        sock.listen(16)
        sock.settimeout(0.5)
        self._sock = sock
        threading.Thread(target=self._accept, name=f"vrmbox-{self.kind}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._sock:
            self._sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _accept(self) -> None:
        """The kernel's word on the peer comes first: a caller with no role never takes one of
        the slots the box's own face and the phone app need, and no uid can take them all."""
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()  # type: ignore[union-attr]
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                peer = peer_of(conn)
            except OSError:
                conn.close()
                continue
            role = self.access.role(self.kind, peer)
            if role is None:
                if self._refusals.acquire(blocking=False):
                    threading.Thread(target=self._refuse, args=(conn, peer), daemon=True).start()
                else:
                    conn.close()
                continue
            with self._lock:
                busy = self._per_uid.get(peer.uid, 0)
                if busy >= MAX_PER_UID and not self.access.single_user:
                    conn.close()
                    log.warning("%s.sock: uid %d already has %d connections; refused one more",
                                self.kind, peer.uid, busy)
                    continue
                self._per_uid[peer.uid] = busy + 1
            if not self._slots.acquire(timeout=5):
                self._release_uid(peer.uid)
                conn.close()
                continue
            threading.Thread(target=self._serve_counted, args=(conn, peer, role), daemon=True).start()

    def _release_uid(self, uid: int) -> None:
        with self._lock:
            self._per_uid[uid] -= 1
            if not self._per_uid[uid]:
                del self._per_uid[uid]

    def _admitted(self) -> str:
        """Who this socket admits, by account name, for the refusal a person reads."""
        d = self.access.describe()
        uids = [d["own_uid"]] if self.kind == "control" or d["single_user"] else []
        uids += list(d[f"{self.kind}_users"])  # type: ignore[arg-type]
        names = []
        for uid in uids:
            try:
                names.append(pwd.getpwuid(int(uid)).pw_name)
            except KeyError:
                names.append(f"uid {uid}")
        return f"{self.kind}.sock admits {', '.join(dict.fromkeys(names)) or 'nobody'}"

    def _refuse(self, conn: socket.socket, peer: Peer) -> None:
        log.warning("refused %s.sock to uid %d (pid %d): not on its allow-list", self.kind, peer.uid, peer.pid)
        try:
            with conn:
                conn.settimeout(REFUSE_TIMEOUT_S)
                try:
                    conn.recv(MAX_REFUSED_READ)    # let the client finish sending, then answer
                except OSError:
                    pass
                conn.sendall(json.dumps({"ok": False, "error": f"uid {peer.uid} may not use this socket"
                                                                  f" ({self._admitted()})"}).encode() + b"\n")
        except OSError:
            pass
        finally:
            self._refusals.release()

    def _serve_counted(self, conn: socket.socket, peer: Peer, role: str) -> None:
        try:
            self._serve(conn, role)
        except OSError as exc:       # the client hung up (a broken pipe while the reply flushed)
            log.debug("control client went away: %r", exc)
        finally:
            self._slots.release()
            self._release_uid(peer.uid)

    def _serve(self, conn: socket.socket, role: str) -> None:
        conn.settimeout(REQUEST_TIMEOUT_S)      # a request line arrives at once, or never
        with conn, conn.makefile("rwb") as f:
            try:
                line = f.readline(MAX_REQUEST + 1)
                if not line:
                    return
                conn.settimeout(REPLY_TIMEOUT_S + 5)
                op, args = parse_request(line)
                lookup(op, role)               # refused here: never reaches the worker
                if op == "subscribe":
                    self._stream(f)
                    return
                if op == "status":
                    result: Any = self.status(role)
                else:
                    try:
                        result = self.submit(op, args, role).result(timeout=REPLY_TIMEOUT_S)
                    except FuturesTimeout as exc:
                        raise MarketError("the box is busy: the request is queued and may still "
                                          "complete; check again") from exc
                reply = {"ok": True, "result": result}
            except (MarketError, ValueError, KeyError, TypeError) as exc:
                reply = {"ok": False, "error": str(exc)}
            except OSError:
                return
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
