"""The daemon: the one process that speaks MQTT and owns the store.

Threads: paho's network thread runs the cheap intake checks (no signature check) and puts each
message in the fair lane of the sender it claims (lanes.py); the dispatcher thread takes them
round-robin in batches, has their signatures checked (verify_pool.py: a process per CPU, or
in-process on one CPU), finishes the checks and queues the verified ones; one worker thread
owns the store (storing, ranking, the outbox, control requests); the control socket has its own
accept thread that hands requests to the worker. Messages addressed
to the box are acknowledged (manual PUBACK) only after they are stored, on the connection they
came on; the market connection keeps no session, so what a crash, a restart or an outage kept
from the box comes again as the vendors' re-sends of what no receipt named (docs/protocol.md).
"""
from __future__ import annotations

import collections
import dataclasses
import fcntl
import logging
import os
import queue
import random
import secrets
import signal
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from vrm_protocol import sign, topics

from .. import erase as erase_mod
from ..config import Config
from ..intake import Claim, Intake, Outcome, Pre, Rejection
from ..market import Market, MarketError, market_settings
from ..ratelimit import RateLimiter
from ..store import Store
from ..store.connection import FULL, storage_fault
from . import ops
from .access import BUTTON_SOCKET, CONTROL_SOCKET, build_access
from .events import EventBus
from . import mqtt as mqtt_edge
from . import receipts
from .resend import Resends
from . import lastrun
from .held import HeldError, HeldRequests
from .home import HomeLink
from .lanes import UNKNOWN, Lanes
from .verify_pool import InProcess, VerifyPool, make_verifier
from . import schedule
from .notify import notify
from .sockets import ControlServer

log = logging.getLogger(__name__)

TICK_S = 0.5
SESSION_TAKEN_OVER = 0x8E   # MQTT 5 DISCONNECT reason: another client connected with this id


@dataclass
class _Inbound:
    pre: Pre
    mid: int
    qos: int
    attempts: int = 0
    conn: int = 0       # the market connection it came on (an ack goes only to that one)


@dataclass
class _Waiting:
    """A message in a fair lane: not yet acknowledged, its signature not yet checked."""
    pre: Claim | Pre
    mid: int
    qos: int
    conn: int = 0


PRUNE_EVERY_S = 3600
WORKER_STALE_S = 15      # no loop of the worker for this long: stop feeding systemd's watchdog
# Who asked, as shown on the box: from the role the kernel's credentials gave, never from the
# caller's words (a phone app could otherwise write "nothing leaves the box" onto the screen).
ASKERS = {"companion": "the phone app", "owner": "the box's own user", "button": "the box"}
EVENTS_PER_MINUTE = 600  # refusals on the network thread that reach the event stream (the rest are counted)
MAX_ATTEMPTS = 3   # a message that keeps failing while the store works is dropped (its content is at fault)
BATCH_MAX = 64      # messages stored in one transaction (group commit)
RESEND_CHECK_S = 5.0    # how often waiting agreements and revocations are looked at (resend.py)
STORAGE_RETRY_S = 2.0   # while the store cannot write: try the oldest held message again this often
VERIFY_BATCH = 32       # messages handed to one verify process at a time (the hand-off is small next to them)


class AlreadyRunning(RuntimeError):
    pass


