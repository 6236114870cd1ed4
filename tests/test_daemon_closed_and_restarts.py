"""The daemon process over a real broker: a withdrawn intent's inbox is still read, and what
arrives there is refused `intent_closed`, counted and never stored; a duplicate offer shows on
the event stream as `offer_duplicate`; `vrmbox status` and the audit log say whether the
previous run stopped cleanly or was killed."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device.store import Store
from vrm_protocol import topics

from processes import box_config, daemon, vrmbox, wait_for
from test_daemon_mqtt import EventStream, wait_until_listening
from vendor_messages import TestVendor

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


@pytest.fixture
def box(tmp_path: Path, broker: Any, monkeypatch: Any) -> Any:
    box_config(tmp_path, monkeypatch)
    data = tmp_path / "box"
    proc = daemon(data, broker.url, tmp_path / "daemon.log").start()
    state = {"data": data, "proc": proc, "tmp": tmp_path}
    yield state
    state["proc"].stop()


def publisher(broker: Any, name: str = "test-vendor") -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def send(c: mqtt.Client, topic: str, payload: Any, retain: bool = False) -> None:
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=10)


def rejections(data: Path) -> dict[tuple[str, str | None], int]:
    rows = json.loads(vrmbox("rejections", "--json", data_dir=data).stdout)
    return {(r["reason"], r["vendor"]): r["count"] for r in rows}


def status(data: Path) -> dict[str, Any]:
    return json.loads(vrmbox("status", "--json", data_dir=data).stdout)


def intent_with_token(data: Path) -> tuple[str, str]:
    intent = json.loads(vrmbox("intent", "add", "bikes", "--json", data_dir=data).stdout)["intent"]
    with Store.open(data) as s:
        return intent, s.get_intent(intent).token


def pin(c: mqtt.Client, data: Path, vendor: TestVendor) -> None:
    send(c, topics.vendor_profile(vendor.slug), vendor.profile(), retain=True)
    wait_for(lambda: any(v["vendor"] == vendor.slug
                         for v in json.loads(vrmbox("vendors", "--json", data_dir=data).stdout)),
             what=f"{vendor.slug} pinned")


def test_an_offer_to_a_withdrawn_intent_is_refused_intent_closed_and_counted(box, broker):
    data = box["data"]
    c = publisher(broker)
    acme = TestVendor("acme")
    pin(c, data, acme)
    closed, token = intent_with_token(data)
    live, _ = intent_with_token(data)
    wait_until_listening(broker, "bikes", closed)
    wait_until_listening(broker, "bikes", live)
    withdrawals: list[mqtt.MQTTMessage] = []
    watcher = publisher(broker, "withdrawal-watcher")
    watcher.on_message = lambda _c, _u, m: withdrawals.append(m)
    watcher.subscribe(topics.withdrawal("bikes", closed), qos=1)
    wait_for(lambda: watcher.is_connected(), what="the watcher")
    vrmbox("intent", "withdraw", closed, data_dir=data)
    # The box sends any change to its subscriptions before the withdrawal, on one connection:
    # once the withdrawal is out, an unsubscribe (if the box made one) has taken effect.
    wait_for(lambda: withdrawals, what="the withdrawal published")
    send(c, topics.offers(closed), acme.offer(token))
    send(c, topics.offers(closed), TestVendor("ghost").offer(token))      # a stranger's, too
    # barrier: a message refused on the live inbox, sent after them on the same connection
    send(c, topics.offers(live), b"\x00barrier")
    wait_for(lambda: rejections(data).get(("bad_encoding", None)) == 1, what="the barrier handled")
    wait_for(lambda: rejections(data).get(("intent_closed", None)) == 2,
             what=f"two intent_closed refusals (have {rejections(data)})")
    assert rejections(data) == {("bad_encoding", None): 1, ("intent_closed", None): 2}
    with Store.open(data) as s:
        assert s.list_offers() == []                                      # never stored
    for cl in (c, watcher):
        cl.loop_stop()
        cl.disconnect()


def test_a_duplicate_offer_has_its_own_event_type(box, broker):
    data = box["data"]
    c = publisher(broker)
    acme = TestVendor("acme")
    pin(c, data, acme)
    intent, token = intent_with_token(data)
    wait_until_listening(broker, "bikes", intent)
    stream = EventStream(data / "control.sock")
    try:
        offer = acme.offer(token)
        send(c, topics.offers(intent), offer)
        first = wait_for(lambda: stream.of("offer"), what="the offer event")
        send(c, topics.offers(intent), offer)                              # the vendor's re-send
        again = wait_for(lambda: stream.of("offer_duplicate"), what="the duplicate's event")
        assert again == [{"type": "offer_duplicate", "offer": first[0]["offer"], "intent": intent,
                          "vendor": "acme"}]
        assert [e for e in stream.events if "type" not in e] == []
        assert len(stream.of("offer")) == 1
    finally:
        stream.close()
        c.loop_stop()
        c.disconnect()


def started(data: Path) -> list[str]:
    with Store.open(data) as s:
        return [e.data["last_stop"] for e in s.audit.entries() if e.event_type == "daemon_started"]


def test_status_and_audit_say_how_the_previous_run_ended(box, broker):
    data, tmp = box["data"], box["tmp"]
    assert status(data)["last_stop"] == "none"                            # first start here
    assert box["proc"].stop() == 0                                        # SIGTERM: a clean stop
    box["proc"] = daemon(data, broker.url, tmp / "daemon2.log").start()
    assert status(data)["last_stop"] == "clean"
    box["proc"].kill()                                                    # SIGKILL: no clean stop
    box["proc"] = daemon(data, broker.url, tmp / "daemon3.log").start()
    assert status(data)["last_stop"] == "crash"
    assert "did not stop cleanly" in (tmp / "daemon3.log").read_text()
    assert box["proc"].stop() == 0
    assert started(data) == ["none", "clean", "crash"]
