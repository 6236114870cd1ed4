"""The box daemon as a real process on a real Mosquitto: intents out, offers in, nothing lost
across a broker restart or a SIGKILL of the daemon. Vendors here are test code (paho) so the
test controls timing exactly; tests/test_system_e2e.py uses the vendor kit processes."""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device.store import Store
from vrm_protocol import Intent, token_hash, topics, verify
from vrm_protocol.codec import unverified_payload

from processes import box_config, daemon, vrmbox, wait_for
from vendor_messages import TestVendor

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]   # a daemon process per test

FAST_INTAKE = """
[intake]
per_vendor_per_minute = 100000
per_vendor_burst = 1000
max_offers_per_vendor_intent = 1000
[intents]
republish_every_s = 2
"""


def client(broker, name: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:6]}",
                    protocol=mqtt.MQTTv5)
    c.reconnect_delay_set(0.2, 1)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


@pytest.fixture
def box(tmp_path, broker, monkeypatch):
    box_config(tmp_path, monkeypatch, FAST_INTAKE)
    data = tmp_path / "box"
    proc = daemon(data, broker.url, tmp_path / "daemon.log").start()
    yield {"data": data, "proc": proc, "tmp": tmp_path}
    proc.stop()


class EventStream:
    """The daemon's event stream, already live when this returns: the daemon answers
    "subscribed" only after it registered the subscriber (device/daemon/sockets.py), so nothing
    published afterwards is missed. (device.client.subscribe connects lazily, on the first
    next(), so a caller cannot tell when it is live.)"""

    def __init__(self, sock) -> None:
        self._s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._s.settimeout(30)
        self._s.connect(str(sock))
        self._s.sendall(json.dumps({"op": "subscribe"}).encode() + b"\n")
        self._f = self._s.makefile("rb")
        first = json.loads(self._f.readline() or b"{}")
        assert first.get("ok"), first
        self.events: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self._f:
                self.events.append(json.loads(line))
        except (OSError, ValueError):   # closed by close(), or the daemon went away
            pass

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == kind]

    def close(self) -> None:
        self._s.close()


def wait_until_listening(broker, category: str, intent_id: str) -> mqtt.MQTTMessage:
    """Wait until a vendor can see the intent, and return its retained copy. The daemon sends the
    SUBSCRIBE for an intent's inbox before it publishes the intent, on one connection, and the
    broker handles one client's packets in order: once the intent is visible, offers to it reach
    the box (which is what a real vendor relies on)."""
    got: list[mqtt.MQTTMessage] = []
    c = client(broker, "vendor-view")
    c.on_message = lambda cl, u, m: got.append(m)
    c.subscribe(topics.intent(category, intent_id), qos=1)
    try:
        return wait_for(lambda: next((m for m in got if m.payload), None), what="the intent visible")
    finally:
        c.loop_stop()
        c.disconnect()


def status(box) -> dict:
    """The daemon's own view, from its memory (connected, rejections since it started, ...)."""
    return json.loads(vrmbox("status", "--json", data_dir=box["data"]).stdout)


def offer_ids(data) -> list[str]:
    with Store.open(data) as s:
        return [o.offer_id for o in s.list_offers()]


def cast(box, category="bikes", *attrs) -> str:
    out = vrmbox("intent", "add", category, *attrs, "--json", data_dir=box["data"])
    return json.loads(out.stdout)["intent"]


