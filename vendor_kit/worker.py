"""The imperative shell: MQTT in, core handlers, ledger, MQTT out.

paho-mqtt 2.x, MQTT v5, QoS 1 throughout. Messages are handled on paho's network thread; the
caller's thread runs `run()`'s loop, which waits for the stop request and does the timed
housekeeping (re-sending the outbox, refreshing the profile, purging, pruning), so that also
happens on an idle connection. Bad input never escapes a handler: a ProtocolError is logged
with its reason and the message dropped; anything else is logged with a traceback.

Messages are acknowledged (PUBACK) by hand, after handling: one that could not be handled
because the ledger stayed locked (another worker, or we are stopping) is kept and retried, and
not acknowledged, so with a persistent session the broker delivers it again after a restart.
"""
from __future__ import annotations

import logging
import re
import secrets
import sqlite3
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from vrm_io import mqtt as shared_mqtt
from vrm_protocol import (Agreement, Disclosure, Intent, IntentWithdrawal, Message, ProtocolError, Receipt,
                          ReplayGuard, Revocation, token_hash, topics, unseal, verify)

from . import core
from .catalogue import Catalogue
from .identity import VendorIdentity
from .ledger import Ledger

log = logging.getLogger(__name__)

TICK_S = 0.25              # run loop: how soon a stop request or a pending purge is noticed
HOUSEKEEPING_S = 30        # re-flush the outbox / prune the replay guard / purge expired data
PURGE_RETRY_S = 1.0        # retry a WAL truncation a reader blocked (a deletion ack waits for it)
HELD_RETRY_S = 0.5         # retry a message the ledger could not take
MAIN_THREAD_WAIT_S = 1.0   # the run loop's thread waits at most this for the ledger
PRUNE_S = 3600             # forget expired ledger rows
PROFILE_REFRESH_S = 24 * 3600
FLUSH_MIN_AGE_S = 10       # periodic re-send: only our rows this old (younger ones are in flight)
MAX_HELD = 1000            # messages kept for a retry (ledger locked) before new ones are dropped
RESEND_CHECK_S = 0.5       # how often the run loop looks for offers due to be sent again
RESEND_BATCH = 200         # offers re-sent per look (the rest wait for the next)
SUB_SHARED = 1             # MQTT 5 Subscription Identifiers: which subscription delivered a message
SUB_PLAIN = 2
_SHARE_GROUP_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int = 1883
    tls: bool = False
    tls_ca: str | None = None
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    share_group: str | None = None
    keepalive: int = 30
    # > 0: a persistent MQTT 5 session (needs a fixed client_id) so agreements, disclosures and
    # revocations sent while this worker is briefly away are queued by the broker, not lost.
    session_expiry_s: int = 0
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30

    def __post_init__(self) -> None:
        # A share name is one topic level: '/', '+' or '#' would make the filter mean something else.
        if self.share_group is not None and not _SHARE_GROUP_RE.match(self.share_group):
            raise ValueError(f"share group must be 1-64 of A-Z a-z 0-9 _ . -, got {self.share_group!r}")

    @classmethod
    def from_url(cls, url: str, **kw: object) -> "BrokerSettings":
        """mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS, default port 8883)."""
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"broker URL must be mqtt://HOST:PORT or mqtts://HOST:PORT, got {url!r}")
        tls = parts.scheme == "mqtts" or bool(kw.get("tls_ca"))
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        return cls(host=parts.hostname, port=port, tls=tls, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Held:
    """A message the ledger could not take yet: retried from the run loop, acked when done."""
    topic: str
    payload: bytes
    mid: int
    qos: int
    connection: int
    retained: bool = False


class VendorWorker:
    """Answers intents for one vendor until stopped. Embed it, or run `vrm-vendor run`."""

    def __init__(self, identity: VendorIdentity, catalogue: Catalogue, ledger: Ledger, broker: BrokerSettings,
                 on_ready: Callable[[], None] | None = None, clock: Callable[[], float] = time.time,
                 resend: core.ResendPolicy | None = None) -> None:
        self.identity = identity
        self.catalogue = catalogue
        self.ledger = ledger
        self.broker = broker
        self.resend = resend or core.ResendPolicy()
        ledger.resend = self.resend
        self.refused: Counter[tuple[str, str]] = Counter()   # (message kind, reason) -> count
        self.gave_up = 0                                       # offers given up by this worker
        self.rearmed = 0                                       # given-up offers sent again (intent seen again)
        self._resend_checked = 0.0
        self.client_id = broker.client_id or f"vrm-vendor-{identity.vendor}-{secrets.token_hex(4)}"
        ledger.client_id = self.client_id  # the ledger records which worker did what
        self._on_ready = on_ready
        self._clock = clock
        self._replay = ReplayGuard()
        self._stop = threading.Event()
        self._stop_requested: str | None = None   # set by request_stop (signal-safe: a plain attribute)
        self._ready_sent = False
        self._lock = threading.Lock()           # guards the fields below; never held while calling paho
        self._pending: dict[int, str | None] = {}   # paho mid -> outbox message id (None: the profile)
        self._early: set[int] = set()           # PUBACKs that beat the registration of their mid
        self._subacks: dict[int, list[str]] = {}  # SUBSCRIBE mid -> its filters, until the SUBACK
        self._sub_failed = False
        self._held: deque[_Held] = deque()
        self._connection = 0
        self._purge_pending = False             # deleted data waits for a WAL truncation (ack held)
        self._purge_tried = 0.0
        self._held_tried = 0.0
        self._last_housekeeping = 0.0
        self._last_prune = 0.0
        self._profile_at = 0.0
        self._client = self._make_client()
        uncovered = catalogue.categories() - set(identity.categories)
        if uncovered:
            log.warning("catalogue items in categories %s are never offered: the profile lists only %s",
                        sorted(uncovered), list(identity.categories))

    # ------------------------------------------------------------------------------ lifecycle
    def _make_client(self) -> mqtt.Client:
        c = shared_mqtt.new_client(self.client_id, manual_ack=True, username=self.broker.username,
                                   password=self.broker.password, tls=self.broker.tls,
                                   ca_certs=self.broker.tls_ca, reconnect_min=self.broker.reconnect_min_s,
                                   reconnect_max=self.broker.reconnect_max_s)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        return c

    def run(self, stop: threading.Event | None = None) -> None:
        """Connect (retrying while the broker is away) and serve until `stop` is set,
        `stop()` is called, or `request_stop()` (e.g. from a signal handler)."""
        if stop is not None:
            self._stop = stop
        log.info("vendor %s (%s) as %s -> %s:%s%s", self.identity.vendor, self.identity.did, self.client_id,
                 self.broker.host, self.broker.port,
                 f" share group {self.broker.share_group}" if self.broker.share_group else "")
        persistent = self.broker.session_expiry_s > 0
        if persistent and self.broker.client_id is None:
            raise ValueError("a persistent session needs a fixed client_id")
        shared_mqtt.connect(self._client, self.broker.host, self.broker.port, keepalive=self.broker.keepalive,
                            clean_start=not persistent,
                            session_expiry=self.broker.session_expiry_s if persistent else None)
        self._client.loop_start()
        try:
            while not self._stopping():
                self._stop.wait(TICK_S)   # the signal handler never touches this Event (see request_stop)
                if not self._stopping():
                    self._tick()
        finally:
            if self._stop_requested:
                log.info("%s: stopping", self._stop_requested)
            self.ledger.interrupt()   # a handler waiting for a locked ledger gives up now (message kept unacked)
            self._client.disconnect()
            # loop_stop joins paho's network thread; bound the wait (it is a daemon thread).
            stopper = threading.Thread(target=self._client.loop_stop, daemon=True)
            stopper.start()
            stopper.join(5)
            if stopper.is_alive():
                log.warning("network thread did not stop within 5 s; exiting anyway")
            else:
                self.ledger.interrupt(False)
            log.info("stopped")

    def stop(self) -> None:
        """Stop from another thread."""
        self._stop.set()

    def request_stop(self, why: str = "stop requested") -> None:
        """Stop from a signal handler: only plain attributes are set. (Event.set() there could
        deadlock: the main thread may hold the Event's lock inside wait() when the signal lands.)
        The run loop notices within TICK_S."""
        self._stop_requested = why
        self.ledger.interrupt()

    def _stopping(self) -> bool:
        return self._stop_requested is not None or self._stop.is_set()

    # ------------------------------------------------------------------------------ run-loop timer
    def _tick(self) -> None:
        """Timed work, on the caller's thread: it must not depend on messages arriving. Ledger
        waits are capped here so that this thread keeps noticing a stop request."""
        now = self._clock()
        try:
            with self.ledger.max_wait(MAIN_THREAD_WAIT_S):
                self._timed_work(now)
        except sqlite3.OperationalError as exc:
            log.warning("housekeeping postponed: %s", exc)
        except Exception:
            log.exception("housekeeping failed")

    def _timed_work(self, now: float) -> None:
        if now - self._resend_checked >= RESEND_CHECK_S and self._client.is_connected():
            self._resend_checked = now
            self._resend_due(now)
        if self._held and now - self._held_tried >= HELD_RETRY_S:
            self._held_tried = now
            self._retry_held()
        if self._purge_pending and now - self._purge_tried >= PURGE_RETRY_S:
            self._try_purge()
        if now - self._last_housekeeping >= HOUSEKEEPING_S:
            self._housekeeping(now)

    def _housekeeping(self, now: float) -> None:
        self._last_housekeeping = now
        with self._lock:
            self._replay.prune(now)
        expired = self.ledger.purge_expired(int(now))
        if expired:
            log.info("deleted the disclosed data of %d agreement(s) whose period is over", expired)
        self._purge_pending = self._purge_pending or self.ledger.purge_pending()
        if self._purge_pending:
            self._try_purge()
        if now - self._last_prune >= PRUNE_S:
            self._last_prune = now
            self.ledger.prune(int(now))
        if self._client.is_connected():
            if now - self._profile_at > PROFILE_REFRESH_S:
                self._publish_profile()
            self._flush_outbox(min_age_s=FLUSH_MIN_AGE_S)

    def _resend_due(self, now: float) -> None:
        """Offers the box has not receipted in time, or that a receipt of their intent showed
        lost, go out again (same token and id); those past the limit are given up."""
        planned = self.ledger.take_resends(
            now, lambda pending, receipted: core.plan_resends(pending, now, self.resend, receipted), RESEND_BATCH)
        sent = [r for r in planned if r.send]
        for r in sent:   # in the order the ledger numbered them
            self._publish(r.outgoing)
        if sent:
            lost = sum(r.lost for r in sent)
            log.info("re-sent %d offer(s) not yet receipted by the box (%d shown lost by a receipt of their "
                     "intent, %d after waiting)", len(sent), lost, len(sent) - lost)
        gave_up = [r for r in planned if r.gave_up]
        if gave_up:
            with self._lock:
                self.gave_up += len(gave_up)
            by_intent: dict[tuple[str, int], list[str]] = {}
            for r in gave_up:
                by_intent.setdefault((r.intent, r.resends), []).append(r.outgoing.msg_id)
            for (intent, resends), ids in by_intent.items():
                log.warning("gave up on %d offer(s) for intent %s after %d re-sends without a receipt from the "
                            "box: %s", len(ids), intent, resends, ", ".join(ids))

    def _try_purge(self) -> None:
        self._purge_tried = self._clock()
        released = self.ledger.purge_wal()
        if released is None:
            self._purge_pending = True
            return
        self._purge_pending = False
        for out in released:
            log.info("deleted data left the WAL: sending ack %s", out.msg_id)
            self._publish(out)

    def _retry_held(self) -> None:
        for _ in range(len(self._held)):
            held = self._held.popleft()
            if not self.handle(held.topic, held.payload, retry=True, retained=held.retained):
                self._held.appendleft(held)
                return
            self._ack(held.mid, held.qos, held.connection)

    # ------------------------------------------------------------------------------ paho callbacks
    def _subscription_plan(self) -> list[tuple[int, list[str]]]:
        """(Subscription Identifier, filters) per SUBSCRIBE. In a share group, the shared filters
        split live messages between workers, and a plain intents filter reads the retained
        intents, which MQTT 5 does not deliver to shared subscriptions (docs/protocol.md §3)."""
        group = self.broker.share_group
        shared = []
        for cat in self.identity.categories:
            shared += [topics.intents(cat, group), topics.withdrawals(cat, group), topics.receipts(cat, group)]
        shared.append(topics.vendor_inbox(self.identity.vendor, group))
        if not group:
            return [(SUB_PLAIN, shared)]
        return [(SUB_SHARED, shared), (SUB_PLAIN, [topics.intents(cat) for cat in self.identity.categories])]

    def _subscriptions(self) -> list[str]:
        return [t for _, filters in self._subscription_plan() for t in filters]

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: object,
                    properties: object) -> None:
        if getattr(reason_code, "is_failure", False):
            log.error("broker refused the connection: %s", reason_code)
            return
        log.info("connected to %s:%s (session present: %s)", self.broker.host, self.broker.port,
                 getattr(flags, "session_present", False))
        try:
            with self._lock:
                self._connection += 1
                self._subacks.clear()
                self._sub_failed = False
            # Profile first: by the time the SUBACK arrives (READY) the retained profile is stored.
            self._publish_profile()
            for sub_id, filters in self._subscription_plan():
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = sub_id
                rc, mid = client.subscribe([(t, SubscribeOptions(qos=topics.QOS)) for t in filters],
                                           properties=props)
                with self._lock:
                    self._subacks[mid] = filters
            self._flush_outbox()
        except Exception:
            log.exception("error while setting up the session")

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        log.warning("cannot reach broker %s:%s; retrying", self.broker.host, self.broker.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: object,
                       properties: object) -> None:
        if not self._stopping():
            log.warning("disconnected from broker (%s); reconnecting", reason_code)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reason_codes: list,
                      properties: object) -> None:
        with self._lock:
            filters = self._subacks.pop(mid, [])
            failed = [(t, rc) for t, rc in zip(filters, reason_codes) if rc.is_failure]
            self._sub_failed = self._sub_failed or bool(failed)
            if self._subacks or self._sub_failed:   # wait for every SUBACK; no READY after a refusal
                if failed:
                    log.error("subscriptions refused: %s", failed)
                return
        log.info("subscribed to %s", ", ".join(self._subscriptions()))
        if not self._ready_sent:
            self._ready_sent = True
            if self._on_ready:
                self._on_ready()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason_code: object,
                    properties: object) -> None:
        with self._lock:
            if mid not in self._pending:   # PUBACK before _publish (another thread) registered it
                self._early.add(mid)
                return
            msg_id = self._pending.pop(mid)
        if msg_id is None:
            return
        if getattr(reason_code, "is_failure", False):
            log.error("broker refused message %s: %s (will retry)", msg_id, reason_code)
            return
        self._mark_sent(msg_id)

    def _mark_sent(self, msg_id: str) -> None:
        try:
            self.ledger.mark_sent(msg_id, int(self._clock()))
        except sqlite3.OperationalError as exc:
            log.warning("could not mark %s sent (%s); it may be sent again", msg_id, exc)
        except Exception:
            log.exception("could not mark %s sent", msg_id)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if self._wanted(message) and not self.handle(message.topic, message.payload, retained=bool(message.retain)):
            with self._lock:
                connection = self._connection
            if len(self._held) < MAX_HELD:
                log.warning("message on %s kept for a retry (not acknowledged)", message.topic)
                self._held.append(_Held(message.topic, message.payload, message.mid, message.qos, connection,
                                        bool(message.retain)))
                return
            log.error("too many messages waiting for the ledger: message on %s dropped", message.topic)
        self._ack(message.mid, message.qos, None)

    def _wanted(self, message: mqtt.MQTTMessage) -> bool:
        """In a share group, a copy from the plain intents subscription is acted on only if it is
        a retained intent: live intents are left to the shared subscription, which gives each to
        one worker. (A retained intent can come several ways; the ledger answers it once.)"""
        if not self.broker.share_group:
            return True
        ids = getattr(message.properties, "SubscriptionIdentifier", None) or []
        if not ids or SUB_SHARED in ids:
            return True
        return bool(message.retain)

    def _ack(self, mid: int, qos: int, connection: int | None) -> None:
        """PUBACK a handled message, unless it came on an earlier connection (its mid may name
        another message now; with a persistent session the broker re-sends it anyway)."""
        if qos == 0:
            return
        with self._lock:
            if connection is not None and connection != self._connection:
                return
        self._client.ack(mid, qos)

    # ------------------------------------------------------------------------------ dispatch
    def handle(self, topic: str, payload: bytes, *, retry: bool = False, retained: bool = False) -> bool:
        """One incoming message, end to end. Never raises. False: the ledger was locked (or we
        are stopping) and nothing was done; the message can be handled again later. `retained`:
        the broker sent it because we subscribed (a retained copy), not because it was published
        now."""
        try:
            if not payload:  # a cleared retained intent (withdrawal): nothing to do
                log.debug("empty payload on %s ignored", topic)
                return True
            for out in self._dispatch(topic, payload, retained):
                self._publish(out)
        except ProtocolError as exc:
            log.warning("refused message on %s: %s: %s", topic, exc.reason, exc.detail)
            with self._lock:
                self.refused[(_kind(topic), exc.reason)] += 1
        except sqlite3.OperationalError as exc:
            log.log(logging.DEBUG if retry else logging.WARNING, "ledger unavailable for message on %s: %s",
                    topic, exc)
            return False
        except Exception:
            log.exception("error handling message on %s (dropped)", topic)
        return True

    def _dispatch(self, topic: str, payload: bytes, retained: bool = False) -> list[core.Outgoing]:
        vendor = self.identity.vendor
        if topic == topics.agreements(vendor):
            return self._agreement(topic, payload)
        if topic == topics.disclosures(vendor):
            return self._disclosure(topic, payload)
        if topic == topics.revocations(vendor):
            return self._revocation(topic, payload)
        for cat in self.identity.categories:
            if mqtt.topic_matches_sub(topics.intents(cat), topic):
                return self._intent(topic, payload, retained)
            if mqtt.topic_matches_sub(topics.withdrawals(cat), topic):
                return self._withdrawal(topic, payload)
            if mqtt.topic_matches_sub(topics.receipts(cat), topic):
                return self._receipt(topic, payload)
        log.debug("message on unexpected topic %s ignored", topic)
        return []

    def _check_fresh(self, msg: Message) -> None:
        """The replay check (protocol §11), separate from verify() so that a message the ledger
        could not take is not remembered, and a re-sent identical token can be answered again."""
        with self._lock:
            if msg.id in self._replay:
                raise ProtocolError("replay", f"message id {msg.id} seen before")

    def _remember(self, msg: Message, now: float) -> None:
        with self._lock:
            if msg.id not in self._replay:
                self._replay.check_and_remember(msg.id, msg.envelope.exp, now)

    def _intent(self, topic: str, payload: bytes, retained: bool = False) -> list[core.Outgoing]:
        now = self._clock()
        # No replay window here: the ledger is the durable one for intents (a retained intent
        # comes back on every reconnect and must simply not be answered twice).
        msg = verify(payload, now=now, expect=Intent)
        intent_id = msg.body.intent  # type: ignore[union-attr]
        known = self.ledger.intent(intent_id)
        if known is not None:
            if retained or msg.envelope.iss != known.signer:
                log.debug("intent %s already handled", intent_id)
                return []
            return self._rearm(intent_id, now)
        answer = self.ledger.claim(core.answer_intent(msg, topic, self.identity, self.catalogue, now), int(now),
                                   sent_clock=now)
        if answer is None:
            log.debug("intent %s claimed by another worker", intent_id)
            return []
        log.info("intent %s (%s): %s, %d offer(s)", intent_id, answer.intent.category, answer.intent.status,
                 len(answer.offers))
        return [o.outgoing() for o in answer.offers]

    def _rearm(self, intent_id: str, now: float) -> list[core.Outgoing]:
        """A live copy of an intent we answered, signed by its own key: the box re-publishes it on
        a clock of its own, so its box is alive now. Offers of it we gave up on go out once more
        (core.plan_rearms). A retained copy (sent because we subscribed) says nothing about the
        box and re-arms nothing."""
        outs = self.ledger.take_rearms(intent_id, now, lambda given_up: core.plan_rearms(given_up, now))
        if outs:
            with self._lock:
                self.rearmed += len(outs)
            log.info("intent %s seen again: re-sent %d offer(s) given up on before: %s", intent_id, len(outs),
                     ", ".join(o.msg_id for o in outs))
        else:
            log.debug("intent %s already handled", intent_id)
        return outs

    def _withdrawal(self, topic: str, payload: bytes) -> list[core.Outgoing]:
        now = self._clock()
        msg = verify(payload, now=now, expect=IntentWithdrawal)
        self._check_fresh(msg)
        try:
            w = core.accept_withdrawal(msg, topic, self.ledger.intent(msg.body.intent), now)  # type: ignore[union-attr]
        except ProtocolError:
            self._remember(msg, now)
            raise
        self.ledger.record_withdrawal(w)
        self._remember(msg, now)
        log.info("intent %s withdrawn", w.intent)
        return []

    def _receipt(self, topic: str, payload: bytes) -> list[core.Outgoing]:
        """The box stored offers of ours: stop re-sending them. No replay window: a receipt only
        ever stops re-sends, so a second copy (QoS 1, or replayed by anyone) changes nothing."""
        now = self._clock()
        msg = verify(payload, now=now, expect=Receipt)
        record = core.accept_receipt(msg, topic, self.ledger.intent(msg.body.intent))  # type: ignore[union-attr]
        if record is not None:
            n = self.ledger.mark_receipted(record.intent, record.hashes, now)
            if n:
                log.debug("receipt %s: %d offer(s) for intent %s stored by the box", record.message, n,
                          record.intent)
        return []

    def _agreement(self, topic: str, payload: bytes) -> list[core.Outgoing]:
        now = self._clock()
        # Sealed (protocol v2): only we can read which offer, fields, purpose and duration.
        msg = verify(unseal(payload, self.identity.decryption), now=now, expect=Agreement)
        known = self.ledger.agreement(msg.id)
        if known is not None:
            if known.hash != token_hash(msg.token):
                raise ProtocolError("replay", f"agreement id {msg.id} seen before with another text")
            # the very same agreement again: the box did not get our countersignature
            log.info("agreement %s received again: countersignature re-sent", known.id)
            return [known.countersignature]
        self._check_fresh(msg)
        try:
            record = core.countersign(msg, self.identity, self.ledger.offer(msg.body.offer), now)  # type: ignore[union-attr]
            cs = self.ledger.store_agreement(record, int(now))
        except ProtocolError:
            self._remember(msg, now)
            raise
        self._remember(msg, now)
        log.info("agreement %s on offer %s countersigned (fields: %s)", record.id, record.offer,
                 ", ".join(record.fields))
        return [cs]

    def _disclosure(self, topic: str, payload: bytes) -> list[core.Outgoing]:
        now = self._clock()
        msg = verify(payload, now=now, expect=Disclosure)
        self._check_fresh(msg)
        body = msg.body
        try:
            record = core.open_disclosure(msg, self.identity, self.ledger.agreement(body.agreement), now)  # type: ignore[union-attr]
            stored = self.ledger.store_disclosure(record)
        except ProtocolError:
            self._remember(msg, now)
            raise
        self._remember(msg, now)
        if stored:
            log.info("disclosure for agreement %s stored (fields: %s)", record.agreement,
                     ", ".join(sorted(record.fields)))  # names only, never values
        else:
            log.warning("disclosure for agreement %s dropped: revoked or expired meanwhile", record.agreement)
        return []

    def _revocation(self, topic: str, payload: bytes) -> list[core.Outgoing]:
        now = self._clock()
        # Sealed (protocol v2). A verified unsealed one is honoured too: a deletion request is
        # never refused for its form (docs/protocol.md §8.8).
        dots = payload.count(b".") if isinstance(payload, bytes) else payload.count(".")
        inner = payload if dots == 2 else unseal(payload, self.identity.decryption)
        msg = verify(inner, now=now, expect=Revocation)
        body = msg.body
        record = core.acknowledge_revocation(msg, self.identity, self.ledger.agreement(body.agreement), now)  # type: ignore[union-attr]
        again = self.ledger.revocation_id(body.agreement) == msg.id  # type: ignore[union-attr]
        if not again:
            self._check_fresh(msg)
        try:
            ack = self.ledger.revoke(record, int(now))
        except ProtocolError:
            self._remember(msg, now)
            raise
        self._remember(msg, now)
        if again:
            log.info("revocation of agreement %s received again: ack %s", record.agreement,
                     "re-sent" if ack else "still held until the data has left the WAL")
        else:
            log.info("agreement %s revoked%s", record.agreement, ", disclosed data deleted" if record.delete else "")
        if ack is None:
            log.warning("ack for agreement %s held: a reader blocks the WAL truncation; retrying",
                        record.agreement)
            self._purge_pending = True   # the run loop retries the WAL purge, then sends the ack
            return []
        return [ack]

    # ------------------------------------------------------------------------------ output
    def _publish(self, out: core.Outgoing) -> None:
        remaining = shared_mqtt.seconds_left(out.exp, int(self._clock()))
        if remaining <= 0:
            log.info("not sending expired message %s", out.msg_id)
            return
        self._send(out.topic, out.token, out.retain, remaining, out.msg_id)

    def _send(self, topic: str, token: str, retain: bool, expiry: int, msg_id: str | None) -> None:
        info = shared_mqtt.publish(self._client, topic, token, retain=retain, expiry=expiry, qos=topics.QOS)
        # one client for the worker's life: paho sends what it queued while the link was down,
        # and _pending keeps the outbox from sending it twice (vrm_io.mqtt.queued)
        if not shared_mqtt.queued(info.rc, paho_resends_offline=True):
            log.error("publish of %s failed: %s", msg_id or topic, mqtt.error_string(info.rc))
            return
        with self._lock:
            acked = info.mid in self._early
            if acked:
                self._early.discard(info.mid)
            else:
                self._pending[info.mid] = msg_id
        if acked and msg_id is not None:
            self._mark_sent(msg_id)

    def _publish_profile(self) -> None:
        now = self._clock()
        out = core.signed_profile(self.identity, now)
        self._send(out.topic, out.token, True, out.exp - int(now), None)
        self._profile_at = now
        log.info("profile published on %s", out.topic)

    def _flush_outbox(self, min_age_s: int = 0) -> None:
        """Publish what was committed but never acknowledged (crash, broker loss, a dead peer).
        Messages paho still holds for this session (published, no PUBACK yet) are left to it."""
        now = self._clock()
        with self._lock:
            pending = set(self._pending.values())
        unsent = [o for o in self.ledger.unsent(int(now), min_age_s=min_age_s) if o.msg_id not in pending]
        if unsent:
            try:
                self.ledger.stamp_sends([o.msg_id for o in unsent], now)
            except sqlite3.OperationalError as exc:   # only costs an early copy if a receipt passes one
                log.warning("could not number %d re-published message(s): %s", len(unsent), exc)
        for out in unsent:
            self._publish(out)
        if unsent:
            log.info("re-sent %d queued message(s)", len(unsent))


def _kind(topic: str) -> str:
    """A message's kind from its topic, for counting refusals."""
    parsed = topics.parse_intent_topic(topic) or topics.parse_vendor_topic(topic)
    return parsed[0] if parsed and parsed[0] in ("intent", "withdrawal", "receipt") else \
        (parsed[1] if parsed else "unknown")
