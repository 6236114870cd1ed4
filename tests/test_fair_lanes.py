"""Fair lanes (device/daemon/lanes.py): pure, no threads."""
from __future__ import annotations

import pytest

from device.daemon.lanes import UNKNOWN, Lanes


def lanes(per_lane: int = 100, total: int = 1000, max_bytes: int = 10**6) -> Lanes:
    return Lanes(per_lane=per_lane, total=total, max_bytes=max_bytes)


def test_vendor_lanes_are_served_round_robin_fifo_within_each():
    q = lanes()
    for i in range(3):
        q.admit("a", f"a{i}", 10)
    q.admit("b", "b0", 10)
    q.admit("c", "c0", 10)
    q.admit("c", "c1", 10)
    assert q.take(100) == ["a0", "b0", "c0", "a1", "c1", "a2"]
    assert q.size == 0 and q.bytes == 0 and q.lengths() == {}


def test_the_unknown_lane_gets_one_place_after_each_round_of_vendors():
    q = lanes()
    for i in range(5):
        q.admit(UNKNOWN, f"x{i}", 10)
    for i in range(2):
        q.admit("a", f"a{i}", 10)
        q.admit("b", f"b{i}", 10)
    assert q.take(100) == ["a0", "b0", "x0", "a1", "b1", "x1", "x2", "x3", "x4"]


def test_a_flood_in_one_lane_does_not_delay_another_vendor():
    q = lanes(per_lane=1000, total=2001)
    for i in range(500):
        q.admit("forged-a", f"f{i}", 10)
        q.admit(UNKNOWN, f"u{i}", 10)
    assert q.admit("b", "genuine", 10)
    first = q.take(3)
    assert "genuine" in first


def test_take_respects_n_and_keeps_the_round_across_calls():
    q = lanes()
    for k in "abc":
        q.admit(k, k + "0", 1)
        q.admit(k, k + "1", 1)
    q.admit(UNKNOWN, "x0", 1)
    assert q.take(2) == ["a0", "b0"]
    assert q.take(2) == ["c0", "x0"]
    assert q.take(10) == ["a1", "b1", "c1"]
    assert q.take(10) == []


def test_a_lane_added_mid_round_waits_for_the_next_round():
    q = lanes()
    q.admit("a", "a0", 1)
    q.admit("a", "a1", 1)
    q.admit("b", "b0", 1)
    assert q.take(1) == ["a0"]
    q.admit("c", "c0", 1)
    assert q.take(10) == ["b0", "a1", "c0"]


@pytest.mark.parametrize("bound", ["per_lane", "total", "max_bytes"])
def test_bounds_say_wait_and_never_drop(bound):
    kw = {"per_lane": 100, "total": 100, "max_bytes": 10**6, bound: 3 if bound != "max_bytes" else 30}
    q = Lanes(**kw)
    for i in range(3):
        assert q.admit("a", f"a{i}", 10)
    assert not q.admit("a", "late", 10)          # backpressure: the caller waits
    assert q.size == 3 and q.bytes == 30         # nothing changed, nothing dropped
    assert q.take(1) == ["a0"]
    assert q.admit("a", "late", 10)              # room again
    assert q.take(10) == ["a1", "a2", "late"]


def test_one_lane_full_leaves_room_for_others_within_the_total():
    q = lanes(per_lane=2, total=10)
    assert q.admit(UNKNOWN, "x0", 1) and q.admit(UNKNOWN, "x1", 1)
    assert not q.admit(UNKNOWN, "x2", 1)
    assert q.admit("a", "a0", 1)
    assert q.lengths() == {UNKNOWN: 2, "a": 1}


def test_an_empty_box_takes_one_message_whatever_its_size():
    q = lanes(max_bytes=100)
    assert q.admit("a", "big", 1000)
    assert not q.admit("b", "small", 1)
    assert q.take(1) == ["big"]
    assert q.bytes == 0


