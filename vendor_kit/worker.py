"""The imperative shell: MQTT in, core handlers, ledger, MQTT out.

paho-mqtt 2.x, MQTT v5, QoS 1 throughout. Every callback runs on paho's network thread, so
all message handling, ledger writes and publishing happen on that one thread; the caller's
thread only waits for the stop event. Bad input never escapes a handler: a ProtocolError is
logged with its reason and the message dropped; anything else is logged with a traceback.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from vrm_protocol import (Agreement, Disclosure, Intent, IntentWithdrawal, ProtocolError, ReplayGuard,
                          Revocation, topics, verify)

from . import core
from .catalogue import Catalogue
from .identity import VendorIdentity
from .ledger import Ledger

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 30        # re-flush the outbox / prune the replay guard at most this often
PROFILE_REFRESH_S = 24 * 3600


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

    @classmethod
    def from_url(cls, url: str, **kw: object) -> "BrokerSettings":
        """mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS, default port 8883)."""
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"broker URL must be mqtt://HOST:PORT or mqtts://HOST:PORT, got {url!r}")
        tls = parts.scheme == "mqtts" or bool(kw.get("tls_ca"))
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        return cls(host=parts.hostname, port=port, tls=tls, **kw)  # type: ignore[arg-type]


class VendorWorker:
    """Answers intents for one vendor until stopped. Embed it, or run `vrm-vendor run`."""

    def __init__(self, identity: VendorIdentity, catalogue: Catalogue, ledger: Ledger, broker: BrokerSettings,
                 on_ready: Callable[[], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.identity = identity
        self.catalogue = catalogue
        self.ledger = ledger
        self.broker = broker
        self.client_id = broker.client_id or f"vrm-vendor-{identity.vendor}-{secrets.token_hex(4)}"
        ledger.client_id = self.client_id  # the ledger records which worker did what
        self._on_ready = on_ready
        self._clock = clock
        self._replay = ReplayGuard()
        self._stop = threading.Event()
        self._ready_sent = False
        self._pending: dict[int, str] = {}     # paho mid -> outbox message id
        self._last_housekeeping = 0.0
        self._profile_at = 0.0
        self._client = self._make_client()
        uncovered = catalogue.categories() - set(identity.categories)
        if uncovered:
            log.warning("catalogue items in categories %s are never offered: the profile lists only %s",
                        sorted(uncovered), list(identity.categories))

    # ------------------------------------------------------------------------------ lifecycle
    def _make_client(self) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        if self.broker.username is not None:
            c.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            c.tls_set(ca_certs=self.broker.tls_ca)
        c.reconnect_delay_set(self.broker.reconnect_min_s, self.broker.reconnect_max_s)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        return c

    def run(self, stop: threading.Event | None = None) -> None:
        """Connect (retrying while the broker is away) and serve until `stop` is set."""
        if stop is not None:
            self._stop = stop
        log.info("vendor %s (%s) as %s -> %s:%s%s", self.identity.vendor, self.identity.did, self.client_id,
                 self.broker.host, self.broker.port,
                 f" share group {self.broker.share_group}" if self.broker.share_group else "")
        props = None
        persistent = self.broker.session_expiry_s > 0
        if persistent:
            if self.broker.client_id is None:
                raise ValueError("a persistent session needs a fixed client_id")
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.broker.session_expiry_s
        self._client.connect_async(self.broker.host, self.broker.port, self.broker.keepalive,
                                   clean_start=not persistent, properties=props)
        self._client.loop_start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self._client.disconnect()
            # loop_stop joins paho's network thread; under load in CI it once never returned after
            # SIGTERM. The thread is a daemon thread, so bound the wait and let the process exit.
            stopper = threading.Thread(target=self._client.loop_stop, daemon=True)
            stopper.start()
            stopper.join(5)
            if stopper.is_alive():
                log.warning("network thread did not stop within 5 s; exiting anyway")
            log.info("stopped")

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------------------ paho callbacks
    def _subscriptions(self) -> list[str]:
        group = self.broker.share_group
        subs = []
        for cat in self.identity.categories:
            subs += [topics.intents(cat, group), topics.withdrawals(cat, group)]
        subs.append(topics.vendor_inbox(self.identity.vendor, group))
        return subs

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: object,
                    properties: object) -> None:
        if getattr(reason_code, "is_failure", False):
            log.error("broker refused the connection: %s", reason_code)
            return
        log.info("connected to %s:%s (session present: %s)", self.broker.host, self.broker.port,
                 getattr(flags, "session_present", False))
        try:
            # Profile first: by the time the SUBACK arrives (READY) the retained profile is stored.
            self._pending.clear()  # a fresh session: whatever was in flight is re-sent from the outbox
            self._publish_profile()
            client.subscribe([(t, SubscribeOptions(qos=topics.QOS)) for t in self._subscriptions()])
            self._flush_outbox()
        except Exception:
            log.exception("error while setting up the session")

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        log.warning("cannot reach broker %s:%s; retrying", self.broker.host, self.broker.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: object,
                       properties: object) -> None:
        if not self._stop.is_set():
            log.warning("disconnected from broker (%s); reconnecting", reason_code)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reason_codes: list,
                      properties: object) -> None:
        failed = [(t, rc) for t, rc in zip(self._subscriptions(), reason_codes) if rc.is_failure]
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
        msg_id = self._pending.pop(mid, None)
        if msg_id is None:
            return
        if getattr(reason_code, "is_failure", False):
            log.error("broker refused message %s: %s (will retry on reconnect)", msg_id, reason_code)
            return
        try:
            self.ledger.mark_sent(msg_id, int(self._clock()))
        except Exception:
            log.exception("could not mark %s sent", msg_id)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.handle(message.topic, message.payload)

    # ------------------------------------------------------------------------------ dispatch
    def handle(self, topic: str, payload: bytes) -> None:
        """One incoming message, end to end. Never raises."""
        try:
            if not payload:  # a cleared retained intent (withdrawal): nothing to do
                log.debug("empty payload on %s ignored", topic)
                return
            self._housekeeping()
            for out in self._dispatch(topic, payload):
                self._publish(out)
        except ProtocolError as exc:
            log.warning("refused message on %s: %s: %s", topic, exc.reason, exc.detail)
        except Exception:
            log.exception("error handling message on %s (dropped)", topic)

    def _dispatch(self, topic: str, payload: bytes) -> list[core.Outgoing]:
        vendor = self.identity.vendor
        if topic == topics.agreements(vendor):
            return self._agreement(topic, payload)
        if topic == topics.disclosures(vendor):
            return self._disclosure(topic, payload)
        if topic == topics.revocations(vendor):
            return self._revocation(topic, payload)
        for cat in self.identity.categories:
            if mqtt.topic_matches_sub(topics.intents(cat), topic):
                return self._intent(topic, payload)
            if mqtt.topic_matches_sub(topics.withdrawals(cat), topic):
                return self._withdrawal(topic, payload)
        log.debug("message on unexpected topic %s ignored", topic)
        return []

    def _intent(self, topic: str, payload: bytes) -> list[core.Outgoing]:
        now = self._clock()
        # No ReplayGuard here: the ledger is the durable one for intents (a retained intent
        # comes back on every reconnect and must simply not be answered twice).
        msg = verify(payload, now=now, expect=Intent)
        intent_id = msg.body.intent  # type: ignore[union-attr]
        if self.ledger.intent(intent_id) is not None:
            log.debug("intent %s already handled", intent_id)
            return []
        answer = core.answer_intent(msg, topic, self.identity, self.catalogue, now,
                                    withdrawn_by=self.ledger.withdrawal_signer(intent_id))
        if not self.ledger.claim_intent(answer, int(now)):
            log.debug("intent %s claimed by another worker", intent_id)
            return []
        log.info("intent %s (%s): %s, %d offer(s)", intent_id, answer.intent.category, answer.intent.status,
                 len(answer.offers))
        return [o.outgoing() for o in answer.offers]

    def _withdrawal(self, topic: str, payload: bytes) -> list[core.Outgoing]:
        now = self._clock()
        msg = verify(payload, now=now, replay=self._replay, expect=IntentWithdrawal)
        w = core.accept_withdrawal(msg, topic, self.ledger.intent(msg.body.intent), now)  # type: ignore[union-attr]
        self.ledger.record_withdrawal(w)
        log.info("intent %s withdrawn", w.intent)
        return []

    def _agreement(self, topic: str, payload: bytes) -> list[core.Outgoing]:
        now = self._clock()
        msg = verify(payload, now=now, replay=self._replay, expect=Agreement)
        record = core.countersign(msg, self.identity, self.ledger.offer(msg.body.offer), now)  # type: ignore[union-attr]
        cs = self.ledger.store_agreement(record, int(now))
        log.info("agreement %s on offer %s countersigned (fields: %s)", record.id, record.offer,
                 ", ".join(record.fields))
        return [cs]

    def _disclosure(self, topic: str, payload: bytes) -> list[core.Outgoing]:
        now = self._clock()
        msg = verify(payload, now=now, replay=self._replay, expect=Disclosure)
        body = msg.body
        record = core.open_disclosure(msg, self.identity, self.ledger.agreement(body.agreement), now)  # type: ignore[union-attr]
        if self.ledger.store_disclosure(record):
            log.info("disclosure for agreement %s stored (fields: %s)", record.agreement,
                     ", ".join(sorted(record.fields)))  # names only, never values
        else:
            log.warning("disclosure for agreement %s dropped: revoked meanwhile", record.agreement)
        return []

    def _revocation(self, topic: str, payload: bytes) -> list[core.Outgoing]:
        now = self._clock()
        msg = verify(payload, now=now, replay=self._replay, expect=Revocation)
        body = msg.body
        record = core.acknowledge_revocation(msg, self.identity, self.ledger.agreement(body.agreement), now)  # type: ignore[union-attr]
        ack = self.ledger.revoke(record, int(now))
        log.info("agreement %s revoked%s", record.agreement, ", disclosed data deleted" if record.delete else "")
        return [ack]

    # ------------------------------------------------------------------------------ output
    def _publish(self, out: core.Outgoing) -> None:
        remaining = out.exp - int(self._clock())
        if remaining <= 0:
            log.info("not sending expired message %s", out.msg_id)
            return
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = remaining
        info = self._client.publish(out.topic, out.token, qos=topics.QOS, retain=out.retain, properties=props)
        if info.rc == mqtt.MQTT_ERR_SUCCESS or info.rc == mqtt.MQTT_ERR_NO_CONN:
            self._pending[info.mid] = out.msg_id
        else:
            log.error("publish of %s failed: %s", out.msg_id, mqtt.error_string(info.rc))

    def _publish_profile(self) -> None:
        now = self._clock()
        out = core.signed_profile(self.identity, now)
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = out.exp - int(now)
        self._client.publish(out.topic, out.token, qos=topics.QOS, retain=True, properties=props)
        self._profile_at = now
        log.info("profile published on %s", out.topic)

    def _flush_outbox(self) -> None:
        """Publish what was committed but never acknowledged (crash, broker loss, a dead peer)."""
        now = self._clock()
        self._last_housekeeping = now
        pending = set(self._pending.values())
        unsent = [o for o in self.ledger.unsent(int(now)) if o.msg_id not in pending]
        for out in unsent:
            self._publish(out)
        if unsent:
            log.info("re-sent %d queued message(s)", len(unsent))

    def _housekeeping(self) -> None:
        now = self._clock()
        if now - self._last_housekeeping < HOUSEKEEPING_S:
            return
        self._replay.prune(now)
        if now - self._profile_at > PROFILE_REFRESH_S:
            self._publish_profile()
        self._flush_outbox()
