"""The UI process's imperative shell: the button-socket client, the event-stream thread,
reconnecting, and the render loop. Everything it decides is decided by navigation.step.

Why its own process, talking only to button.sock: a display fault never stops offer intake,
and the UI's user can open nothing else (no control.sock, no store, no MQTT). A press of the
box's button reaches the daemon as `confirm` on button.sock, which the daemon counts as the
person's consent.
"""
from __future__ import annotations

import logging
import socket
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from . import power as pw
from .navigation import initial, step
from .screens import frame
from .state import READS, BoxEvent, Connection, Done, Event, Failed, Key, Loaded, Refresh, Request, State

from device.client import ControlError, DaemonNotRunning, call, subscribe
from device.files import read_limited

log = logging.getLogger(__name__)

RETRY_S = 1.0               # between attempts to reach a stopped daemon
STATUS_EVERY_S = 5.0        # status is memory-only on the daemon: cheap to re-read
FULL_EVERY_S = 30.0         # a full re-read even with the stream (a slow subscriber loses events)
POLL_EVERY_S = 3.0          # when the socket offers no stream
WATCHDOG_S = 10.0           # systemd's WATCHDOG=1, sent while the render loop turns
CERT_LIMIT = 64 * 1024      # a certificate with its chain is a few KiB
DAEMON_DOWN = "box daemon not running, retrying"
_DOWN_MARKERS = ("not running", "cannot talk to the box daemon", "closed the connection")


def button_socket_of(cfg: Any) -> Path:
    """The socket the UI may open: control.button_socket, default button.sock next to control.sock."""
    return Path(cfg.control.button)


def companion_url_of(cfg: Any) -> str | None:
    """The phone app's pairing address on an installed box (HTTPS, the name mDNS advertises and
    its certificate holds); None on a development box, whose launcher knows the address."""
    c = getattr(cfg, "companion", None)
    if c is None or c.cert_file is None:
        return None
    return f"https://{socket.gethostname().lower()}.local:{c.port}/pair"


def companion_fingerprint_of(cfg: Any) -> str | None:
    """The SHA-256 of the phone app's certificate as browsers show it ("AB:CD:..."), for the
    pair screen: on a first visit the person compares it with the browser's certificate page.
    It is the value `vrmbox provision` printed and wrote to tls/companion.sha256, taken here from
    the certificate the app itself serves (companion.cert_file, world-readable like any
    certificate), so a replaced certificate can never be shown with an old fingerprint. None on
    a development box (plain HTTP) or when the file is not a certificate; the screen then shows
    none."""
    c = getattr(cfg, "companion", None)
    if c is None or c.cert_file is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(read_limited(c.cert_file, CERT_LIMIT))
    except (OSError, ValueError) as exc:
        log.warning("no certificate fingerprint for the pair screen: %s: %s", c.cert_file, exc)
        return None
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _is_down(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, DaemonNotRunning)) or any(m in str(exc) for m in _DOWN_MARKERS)