def test_bounds_must_be_positive():
    with pytest.raises(ValueError):
        Lanes(per_lane=0, total=10, max_bytes=10)


# ---------------------------------------------------------------- a real daemon on a real broker
import base64  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402

from processes import box_config, daemon, wait_for  # noqa: E402
from test_daemon_mqtt import EventStream, cast, client, offer_ids, status, wait_until_listening  # noqa: E402
from vendor_messages import TestVendor  # noqa: E402
from vrm_protocol import topics  # noqa: E402
from vrm_protocol.codec import unverified_payload  # noqa: E402


def _seg(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()


def forged_as(victim: TestVendor, intent_token: str, forger: TestVendor, i: int) -> bytes:
    """An offer naming `victim`'s key (kid and iss), signed by another: only the signature
    check can tell it apart, so it costs the box a full verify."""
    h, p, s = forger.offer(intent_token, price=1.0 + i).split(".")
    header = json.loads(base64.urlsafe_b64decode(h + "=="))
    payload = json.loads(base64.urlsafe_b64decode(p + "=="))
    header["kid"] = victim.did
    payload.update(iss=victim.did, vendor=victim.slug)
    return f"{_seg(header)}.{_seg(payload)}.{s}".encode()


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_forged_flood_does_not_stop_genuine_offers_being_stored(tmp_path, broker, monkeypatch):
    box_config(tmp_path, monkeypatch, "[intake]\nverify_workers = 2\n")
    data = tmp_path / "box"
    proc = daemon(data, broker.url, tmp_path / "daemon.log").start()
    try:
        intent_id = cast({"data": data}, "bikes", "--attr", "budget_max=800")
        token = wait_until_listening(broker, "bikes", intent_id).payload.decode()
        stream = EventStream(data / "control.sock")
        alpha, beta, forger = TestVendor("alpha"), TestVendor("beta"), TestVendor("mallory")
        genuine = client(broker, "genuine")
        for v in (alpha, beta):
            genuine.publish(topics.vendor_profile(v.slug), v.profile(), qos=1, retain=True)
        wait_for(lambda: {e["vendor"] for e in stream.of("vendor_new")} == {"alpha", "beta"},
                 what="both vendors known")
        topic = topics.offers(intent_id)
        strangers = [TestVendor(f"s{i}") for i in range(50)]
        flood = [forged_as(alpha, token, forger, i) for i in range(300)] + \
                [s.offer(token).encode() for s in strangers] * 6            # fresh unknown keys
        stop = threading.Event()
        flooder = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flooder", protocol=mqtt.MQTTv5)
        flooder.max_queued_messages_set(0)
        flooder.connect(broker.host, broker.port)
        flooder.loop_start()
        sent_flood = [0]

        def run_flood() -> None:
            while not stop.is_set() and sent_flood[0] < 60_000:
                for f in flood:
                    info = flooder.publish(topic, f, qos=1)
                    sent_flood[0] += 1
                    if sent_flood[0] % 500 == 0:
                        info.wait_for_publish(timeout=5)     # keep paho's own queue short
                    if stop.is_set():
                        break
        t = threading.Thread(target=run_flood, daemon=True)
        t.start()
        wait_for(lambda: sent_flood[0] >= 2000, what="the flood under way")
        ids = []
        for i in range(10):                                   # within their limits (burst 20)
            for v in (alpha, beta):
                tok = v.offer(token, price=300.0 + i)
                ids.append(unverified_payload(tok)["id"])
                genuine.publish(topic, tok, qos=1)
        wait_for(lambda: set(ids) <= set(offer_ids(data)), timeout=60, what="every genuine offer stored")
        stop.set()
        t.join(10)
        assert set(offer_ids(data)) == set(ids)                      # and not one forgery
        assert status({"data": data})["rejected_total"] > 1000       # the flood did reach the box
        stream.close()
        for c in (genuine, flooder):
            c.loop_stop()
            c.disconnect()
    finally:
        proc.stop()