def test_intent_is_retained_with_expiry_and_offers_are_ranked(box, broker):
    seen: list[mqtt.MQTTMessage] = []
    watcher = client(broker, "watcher")
    watcher.on_message = lambda c, u, m: seen.append(m)
    intent_id = cast(box, "bikes", "--attr", "budget_max=800", "--attr", "postcode_district=SW1A",
                     "--ttl", "3600")
    # a subscriber arriving later still gets it: retained, with a message expiry
    watcher.subscribe(topics.intents("bikes"), qos=1)
    msg = wait_for(lambda: next((m for m in seen if m.payload), None), what="retained intent")
    assert msg.retain and 3500 < msg.properties.MessageExpiryInterval <= 3600
    intent = verify(msg.payload, now=time.time(), expect=Intent)
    assert intent.body.intent == intent_id and intent.body.attributes["budget_max"] == 800

    stream = EventStream(box["data"] / "control.sock")

    vendors = [TestVendor(s) for s in ("alpha", "beta")]
    pub = client(broker, "vendors")
    for v in vendors:
        pub.publish(topics.vendor_profile(v.slug), v.profile(), qos=1, retain=True)
    wait_for(lambda: {e["vendor"] for e in stream.of("vendor_new")} == {"alpha", "beta"},
             what="both vendors known to the box")
    for v, price in zip(vendors, (700, 400)):
        pub.publish(topics.offers(intent_id), v.offer(msg.payload.decode(), price=price), qos=1)
    wait_for(lambda: len(offer_ids(box["data"])) == 2, what="two offers stored")
    ranked = json.loads(vrmbox("offers", "--json", data_dir=box["data"]).stdout)
    assert [r["vendor"] for r in ranked] == ["beta", "alpha"]
    assert all(r["explanation"]["contributions"] for r in ranked)
    # the display and the phone learn of new offers from the event stream
    offer_events = wait_for(lambda: len(stream.of("offer")) >= 2 and stream.of("offer"),
                            what="two offer events")
    assert len(offer_events) == 2
    assert {e["vendor"] for e in offer_events} == {"alpha", "beta"}
    assert {e["vendor"]: e["position"] for e in offer_events}["beta"] == 1
    stream.close()

    # withdrawal clears the retained intent
    vrmbox("intent", "withdraw", "--", intent_id, data_dir=box["data"])
    wait_for(lambda: any(m.topic == msg.topic and not m.payload for m in seen),
             what="the retained intent cleared")
    late = client(broker, "late")
    got: list[mqtt.MQTTMessage] = []
    late.on_message = lambda c, u, m: got.append(m)
    late.subscribe(topics.intents("bikes"), qos=1)
    # A barrier after the SUBSCRIBE on the same connection: any retained copy is queued to this
    # client before the broker even reads the marker, so it would arrive first.
    marker = topics.intent("bikes", "marker-" + uuid.uuid4().hex)
    late.publish(marker, b"marker", qos=1)
    wait_for(lambda: any(m.topic == marker for m in got), what="the marker")
    assert not [m for m in got if m.payload and m.topic != marker]
    for c in (watcher, pub, late):
        c.loop_stop()
        c.disconnect()


