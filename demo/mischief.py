"""A misbehaving vendor for `vrmbox demo`: it shows that the box refuses forged and replayed offers.

It listens on the box inboxes of an open (demo, anonymous, loopback) broker and answers every
genuine offer it sees with attacks the box must refuse (docs/protocol.md section 11):

* `impersonation`: another vendor's offer at half the price, signed by a key that is not that
  vendor's, under that vendor's `kid` -> the box refuses it as `bad_signature`;
* `tampered`: a genuine offer with a fresh message id written into it (to slip past the replay
  guard) but its original signature -> `bad_signature`;
* `replay`: one of its own vendor's genuine offers signed again with the same message id and a
  different price -> `replay` (a message id is accepted once, whatever the signature).

It speaks as the vendor whose identity directory it is given (it needs that vendor's key for
the replay), so run it next to that vendor's worker. The attack builders are pure; `main` is
the shell (MQTT, signals). A real deployment's broker ACLs would not even let it read another
vendor's offers; on the demo's open broker it can, which makes the box's own checks visible.

    python -m demo.mischief --dir VENDOR_DIR --broker mqtt://127.0.0.1:PORT [--limit N]

Prints `READY` on stdout once subscribed, then one line per attack sent; logs go to stderr.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from vendor_kit.identity import IdentityError, VendorIdentity
from vendor_kit.worker import BrokerSettings
from vrm_protocol import Identity, Message, Offer, ProtocolError, new_id, sign, topics, verify
from vrm_protocol.codec import b64url, unverified_payload
from vrm_protocol.didkey import kid_for

log = logging.getLogger(__name__)

ATTACKS = ("impersonation", "tampered", "replay")
# What the box must answer to each attack: the reason code it counts (docs/protocol.md section 11).
EXPECTED_REASON = {"impersonation": "bad_signature", "tampered": "bad_signature", "replay": "replay"}
DEFAULT_LIMIT = 6          # attacks of each kind, so the demo's figures stay readable


@dataclass(frozen=True)
class Impostor(Identity):
    """A key that claims another's did:key: `sign` puts the victim's kid and iss on a message
    signed with this (wrong) private key."""

    claimed_did: str = ""

    @property
    def did(self) -> str:
        return self.claimed_did

    @property
    def kid(self) -> str:
        return kid_for(self.claimed_did)


@dataclass(frozen=True)
class Attack:
    kind: str          # one of ATTACKS
    topic: str
    token: str
    original: str      # the genuine offer's message id
    vendor: str        # the vendor it pretends to be


def _ttl(original: Message, now: float) -> int:
    """Keep the genuine offer's exact expiry (an offer's valid_until must match its exp)."""
    return original.envelope.exp - int(now)


def impersonate(original: Message, now: float, key: Identity | None = None) -> str:
    """The victim's offer at half the price, signed with a key that is not the victim's."""
    impostor = Impostor((key or Identity.generate()).private_key, claimed_did=original.envelope.iss)
    body = dataclasses.replace(original.body, price=round(original.body.price / 2, 2))
    return sign(impostor, body, now=now, ttl=_ttl(original, now))


def tamper(original: Message) -> str:
    """The genuine offer under a new message id, with its original (now wrong) signature."""
    header, _, signature = original.token.split(".")
    payload = dict(unverified_payload(original.token), id=new_id())
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return f"{header}.{b64url(raw)}.{signature}"


def replay(original: Message, own: Identity, now: float) -> str:
    """Our own genuine offer again: same message id, new price, properly signed."""
    body = dataclasses.replace(original.body, price=round(original.body.price * 0.9, 2))
    return sign(own, body, now=now, ttl=_ttl(original, now), msg_id=original.id)


@dataclass
class Plan:
    """Which attacks to send for each genuine offer seen: each offer is used once, at most
    `limit` attacks of each kind."""

    own: Identity
    limit: int = DEFAULT_LIMIT
    used: set[str] = field(default_factory=set)     # genuine offer ids already answered
    ours: set[str] = field(default_factory=set)     # ids of messages we sent (never react to them)
    sent: dict[str, int] = field(default_factory=lambda: {k: 0 for k in ATTACKS})

    def react(self, topic: str, payload: bytes, now: float) -> list[Attack]:
        box = topics.parse_box_topic(topic)
        if not box or box[1] != "offers":
            return []
        try:
            msg = verify(payload, now=now, expect=Offer)
        except ProtocolError:
            return []                                # ours, or someone else's junk
        if msg.id in self.used or msg.id in self.ours or _ttl(msg, now) <= 0:
            return []
        self.used.add(msg.id)
        wanted: list[tuple[str, Callable[[], str]]] = []
        if msg.envelope.iss == self.own.did:
            wanted.append(("replay", lambda: replay(msg, self.own, now)))
        else:
            wanted.append(("impersonation", lambda: impersonate(msg, now)))
            wanted.append(("tampered", lambda: tamper(msg)))
        out = []
        for kind, build in wanted:
            if self.sent[kind] >= self.limit:
                continue
            token = build()
            self.sent[kind] += 1
            self.ours.add(str(unverified_payload(token).get("id")))
            out.append(Attack(kind, topic, token, msg.id, msg.body.vendor))
        return out

    def done(self) -> bool:
        return all(n >= self.limit for n in self.sent.values())


# ------------------------------------------------------------------------------ shell
def run(identity: VendorIdentity, settings: BrokerSettings, limit: int,
        out: Callable[[str], None] = print) -> int:
    """Until SIGTERM/SIGINT: subscribe to every box's offers and answer them with attacks."""
    plan = Plan(identity.signing, limit=limit)
    stop: dict[str, Any] = {"why": None}
    ready = threading.Event()
    lock = threading.Lock()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-mischief-{new_id()[:8]}",
                         protocol=mqtt.MQTTv5)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set(ca_certs=settings.tls_ca)

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.warning("broker refused the connection: %s", rc)
            return
        c.subscribe(topics.offers("+"), qos=topics.QOS)

    def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any = None) -> None:
        if not ready.is_set():
            ready.set()
            out("READY")

    def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with lock:
            attacks = plan.react(message.topic, message.payload, time.time())
        for a in attacks:
            c.publish(a.topic, a.token, qos=topics.QOS)
            out(f"sent {a.kind} of {a.vendor}'s offer {a.original} (the box should say "
                f"{EXPECTED_REASON[a.kind]})")

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message

    def on_signal(signum: int, frame: object) -> None:
        stop["why"] = signal.Signals(signum).name   # a plain assignment: safe in a handler

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
    client.connect_async(settings.host, settings.port, keepalive=settings.keepalive)
    client.loop_start()
    try:
        while stop["why"] is None:
            time.sleep(0.1)
    finally:
        client.disconnect()
        client.loop_stop()
    log.info("stopped (%s) after sending %s", stop["why"], plan.sent)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="demo_mischief", description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True, help="identity directory of the vendor to speak as")
    p.add_argument("--broker", required=True, help="mqtt://HOST:PORT")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="attacks of each kind (default %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        identity = VendorIdentity.load(args.dir)
        settings = BrokerSettings.from_url(args.broker)
    except (IdentityError, ValueError) as exc:
        print(f"demo_mischief: {exc}", file=sys.stderr)
        return 1
    return run(identity, settings, max(0, args.limit), out=lambda line: print(line, flush=True))


if __name__ == "__main__":
    sys.exit(main())