class App:
    """Owns the state; threads only post events into `inbox`; the loop thread steps and draws."""

    def __init__(self, sock: Path, device: Any, clock: Callable[[], float] = time.time,
                 on_frame: Callable[[State, Any], None] | None = None,
                 power_kw: dict[str, float] | None = None, pump: Callable[[float], None] | None = None,
                 contrast: int = 0xCF, pair_url: str | None = None, cert_fingerprint: str | None = None,
                 notify: Callable[[str], None] = lambda _state: None,
                 watchdog_s: float = WATCHDOG_S) -> None:
        self.sock, self.device, self.clock = sock, device, clock
        self.on_frame, self.pump, self.contrast = on_frame, pump, contrast
        self.notify, self.watchdog_s = notify, watchdog_s
        self.inbox: queue.Queue[Event] = queue.Queue()
        self.outbox: queue.Queue[Request | None] = queue.Queue()
        self.state = replace(initial(), pair_url=pair_url, cert_fingerprint=cert_fingerprint,
                             size=(int(device.width), int(device.height)))
        self.power = pw.start(clock(), **(power_kw or {}))
        self.stop_event = threading.Event()
        self.frames = 0
        self.applied = 0            # events stepped so far (tests and the bench wait on it)
        self.keys_applied = 0       # of them, button events: data arriving meanwhile is not a key
        self.changed = threading.Condition()
        self._last_drawn: tuple[Any, ...] | None = None

    # ------------------------------------------------------------------ input from threads
    def post(self, event: Event) -> None:
        self.inbox.put(event)

    def key(self, role: str, kind: str) -> None:
        """The buttons' / keyboard's emit."""
        self.post(Key(role, kind))

    # ------------------------------------------------------------------ requests thread
    def _requests(self) -> None:
        while not self.stop_event.is_set():
            req = self.outbox.get()
            if req is None:
                return
            try:
                result = call(self.sock, req.op, dict(req.args))
            except (ControlError, OSError, ValueError) as exc:
                if _is_down(exc):
                    self.post(Connection(False, DAEMON_DOWN))
                self.post(Failed(req, str(exc)))
                continue
            self.post(Loaded(req.op, result) if req.tag == "read" else Done(req, result))

    # ------------------------------------------------------------------ connection thread
    def _wait(self, seconds: float) -> bool:
        return self.stop_event.wait(seconds)

    def _connection(self) -> None:
        """Reach the daemon, follow its event stream; when it goes away, say so and retry.
        The stream is open before the reads that Connection(True) sets off, so nothing that
        changes after them is missed."""
        while not self.stop_event.is_set():
            try:
                call(self.sock, "status", timeout=5)
            except (ControlError, OSError, ValueError) as exc:
                self.post(Connection(False, DAEMON_DOWN if _is_down(exc) else str(exc)))
                self._wait(RETRY_S)
                continue
            try:
                stream = subscribe(self.sock)
            except (ControlError, OSError, ValueError) as exc:   # refused: poll instead
                log.info("no event stream (%s): polling", exc)
                self.post(Connection(True))
                self._poll_for(FULL_EVERY_S)
                continue
            self.post(Connection(True))
            try:
                for event in stream:
                    if self.stop_event.is_set():
                        return
                    if isinstance(event, dict):
                        self.post(BoxEvent(event))
            except (ControlError, OSError, ValueError) as exc:   # gone, or garbage
                log.debug("event stream ended: %s", exc)
            self._wait(0.2)

    def _poll_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            try:
                call(self.sock, "status", timeout=5)
            except (ControlError, OSError, ValueError):
                return
            self.post(Refresh(READS))
            self._wait(POLL_EVERY_S)

    # ------------------------------------------------------------------ the loop
    def _apply(self, event: Event) -> None:
        if isinstance(event, Key):
            self.power, passes = pw.on_key(self.power, event.role, event.kind, self.clock())
            if not passes:
                return
        self.state, requests = step(self.state, event)
        for req in requests:
            self.outbox.put(req)

    def _draw(self) -> None:
        now = self.clock()
        before = self.power.level
        self.power = pw.tick(self.power, now)
        if self.power.level != before or self._last_drawn is None:
            self._set_level(self.power.level)
        if self.power.level == "blank":
            key: tuple[Any, ...] = ("blank",)
        else:
            shift = pw.shift(self.power, now)
            key = (self.state, shift, int(now) // 10 if self.state.screen in ("status", "detail") else 0)
        if key == self._last_drawn:
            return
        self._last_drawn = key
        if self.power.level != "blank":
            img = frame(self.state, self.device.width, self.device.height, now, key[1])
            if img.mode != self.device.mode:
                img = img.convert(self.device.mode)
            self.device.display(img)
        self.frames += 1
        log.debug("shown: screen=%s offers=%d pending=%d connected=%s level=%s", self.state.screen,
                  len(self.state.data.offers), len(self.state.data.pending), self.state.connected,
                  self.power.level)
        if self.on_frame:
            self.on_frame(self.state, self.device)

    def _set_level(self, level: str) -> None:
        try:
            if level == "blank":
                self.device.hide()
            else:
                self.device.show()
                self.device.contrast(pw.DIM_CONTRAST if level == "dim" else self.contrast)
        except (OSError, AttributeError) as exc:
            log.warning("display level %s: %s", level, exc)

    def start(self) -> None:
        for target, name in ((self._requests, "requests"), (self._connection, "connection")):
            threading.Thread(target=target, name=f"vrmbox-ui-{name}", daemon=True).start()

    def run_once(self, timeout: float = 0.1) -> None:
        """One turn of the loop: pump keys, take events, draw if anything changed."""
        now = self.clock()
        if self.pump:
            self.pump(now)
        try:
            event: Event | None = self.inbox.get(timeout=timeout)
        except queue.Empty:
            event = None
        while event is not None:
            self._apply(event)
            self.applied += 1
            if isinstance(event, Key):
                self.keys_applied += 1
            try:
                event = self.inbox.get_nowait()
            except queue.Empty:
                event = None
        self._draw()
        with self.changed:
            self.changed.notify_all()

    def run(self) -> None:
        """Until stop(): the render loop, with the periodic re-reads."""
        self.start()
        next_status = next_full = next_dog = time.monotonic()
        while not self.stop_event.is_set():
            mono = time.monotonic()
            if mono >= next_dog:             # only a loop that turns feeds the watchdog
                self.notify("WATCHDOG=1")
                next_dog = mono + self.watchdog_s
            if mono >= next_status:
                self.post(Refresh(("status",)))
                next_status = mono + STATUS_EVERY_S
            if mono >= next_full:
                self.post(Refresh(READS))
                next_full = mono + FULL_EVERY_S
            self.run_once(0.05 if self.pump else 0.1)

    def stop(self) -> None:
        self.stop_event.set()
        self.outbox.put(None)

    def wait_for(self, pred: Callable[[State], bool], timeout: float = 10.0) -> State:
        """Block until the state (as drawn) satisfies `pred` (tests, bench); TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not pred(self.state):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"UI did not reach the expected state; it is on {self.state.screen}")
                self.changed.wait(min(left, 0.1))
        return self.state

    def settle(self, timeout: float = 10.0) -> State:
        """Block until every event posted so far has been stepped and drawn."""
        target = self.applied + self.inbox.qsize()
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.applied < target or not self.inbox.empty():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("UI did not settle")
                self.changed.wait(min(left, 0.1))
        return self.state