def _publisher(broker, vendor: TestVendor, intent_token: str, n: int, interval: float,
               sent: list[str], done: threading.Event) -> threading.Thread:
    """A vendor as the protocol asks (docs/protocol.md 8.10): it keeps publishing through
    outages (paho queues QoS 1 and resends) and, since the box keeps no session on the market
    broker, re-sends every offer not yet named by a receipt until one names it."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{vendor.slug}", protocol=mqtt.MQTTv5)
    c.reconnect_delay_set(0.2, 1)
    c.max_queued_messages_set(0)
    intent = unverified_payload(intent_token)
    receipted: set[str] = set()

    def on_message(_c, _u, m) -> None:
        try:
            receipted.update(unverified_payload(m.payload.decode())["offers"])
        except (ValueError, KeyError):
            pass
    c.on_message = on_message
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topics.receipt(intent["category"], intent["intent"]), qos=1)
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.publish(topics.vendor_profile(vendor.slug), vendor.profile(), qos=1, retain=True)

    topic = topics.offers(intent["intent"])

    def publish(token: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the broker has it (PUBACK)
            info = c.publish(topic, token, qos=1)
            try:
                info.wait_for_publish(timeout=2)
                if info.is_published():
                    return
            except (RuntimeError, ValueError):
                pass
            time.sleep(0.2)          # pacing the retries through an outage; decides nothing

    def run() -> None:
        tokens = []
        for i in range(n):
            token = vendor.offer(intent_token, price=100 + i)
            tokens.append(token)
            sent.append(unverified_payload(token)["id"])
            publish(token)
            time.sleep(interval)         # pacing the stream; decides nothing
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            missing = [t for t in tokens if token_hash(t) not in receipted]
            if not missing:
                break
            time.sleep(3)                # the vendor's re-send interval; decides nothing
            for t in [t for t in missing if token_hash(t) not in receipted]:
                publish(t)
        done.set()
        c.loop_stop()
        c.disconnect()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _intent_token(box) -> tuple[str, str]:
    intent_id = cast(box)
    with Store.open(box["data"]) as s:
        return intent_id, s.get_intent(intent_id).token


def all_sent_stored(box, sent: list[str]) -> list[str]:
    """Wait until every offer sent is stored. That is also the barrier for duplicates: a QoS 1
    copy is resent only on a reconnect, ahead of what is sent after it, and the daemon handles
    its messages in order, so once the last offer sent is stored no earlier copy is still to come."""
    return wait_for(lambda: set(sent) <= set(ids := offer_ids(box["data"])) and ids, timeout=60,
                    what="all offers stored")


def test_broker_restart_loses_no_offer_and_stores_none_twice(box, broker):
    intent_id, token = _intent_token(box)
    wait_until_listening(broker, "bikes", intent_id)
    sent: list[str] = []
    done = threading.Event()
    _publisher(broker, TestVendor("steady"), token, 60, 0.05, sent, done)
    wait_for(lambda: len(sent) >= 20, what="publishing under way")
    broker.stop()
    wait_for(lambda: not status(box)["connected"], what="the daemon to see the outage")
    broker.start()
    assert done.wait(120), "publisher did not finish"
    stored = all_sent_stored(box, sent)
    assert sorted(stored) == sorted(sent) and len(stored) == len(set(stored)) == 60
    # offer ids are the store's primary key, so "none twice" means: every copy the broker or the
    # publisher sent again was recognised as the offer already stored, none refused
    assert status(box)["rejected_total"] == 0


def test_sigkill_of_the_daemon_loses_no_offer_and_stores_none_twice(box, broker):
    intent_id, token = _intent_token(box)
    wait_until_listening(broker, "bikes", intent_id)
    sent: list[str] = []
    done = threading.Event()
    _publisher(broker, TestVendor("steady"), token, 80, 0.03, sent, done)
    for _ in range(2):   # each kill once more offers were stored since the last start: mid-stream
        before = len(offer_ids(box["data"]))
        wait_for(lambda: len(offer_ids(box["data"])) >= before + 10, what="some offers stored")
        box["proc"].kill()
        time.sleep(0.5)  # pacing: the box is down for a moment (the publisher re-sends); decides nothing
        box["proc"].start()
    assert done.wait(120), "publisher did not finish"
    stored = all_sent_stored(box, sent)
    assert sorted(stored) == sorted(sent) and len(stored) == len(set(stored)) == 80
    # ids are the primary key: "none twice" means each redelivered copy was recognised, not refused
    # (status counts since the last start, when the redeliveries come; the store holds the rest)
    assert status(box)["rejected_total"] == 0
    assert json.loads(vrmbox("rejections", "--json", data_dir=box["data"]).stdout) == []
    with Store.open(box["data"]) as s:
        assert s.audit.verify().ok


def test_an_intent_the_broker_lost_comes_back_on_its_own_schedule(box, broker):
    intent_id = cast(box)
    seen: list[mqtt.MQTTMessage] = []
    c = client(broker, "eraser")
    c.on_message = lambda cl, u, m: seen.append(m)
    c.subscribe(topics.intents("bikes"), qos=1)
    wait_for(lambda: any(m.payload for m in seen), what="retained intent")
    # the broker loses the retained copy (e.g. its store was wiped) and restarts
    c.publish(topics.intent("bikes", intent_id), b"", qos=1, retain=True).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()
    broker.stop()
    broker.start()
    got: list[mqtt.MQTTMessage] = []
    late = client(broker, "late")
    late.on_message = lambda cl, u, m: got.append(m)
    late.subscribe(topics.intents("bikes"), qos=1)
    msg = wait_for(lambda: next((m for m in got if m.payload), None), timeout=30,
                   what="intent re-published by the daemon")
    assert verify(msg.payload, now=time.time(), expect=Intent).body.intent == intent_id
    late.loop_stop()
    late.disconnect()


def test_a_second_daemon_on_the_same_data_dir_is_refused(box, broker):
    import subprocess
    import sys
    from processes import ROOT, _env
    second = subprocess.run([sys.executable, "-m", "vrmbox", "run", "--data-dir", str(box["data"]),
                             "--broker", broker.url], capture_output=True, text=True, env=_env(),
                            cwd=ROOT, timeout=30)
    assert second.returncode == 1 and "already running" in second.stderr
    # the first one still owns its socket and answers
    assert json.loads(vrmbox("status", "--json", data_dir=box["data"]).stdout)["connected"]
