"""What a subscriber to `#` sees during a real agreement , over the real
broker with the box daemon and a vendor-kit worker as processes: the agreement and the revocation
are sealed to the vendor, no personal value, field name choice, purpose or reason is readable,
the disclosure's size is a padding bucket, and two intents share no key."""
from __future__ import annotations

import base64
import json
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from vrm_protocol import topics
from vrm_protocol.encryption import PAD_BUCKETS

from processes import bike_vendor, box_config, daemon, vrm_vendor, vrmbox, wait_for

pytestmark = pytest.mark.timeout(180)

SECRETS = ("ann.wire-7731@example.org", "Flat 9, 12 Secret Mews", "only-for-the-bike-delivery-4417",
           "I-moved-to-Leeds-5523")


def b64u_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def readable(payload: bytes) -> bytes:
    """Everything an eavesdropper can decode: the raw bytes and every base64url segment."""
    text = payload.decode("ascii", "replace")
    out = [payload]
    for part in text.split("."):
        try:
            out.append(b64u_decode(part))
        except ValueError:
            pass
    return b"\n".join(out)


@pytest.fixture
def capture(broker):
    seen: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    subscribed = threading.Event()

    expiry: list[tuple[str, int | None]] = []

    def on_message(_c, _u, m):
        with lock:
            seen.append((m.topic, bytes(m.payload)))
            expiry.append((m.topic, getattr(m.properties, "MessageExpiryInterval", None)))
    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.subscribe("#", qos=1)
    assert subscribed.wait(10)
    def got() -> list[tuple[str, bytes]]:
        return list(seen)
    got.expiry = expiry          # type: ignore[attr-defined]  (topic, Message Expiry) per message
    yield got
    c.loop_stop()
    c.disconnect()


def test_a_subscriber_to_everything_learns_no_personal_value(tmp_path, broker, monkeypatch, capture):
    box_config(tmp_path, monkeypatch)
    data = tmp_path / "box"
    vrmbox("profile", "set", "email", SECRETS[0], data_dir=data)
    vrmbox("profile", "set", "postal_address", SECRETS[1], data_dir=data)
    vdir = tmp_path / "vendor-alpha"
    procs = [daemon(data, broker.url, tmp_path / "daemon.log").start(),
             bike_vendor(tmp_path, broker.url, "alpha").start()]
    try:
        first = json.loads(vrmbox("intent", "add", "bikes", "--json", data_dir=data).stdout)["intent"]
        second = json.loads(vrmbox("intent", "add", "bikes", "--json", data_dir=data).stdout)["intent"]
        offer = wait_for(lambda: json.loads(vrmbox("offers", f"--intent={first}", "--json",
                                                    data_dir=data).stdout), timeout=60, what="an offer")[0]
        agreement = json.loads(vrmbox("offer", "accept", "--fields", "email,postal_address",
                                      "--purpose", SECRETS[2], "--json", "--", offer["offer"],
                                      data_dir=data).stdout)["agreement"]
        vrmbox("agreement", "confirm", "--", agreement, data_dir=data)
        wait_for(lambda: json.loads(vrm_vendor("disclosures", "--dir", str(vdir), "--json").stdout),
                 timeout=30, what="the vendor holds the disclosure")
        vrmbox("revoke", "--reason", SECRETS[3], "--", agreement, data_dir=data)
        wait_for(lambda: any(t == topics.revocation_acks(first) for t, _ in capture()), timeout=30,
                 what="the deletion acknowledgement")
    finally:
        for p in reversed(procs):
            p.stop()

    wire = capture()
    everything = b"\n".join(readable(p) for _, p in wire)
    for secret in SECRETS:
        assert secret.encode() not in everything, secret
    sealed = [p for t, p in wire if t in (topics.agreements("alpha"), topics.revocations("alpha"))]
    assert len(sealed) >= 2 and all(p.count(b".") == 4 for p in sealed)   # JWEs, not JWSs
    # every publish carries Message Expiry, the sealed ones too (their exp is inside)
    sealed_expiry = [e for t, e in capture.expiry if t in (topics.agreements("alpha"), topics.revocations("alpha"))]
    assert len(sealed_expiry) == len(sealed) and all(e and e > 0 for e in sealed_expiry), sealed_expiry
    assert b"postal_address" not in b"\n".join(readable(p) for p in sealed)
    [disclosure] = {p for t, p in wire if t == topics.disclosures("alpha")}
    jwe = json.loads(readable(disclosure).split(b"\n")[2])["jwe"]
    ciphertext = b64u_decode(jwe.split(".")[3])
    assert len(ciphertext) in PAD_BUCKETS                               # a size bucket, not the length
    intents = [json.loads(readable(p).split(b"\n")[2]) for t, p in wire
               if t in (topics.intent("bikes", first), topics.intent("bikes", second)) and p]
    assert len({i["iss"] for i in intents}) == 2                        # no shared key between intents