class Daemon:
    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        Path(cfg.data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_instance()
        self._open()
        if cfg.agreements.companion_only_confirmation and \
                self.store.get_setting("companion_only_confirmation") is None:
            self.store.set_setting("companion_only_confirmation", True)
        self.events = EventBus()
        self.box_id = self._box_id()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=cfg.intake.max_queue)
        self._stop = threading.Event()
        self._last_prune = 0.0
        self._retries: collections.deque[Any] = collections.deque()   # run one by one, first
        self._held: collections.deque[_Inbound] = collections.deque()   # unacked while storage fails
        self._hold_max = cfg.intake.max_queue
        self._storage: str | None = None          # None: writable; else FULL / FAILING
        self._storage_retry_at = 0.0
        self.storage_retry_s = STORAGE_RETRY_S
        self._connected = threading.Event()
        self._inflight: dict[int, int] = {}          # mqtt mid -> outbox id
        self._subscribed: set[str] = set()
        self._lock = threading.Lock()
        self._rng = random.Random(secrets.randbits(64))
        self._unreceipted = receipts.Waiting(self._rng)   # committed, receipt not yet signed
        self._republish_at: dict[str, float] = {}   # intent -> monotonic time to publish it again
        self._republish_rng = random.Random(secrets.randbits(64))   # its own: schedule.py
        self._resends = Resends(random.Random(secrets.randbits(64)))   # answers lost offline
        self._resend_checked = 0.0
        self._backoff: dict[int, tuple[float, float]] = {}   # outbox id -> (retry at, delay)
        self._refused: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        i = cfg.intake
        # Bounded: at most receive_maximum messages and max_pending_bytes of payloads. A lane
        # may take the whole window: the broker sends no more unacknowledged QoS 1 messages than
        # that, so a lane full of forgeries never blocks the network thread (which would make
        # every vendor wait behind them in the broker); only QoS 0 or huge payloads reach a bound.
        self._lanes = Lanes(per_lane=i.receive_maximum, total=i.receive_maximum,
                            max_bytes=i.max_pending_bytes)
        self._lanes_cv = threading.Condition()
        self._verifier: InProcess | VerifyPool = InProcess()    # the pool is started by run()
        self._dispatcher: threading.Thread | None = None
        self._dispatch_beat = time.monotonic()   # the dispatcher's last loop (watchdog)
        self._beat = time.monotonic()                # the worker's last sign of life
        self._takeovers = 0            # times a broker said another client took our id (status)
        self._client_id = ""
        self._retiring: mqtt.Client | None = None
        self._conn = 0                 # which market connection this is (acks: _ack)
        self._was_up = False           # the current client has had a connection (renew after it)
        self.client = self._make_client()
        self.home = HomeLink(cfg.home_broker, self.box_id) if cfg.home_broker else None
        c = cfg.control
        self.access = build_access(os.geteuid(), c.control_users, c.control_groups,
                                   c.button_users, c.button_groups)
        self.held = HeldRequests(clock)
        self._requested_by: dict[str, str] = {}      # agreement -> who accepted it (memory only)
        self._last_offer_at: int | None = None
        self._rejected_total = 0
        self._event_budget = RateLimiter(EVENTS_PER_MINUTE, EVENTS_PER_MINUTE // 6)
        self._live_intents = 0
        self._ticks = 0                 # periodic ticks done: a sign of life in `vrmbox status`
        self.control = ControlServer(c.socket, CONTROL_SOCKET, self.access, self.submit, self.events,
                                     self.status)
        self.button = ControlServer(c.button, BUTTON_SOCKET, self.access, self.submit, self.events,
                                    self.status)

    # ---------------------------------------------------------------- setup
    def _box_id(self) -> str:
        """A random id for the home broker's availability topic; not linked to any intent, and
        never seen on the market broker."""
        return self._setting_id("box_id", "box-")

    def _setting_id(self, key: str, prefix: str) -> str:
        value = self.store.get_setting(key)
        if not value:
            value = prefix + secrets.token_hex(8)
            self.store.set_setting(key, value)
        return value

    def client_id(self) -> str:
        """The market connection's client id: configured, else random and new for every
        connection, kept nowhere. Nothing relies on it being secret: the market link keeps no
        session (clean start, session expiry 0), so an id read from a broker's log names nothing
        once that connection has ended, and a stranger who takes a live connection under it
        does not keep the box out: the box comes back under a new id."""
        return self._client_id

    def _make_client(self) -> mqtt.Client:
        self._client_id = self.cfg.broker.client_id or "vrmbox-" + secrets.token_hex(8)
        client = mqtt_edge.make_client(self.cfg.broker, self._client_id, manual_ack=True)
        client.max_inflight_messages_set(50)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    # ---------------------------------------------------------------- paho callbacks (network thread)
    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _props: Any) -> None:
        if client is not self.client:           # a connection being replaced (_renew_client)
            client.disconnect()
            return
        if rc.is_failure:
            log.error("broker refused the connection: %s", rc)
            return
        log.info("connected to %s:%s (session present: %s)", self.cfg.broker.host, self.cfg.broker.port,
                 getattr(_flags, "session_present", None))
        with self._lock:
            self._subscribed.clear()
            self._inflight.clear()
            self._conn += 1         # a new connection: packet ids of the last one mean nothing here
            self._was_up = True
        self._connected.set()
        self._put(("connected", None))

    def _on_disconnect(self, client: Any, _ud: Any, _flags: Any, rc: Any, _props: Any) -> None:
        if client is self._retiring:          # the connection _renew_client is closing
            return
        self._connected.clear()
        if self._stop.is_set():
            return
        if getattr(rc, "value", None) == SESSION_TAKEN_OVER:   # a broker that says so
            log.error("another client connected under the market connection's client id")
            self._takeovers += 1
        else:
            log.warning("disconnected from broker (%s)", rc)
        if not self.cfg.broker.client_id and self._was_up:
            # the next connection under a new id: whoever used this one (read from a log) is
            # left with it, and the two do not throw each other out for ever. Only after a
            # connection that was up: a broker that refuses the login keeps paho's back-off.
            self._was_up = False
            self._put(("renew", None))

    def _on_publish(self, _c: Any, _ud: Any, mid: int, rc: Any, _props: Any) -> None:
        with self._lock:
            outbox_id = self._inflight.pop(mid, None)
        if outbox_id is None:
            return
        if mqtt_edge.is_refusal(rc):   # e.g. not authorised: terminal, never a hot retry loop
            self._put(("refused", (outbox_id, str(rc))))
            return
        self._put(("sent", outbox_id))

    def _on_message(self, client: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            result = self.intake.claim(msg.topic, msg.payload)
        except Exception:  # a bug must not take the network thread down
            log.exception("precheck failed on %s", msg.topic)
            result = Rejection("bad_encoding", None, "internal error")
        conn = self._conn if client is self.client else -1    # -1: a connection being replaced
        if isinstance(result, (Claim, Pre)):
            self._wait_in_lane(_Waiting(result, msg.mid, msg.qos, conn), len(msg.payload))
            return
        self._early_refusal(result, msg.mid, msg.qos, conn)

    def _early_refusal(self, result: Rejection | None, mid: int, qos: int, conn: int) -> None:
        """Refused before the store (or nothing to do): counted, then acknowledged at once."""
        if isinstance(result, Rejection):
            self.intake.count(result)  # memory only: a flood never queues ahead of real offers
            with self._lock:
                self._rejected_total += 1
            if self._event_budget.allow("precheck", time.monotonic()):   # screens see refusals too,
                self.events.publish({"type": "rejected", "reason": result.reason,  # a flood only a few
                                     "vendor": result.vendor})
        self._ack(mid, qos, conn)

    def _wait_in_lane(self, item: _Waiting, nbytes: int) -> None:
        """Into the lane of the vendor whose key it names (strangers share one). Blocks while
        the lanes are full: backpressure, the broker keeps the rest; nothing is dropped."""
        lane = item.pre.vendor if isinstance(item.pre, Claim) else UNKNOWN
        with self._lanes_cv:
            while not self._lanes.admit(lane, item, nbytes):
                if self._stop.is_set():
                    return                       # never acknowledged: the broker sends it again
                self._lanes_cv.wait(TICK_S)
            self._lanes_cv.notify_all()

    # ---------------------------------------------------------------- dispatcher thread
    def _dispatch(self) -> None:
        """Fair lanes -> signature checks (in batches) -> the last checks -> the worker's queue.
        Forgeries are refused (and acknowledged) here, never reaching the store's queue."""
        batch = VERIFY_BATCH * max(1, self._verifier.size)
        while not self._stop.is_set():
            self._dispatch_beat = time.monotonic()
            with self._lanes_cv:
                if not self._lanes.size:
                    self._lanes_cv.wait(TICK_S)
                items = self._lanes.take(batch)
                if items:
                    self._lanes_cv.notify_all()          # room: the network thread may go on
            if items:
                self._check(items)
            else:
                try:
                    self._verifier.heal()    # idle: replace a pool process that died
                except Exception:            # e.g. a spawn refused: try again next time
                    log.exception("could not replace a verify process")

    def _check(self, items: list[_Waiting]) -> None:
        claims = [it.pre for it in items if isinstance(it.pre, Claim)]
        jobs = [(c.payload, c.expect) for c in claims]
        try:
            verdicts = iter(self._verifier.verify(jobs, self.intake.clock()) if claims else [])
        except Exception:
            if self._stop.is_set():   # the pool closed: shutting down; unacknowledged, so not lost
                return
            log.exception("the verify pool failed on a batch; verifying it here")
            verdicts = iter(InProcess().verify(jobs, self.intake.clock()))
        for it in items:
            result: Pre | Rejection | None = it.pre if isinstance(it.pre, Pre) else None
            if isinstance(it.pre, Claim):
                try:
                    result = self.intake.settle(it.pre, next(verdicts))
                except Exception:  # a bug must not take the dispatcher down
                    log.exception("settle failed on %s", it.pre.topic)
                    result = Rejection("bad_encoding", None, "internal error")
            if isinstance(result, Pre):
                self._put(_Inbound(result, it.mid, it.qos, conn=it.conn))
            else:
                self._early_refusal(result, it.mid, it.qos, it.conn)

    def _ack(self, mid: int, qos: int, conn: int) -> None:
        """Only on the connection the message came on: a packet id of a closed connection may
        name another message on the new one. (What the old one left unacknowledged, the broker
        forgets with it; the vendor's re-send brings it again.)"""
        if qos > 0 and conn == self._conn:
            self.client.ack(mid, qos)

    def _put(self, item: Any) -> None:
        """Blocks when full: backpressure to the broker (which holds back what it has not sent)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    # ---------------------------------------------------------------- worker thread
    def submit(self, op: str, args: dict[str, Any], role: str) -> Future:
        """Run a control request on the worker thread (the store's owner)."""
        fut: Future = Future()
        self._put(("control", (op, args, role, fut)))
        return fut

    def heartbeat(self) -> bool:
        """systemd's watchdog is fed only while the worker makes progress: a stuck worker gets
        the daemon restarted instead of a box that looks alive and takes no offers."""
        alive = time.monotonic() - self._beat < WORKER_STALE_S
        if self._dispatcher is not None and not self._dispatcher.is_alive():
            log.error("the dispatcher thread has ended; not feeding the watchdog")
            return False
        if self._lanes.size and time.monotonic() - self._dispatch_beat > WORKER_STALE_S:
            log.error("messages wait and the dispatcher has made no progress for %.0f s; not "
                      "feeding the watchdog", time.monotonic() - self._dispatch_beat)
            return False
        if alive:
            notify("WATCHDOG=1")
        else:
            log.error("the worker has made no progress for %.0f s; not feeding the watchdog",
                      time.monotonic() - self._beat)
        return alive

    def _work(self) -> None:
        last_tick = 0.0
        while not self._stop.is_set() or (self._storage is None and not self._queue.empty()):
            self._beat = time.monotonic()
            self._send_due_receipt()
            if self._storage is not None:
                self._paused_step()          # receipts of what was committed before still go
                continue
            if self._retries:                # retried one by one, never in a batch again
                self._run(self._retries.popleft())
            else:
                try:
                    item = self._queue.get(timeout=self._wait_s())
                except queue.Empty:
                    item = None
                if isinstance(item, _Inbound):
                    self._run_batch(self._gather(item))
                elif item is not None:
                    self._run(item)
            if self._storage is None and time.monotonic() - last_tick >= TICK_S:
                last_tick = time.monotonic()
                try:
                    self._tick()
                except Exception as exc:  # never let the tick stop the box
                    fault = storage_fault(exc)
                    if fault is None:
                        log.exception("worker error in the periodic tick")
                    else:
                        self._pause(fault, None, exc)
        dropped = self._unreceipted.drop_all()
        if dropped:
            log.info("stopping: %d offer(s) stored but not yet receipted; their vendors' re-sends "
                     "are receipted after the restart", dropped)

    def _gather(self, first: _Inbound) -> list[Any]:
        """Group commit: what is already queued behind `first`, up to BATCH_MAX items. Never
        waits for more, so a single offer on an idle box is not delayed."""
        batch = [first]
        while len(batch) < BATCH_MAX:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run_batch(self, batch: list[Any]) -> None:
        """Consecutive messages are stored in one transaction (one sync) and acknowledged only
        after its commit; other items run in their place in the order they came."""
        i = 0
        while i < len(batch):
            if not isinstance(batch[i], _Inbound):
                self._run(batch[i])
                i += 1
                continue
            j = i
            while j < len(batch) and isinstance(batch[j], _Inbound):
                j += 1
            if not self._commit_run(batch[i:j]):
                self._retries.extend(batch[i:])   # one by one from here on, in arrival order
                return
            i = j

    def _commit_run(self, run: list[_Inbound]) -> bool:
        """False if the transaction failed (rolled back, nothing acknowledged)."""
        if len(run) == 1 or self._storage is not None:
            for item in run:
                if self._storage is None:
                    self._run(item)
                else:
                    self._held.append(item)
            return True
        try:
            outcomes = []
            with self.store.transaction():
                for item in run:
                    with self.store.savepoint() as part:
                        outcome = self.intake.handle(item.pre)
                        if isinstance(outcome, Rejection):
                            part.discard()      # a refused message writes nothing
                    outcomes.append(outcome)
        except Exception as exc:
            # Rolled back: memory forgets the batch, and each message is tried on its own, where
            # a store fault pauses the intake and any other failure is the message's alone.
            log.info("group commit of %d message(s) failed (%r); taking them one by one", len(run), exc)
            self._forget()
            return False
        for item, outcome in zip(run, outcomes):
            self._finish(item, outcome)
        self._send_receipts(list(zip(run, outcomes)))
        return True

    def _run(self, item: Any) -> None:
        """Handle one item; a message is acknowledged only once its result is committed."""
        try:
            self._handle(item)
        except Exception as exc:  # never let one bad item stop the box
            fault = storage_fault(exc)
            if not isinstance(item, _Inbound):
                log.exception("worker error on %r", type(item).__name__)
                return
            self._forget()
            item.attempts += 1   # its PUBACK is still owed
            if fault == FULL or (fault is not None and item.attempts >= MAX_ATTEMPTS):
                self._pause(fault, item, exc)
            elif item.attempts < MAX_ATTEMPTS:
                log.warning("could not handle a message on %s (attempt %d): %r", item.pre.topic,
                            item.attempts, exc)
                self._retries.append(item)  # not the queue: the worker must never block on it
            else:  # the store works; this message is what fails (a bug its content triggers)
                log.exception("dropping a message on %s after %d failures", item.pre.topic,
                              MAX_ATTEMPTS)
                self._ack(item.mid, item.qos, item.conn)

    # ---------------------------------------------------------------- storage faults (worker thread)
    def _pause(self, fault: str, item: _Inbound | None, exc: BaseException) -> None:
        """The store cannot write: stop taking messages (nothing more is acknowledged, so the
        broker holds back what it has not sent, up to Receive Maximum) and try again on a timer."""
        if item is not None:
            self._held.append(item)
        rest: collections.deque[Any] = collections.deque()
        while self._retries:                 # messages owe their PUBACK too: held in arrival order
            it = self._retries.popleft()
            (self._held if isinstance(it, _Inbound) else rest).append(it)
        self._retries = rest
        self._storage_retry_at = time.monotonic() + self.storage_retry_s
        if self._storage == fault:
            return
        self._storage = fault
        log.error("storage %s (%s): intake paused, nothing more is acknowledged; retrying every "
                  "%g s", "is full" if fault == FULL else "fails", exc, self.storage_retry_s)
        self.events.publish({"type": "storage_full" if fault == FULL else "storage_error",
                             "detail": str(exc)[:200]})

    def _paused_step(self) -> None:
        """While paused: hold new messages unacknowledged (up to a bound, then stop reading, so
        the network thread and the broker hold the rest), run control requests, retry."""
        if self._retries:                    # control requests left from a failed batch
            self._run(self._retries.popleft())
            return
        wait = self._storage_retry_at - time.monotonic()
        if wait <= 0:
            self._retry_held()
            return
        if len(self._held) >= self._hold_max:
            self._stop.wait(min(TICK_S, wait))
            return
        try:
            item = self._queue.get(timeout=min(TICK_S, wait))
        except queue.Empty:
            return
        if isinstance(item, _Inbound):
            self._held.append(item)
        else:
            self._run(item)

    def _retry_held(self) -> None:
        """Try the oldest held message again (or, with none held, the tick's writes)."""
        try:
            if self._held:
                self._handle(self._held[0])
            else:
                self._tick()
        except Exception as exc:
            if self._held:
                self._forget()
            fault = storage_fault(exc)
            if fault is not None:
                self._storage_retry_at = time.monotonic() + self.storage_retry_s
                if fault != self._storage:
                    self._storage = None
                    self._pause(fault, None, exc)
                log.info("storage still %s: %r", self._storage, exc)
                return
            if self._held:   # the store works again; this message is what fails
                item = self._held.popleft()
                item.attempts = 0
                self._retries.append(item)
        else:
            if self._held:
                self._held.popleft()
        log.warning("storage writable again: intake resumed (%d held message(s) to go)",
                    len(self._held))
        self._storage = None
        while self._held:
            item = self._held.pop()
            item.attempts = 0
            self._retries.appendleft(item)
        self.events.publish({"type": "storage_ok"})

    def _finish(self, item: _Inbound, outcome: Outcome | Rejection) -> None:
        """After the commit: count, announce, acknowledge."""
        if isinstance(outcome, Rejection):
            self.intake.count(outcome)
            with self._lock:
                self._rejected_total += 1
            self.events.publish({"type": "rejected", "reason": outcome.reason, "vendor": outcome.vendor})
        elif isinstance(outcome, Outcome) and outcome.event:
            if outcome.event.get("type") == "offer":
                self._last_offer_at = int(self.clock())
            self.events.publish(outcome.event)
        self._ack(item.mid, item.qos, item.conn)  # only now: the result is committed

    def _send_receipts(self, done: list[tuple[_Inbound, Outcome | Rejection]]) -> None:
        """After the commit: the offers it stored or already held wait for their receipt, each
        intent on its own random clock (receipts.Waiting), so receipts never tie intents together."""
        self._unreceipted.add([receipts.Stored(item.pre.intent, item.pre.msg.token if item.pre.msg
                                               else item.pre.payload.decode("ascii"))
                               for item, outcome in done if isinstance(outcome, Outcome)
                               and outcome.kind in ("offer", "duplicate") and item.pre.intent],
                              time.monotonic())

    def _wait_s(self) -> float:
        """How long the worker may wait for the next message: until the next receipt is due."""
        due = self._unreceipted.next_due()
        return TICK_S if due is None else min(TICK_S, max(0.005, due - time.monotonic()))

    def _send_due_receipt(self) -> None:
        """At most one intent's receipts per call: signed (intent key), published QoS 1 with
        expiry and not kept; a receipt lost on the way costs the vendor one re-send, which is
        receipted again (docs/protocol.md, receipts)."""
        if not self._connected.is_set():   # paho would not queue it: keep it for the reconnect
            return
        stored = self._unreceipted.take_due(time.monotonic())
        if not stored:
            return
        try:
            now = int(self.clock())
            rec = self.store.get_intent(stored[0].intent)
            if rec is None:                 # gone from the store meanwhile
                return
            for body in receipts.batch(stored, {rec.intent_id: rec.category}):
                token = sign(rec.identity, body, now=now, ttl=receipts.RECEIPT_TTL_S)
                if mqtt_edge.publish(self.client, topics.receipt(body.category, body.intent), token,
                                     retain=False, now=now) is None:
                    # not queued (the link just went): the whole intent waits again, on a
                    # fresh delay; a hash named twice costs the vendor nothing
                    self._unreceipted.add(stored, time.monotonic())
                    return
        except Exception:   # never let a receipt cost an offer: the vendor's re-send asks again
            log.exception("could not send receipts for %d offer(s)", len(stored))

    def _apply(self, item: _Inbound) -> Outcome | Rejection:
        """One message's writes (store, audit, ranking) in one transaction; a refusal writes nothing."""
        with self.store.transaction():
            return self.intake.handle(item.pre)

    def _forget(self) -> None:
        """After a rolled-back transaction: memory forgets what was never committed."""
        try:
            self.intake.reload()
        except Exception as exc:
            log.warning("could not reload the intake's caches: %r", exc)

    def _handle(self, item: Any) -> None:
        if isinstance(item, _Inbound):
            outcome = self._apply(item)
            self._finish(item, outcome)
            self._send_receipts([(item, outcome)])
            return
        kind, value = item
        if kind == "sent":
            self.store.mark_sent(value)
            self._backoff.pop(value, None)
        elif kind == "refused":
            self._refuse(*value)
        elif kind == "renew":
            self._renew_client()
        elif kind == "connected":
            self._unreceipted.redraw(time.monotonic())
            self._sync_subscriptions()
            self._flush_outbox()
        elif kind == "control":
            op, args, role, fut = value
            try:
                fut.set_result(self._control(op, args, role))
            except Exception as exc:  # reported to the caller, not fatal
                fut.set_exception(exc)

    # ---------------------------------------------------------------- the local interface (worker)
    def _control(self, op: str, args: dict[str, Any], role: str) -> Any:
        """One request from a socket, with the caller's role as the kernel told it."""
        spec = ops.lookup(op, role)
        if op == "pending":
            return self._pending()
        if op == "request":
            return self.held.get(str(args.get("request"))).public()
        if op == "approve":
            return self._approve(str(args.get("request")))
        if op == "deny":
            h = self.held.deny(str(args.get("request")))
            self.events.publish({"type": "changed", "op": "deny"})
            return h.public()
        what = ops.held_description(spec, args, role)
        if what is not None:
            h = self.held.add(op, args, what, requested_by=ASKERS[role],
                              role=role)
            self.events.publish({"type": "pending", "request": h.request, "what": what})
            return {**h.public(), "status": "waiting_for_button"}
        return self._execute(op, args, role)

    def _execute(self, op: str, args: dict[str, Any], role: str) -> Any:
        spec = ops.OPS[op]
        result = self._erase() if op == "erase" else ops.run(self.market, op, args, role)
        if spec.writes:
            self.intake.refresh()
            self._sync_subscriptions()
            self._flush_outbox()
            self.events.publish({"type": "changed", "op": op})
            if op == "offer_accept" and isinstance(result, dict) and result.get("agreement"):
                self._requested_by[result["agreement"]] = ASKERS[role]
                self.events.publish({"type": "pending", "agreement": result["agreement"]})
        return result

    def _approve(self, request: str) -> Any:
        """The person long-pressed on the box: run what was asked, as the one who asked."""
        h = self.held.take(request)
        try:
            result = self._execute(h.op, h.args, h.role)
        except (MarketError, HeldError, ValueError) as exc:
            self.held.finish(h, error=str(exc))
            raise
        self.held.finish(h, result=result)
        return h.public()

    def _pending(self) -> dict[str, Any]:
        """What waits for a press on the box: agreements to confirm, held requests."""
        agreements = [{"agreement": a["agreement"], "vendor": a["vendor"], "fields": a["fields"],
                       "purpose": a["purpose"], "duration_days": a["duration_days"],
                       "requested_by": self._requested_by.get(a["agreement"], "unknown")}
                      for a in self.market.list_agreements() if a["status"] == "pending_confirmation"]
        waiting = {a["agreement"] for a in agreements}
        for gone in set(self._requested_by) - waiting:     # answered ones: nothing to remember
            del self._requested_by[gone]
        return {"agreements": agreements, "requests": [h.public() for h in self.held.waiting()]}

    def _open(self) -> None:
        """(Re)build everything that holds the store or its keys."""
        cfg = self.cfg
        self.store = Store.open(cfg.data_dir, clock=self.clock)
        self.market = Market(self.store, market_settings(cfg), clock=self.clock)
        self.intake = Intake(self.market, limiter=RateLimiter(cfg.intake.per_vendor_per_minute,
                                                              cfg.intake.per_vendor_burst),
                             max_bytes=cfg.intake.max_message_bytes, clock=self.clock,
                             max_offers_per_vendor_intent=cfg.intake.max_offers_per_vendor_intent,
                             max_vendors=cfg.intake.max_vendors)

    def _erase(self) -> dict[str, Any]:
        """Erase on the worker: the daemon holds the keys in memory, so it must be the one to
        close, erase and reopen — and it can send the queued deletion requests at once. The old
        box id, client id, broker session and retained status go too: nothing links the old box
        to the new one."""
        self.store.close()
        try:
            result = erase_mod.erase(self.cfg.data_dir, clock=self.clock)
        finally:
            self._open()
        self.box_id = self._box_id()
        self._switch_client()
        log.warning("box erased: %d deletion request(s) queued", result.deletion_requests)
        return {"ok": True, **dataclasses.asdict(result)}

    def _switch_client(self) -> None:
        if self.home is not None:
            self.home.stop(clear=True)                          # the old retained status goes
            self.home = HomeLink(self.cfg.home_broker, self.box_id)  # type: ignore[arg-type]
            self.home.start()
        self._renew_client()

    def _renew_client(self) -> None:
        """A new market connection under a new client id; the old one is closed first."""
        old = self._retiring = self.client
        self._conn += 1
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0                         # the broker drops the old session
        old.disconnect(properties=props)
        stopper = threading.Thread(target=old.loop_stop, daemon=True)
        stopper.start()
        stopper.join(5)
        self._connected.clear()
        with self._lock:
            self._subscribed.clear()
            self._inflight.clear()
        self.client = self._make_client()
        self.connect()
        self.client.loop_start()

    def _tick(self) -> None:
        self._ticks += 1
        self.intake.flush_counts()
        now = int(self.clock())
        live = [r.intent_id for r in self.store.intent_states("active") if r.expires_at > now]
        self._live_intents = len(live)
        if time.monotonic() - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = time.monotonic()
            self.store.prune()
            self.intake.replay.prune(self.clock())
        if self.market.expire_intents():
            self.intake.refresh()
            self._sync_subscriptions()
        self._republish_due(live)
        self._resend_due()
        self._flush_outbox()

    def status(self, role: str | None = None) -> dict[str, Any]:
        """Called from the control thread: memory only, never the store."""
        return {"box_id": self.box_id, "connected": self._connected.is_set(),
                "queue": self._queue.qsize(), "inflight": len(self._inflight),
                "verifying": self._lanes.size, "verify_workers": self._verifier.size,
                "storage": self._storage or "ok", "held": len(self._held),
                "live_intents": self._live_intents, "ticks": self._ticks,
                "session_taken_over": self._takeovers,
                "last_offer_at": self._last_offer_at,
                "rejected_total": self._rejected_total,
                "last_stop": getattr(self, "_last_stop", None),   # set by run(): how the previous run ended
                "single_user": self.access.single_user, "role": role,
                "refused": list(self._refused),
                "home_broker": None if self.home is None else self.home.connected.is_set(),
                "access": ("single-user development setup: the box's own user may press the button"
                           if self.access.single_user else "deployed: each socket admits only its users")}

    def _sync_subscriptions(self) -> None:
        if not self._connected.is_set():
            return
        wanted = {topics.vendor_profiles()} | {topics.box_inbox(i) for i in self.intake.subscribed_intents}
        with self._lock:
            new = wanted - self._subscribed
            gone = self._subscribed - wanted
            self._subscribed = (self._subscribed | new) - gone
        for t in sorted(new):
            self.client.subscribe(t, qos=1)
        if gone:  # withdrawn/expired intents with nothing more to come: stop listening
            self.client.unsubscribe(sorted(gone))

    def _republish_due(self, live: list[str]) -> None:
        """Each live intent again at the moments of its own clock (schedule.py), connected or
        not: a moment missed offline is skipped, so a reconnect publishes nothing by itself."""
        t, mean = time.monotonic(), float(self.cfg.intents.republish_every_s)
        self._republish_at = schedule.updated(self._republish_at, live, t, mean, self._republish_rng)
        intent_id = schedule.take_due(self._republish_at, t, mean, self._republish_rng)
        if intent_id is None or not self._connected.is_set():
            return
        rec = self.store.get_intent(intent_id)
        if rec is not None and rec.status == "active" and rec.expires_at > int(self.clock()):
            mqtt_edge.publish(self.client, topics.intent(rec.category, rec.intent_id), rec.token,
                              retain=True, now=int(self.clock()))

    def _resend_due(self) -> None:
        """A message still waiting for the vendor's answer goes out again on its own clock
        (resend.py): the market link keeps no session, so an answer sent while the box was
        away is gone, and the vendor answers the same message again. Looked at every
        RESEND_CHECK_S; at most one message a time."""
        t = time.monotonic()
        if not self._connected.is_set() or t - self._resend_checked < RESEND_CHECK_S:
            return
        self._resend_checked = t
        key = self._resends.due(self.market.waiting_for_answer(), t)
        if key is None:
            return
        kind, agreement_id = key            # type: ignore[misc]
        again = self.market.message_again(kind, agreement_id)
        if again is not None:
            topic, sealed, exp = again
            log.info("no answer yet from the vendor to %s %s: sent again", kind, agreement_id)
            mqtt_edge.publish(self.client, topic, sealed, retain=False, now=int(self.clock()),
                              expires_at=exp)

    def _refuse(self, outbox_id: int, reason: str) -> None:
        """The broker will not take this message (its ACL, say): record it, show it, stop."""
        rec = next((r for r in self.store.pending_outbox() if r.id == outbox_id), None)
        topic = rec.topic if rec else "?"
        log.error("the broker refused the message to %s (%s); it will not be sent again", topic, reason)
        with self.store.transaction():
            self.store.record_event("outbox_refused", {"topic": topic, "reason": reason})
            self.store.mark_sent(outbox_id)
        self._backoff.pop(outbox_id, None)
        self._refused.append({"topic": topic, "reason": reason, "at": int(self.clock())})
        self.events.publish({"type": "outbox_refused", "topic": topic, "reason": reason})

    def _flush_outbox(self) -> None:
        if not self._connected.is_set():
            return
        now, t = int(self.clock()), time.monotonic()
        for rec in self.store.pending_outbox():
            with self._lock:
                if rec.id in self._inflight.values():
                    continue
            retry_at, delay = self._backoff.get(rec.id, (0.0, 0.0))
            if t < retry_at:
                continue
            if mqtt_edge.left_of(rec.payload, now, rec.expires_at) == 0:
                log.info("outbox message %d to %s expired unsent; dropped", rec.id, rec.topic)
                self.store.mark_sent(rec.id)
                continue
            info = mqtt_edge.publish(self.client, rec.topic, rec.payload, retain=rec.retain, now=now,
                                     expires_at=rec.expires_at)
            if info is None:     # not queued by paho (transient): back off, 0.5 s doubling to 60 s
                delay = min(60.0, max(TICK_S, delay * 2))
                self._backoff[rec.id] = (t + delay, delay)
                continue
            with self._lock:
                self._inflight[info.mid] = rec.id

    # ---------------------------------------------------------------- lifecycle
    def connect(self) -> None:
        """No session on the market broker outlives the connection (clean start, expiry 0):
        there is nothing for another account to take while the box is away. What vendors sent
        meanwhile reaches the box through their re-sends (docs/protocol.md, receipts)."""
        mqtt_edge.connect(self.client, self.cfg.broker, clean_start=True,
                          receive_maximum=self.cfg.intake.receive_maximum, session_expiry=0)

    def _lock_instance(self) -> None:
        """One daemon per data dir: a second would take over the socket and fight for the session."""
        path = Path(self.cfg.data_dir) / "daemon.lock"
        self._lockfile = open(path, "a+")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lockfile.close()
            raise AlreadyRunning(f"a vrmbox daemon is already running on {self.cfg.data_dir}") from exc

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns an exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Not Event.set() in the handler itself: it can deadlock with the main thread's
            # own wait on the same Event. Another thread takes the lock instead.
            signal.signal(sig, lambda *_: threading.Thread(target=self._stop.set, daemon=True).start())
        self._last_stop = lastrun.begin(self.cfg.data_dir, self.store)   # the worker owns the store after this
        self.control.start()
        self.button.start()
        worker = threading.Thread(target=self._work, name="vrmbox-worker", daemon=True)
        worker.start()
        self._verifier = make_verifier(self.cfg.intake.verify_workers)
        self._dispatcher = dispatcher = threading.Thread(target=self._dispatch, name="vrmbox-dispatch",
                                                         daemon=True)
        dispatcher.start()
        self.connect()
        self.client.loop_start()
        if self.home is not None:
            self.home.start()
        notify("READY=1")
        log.info("vrmbox running as %s (data dir %s)", self.box_id, self.cfg.data_dir)
        print("READY", flush=True)
        try:
            while not self._stop.wait(1.0):
                self.heartbeat()
        finally:
            notify("STOPPING=1")
            self.control.stop()
            self.button.stop()
            if self.home is not None:
                self.home.stop()
            self.client.disconnect()
            self.client.loop_stop()
            dispatcher.join(timeout=10)
            self._verifier.close()
            worker.join(timeout=10)
            self.intake.flush_counts()
            self.store.flush_rejections()
            self.store.close()
            lastrun.stopped(self.cfg.data_dir)   # only a stop that got this far is clean
        return 0
