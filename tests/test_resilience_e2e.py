"""Outages with real vendor-kit processes: the person keeps casting intents and vendors keep
answering while the broker restarts, or while the daemon is SIGKILLed and restarted. Every offer
a vendor sent ends up stored exactly once."""
from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from device.store import Store
from vrm_protocol import topics
from processes import box_config, daemon, vendor, vrm_vendor, vrmbox, wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]   # a daemon and three vendor processes

VENDORS = ("alpha", "beta", "gamma")
ITEMS = 2          # offers per vendor per intent
INTENTS = 12


@pytest.fixture
def world(tmp_path, broker, monkeypatch):
    box_config(tmp_path, monkeypatch, "[intake]\nper_vendor_per_minute = 6000\nper_vendor_burst = 500\n")
    data = tmp_path / "box"
    box = daemon(data, broker.url, tmp_path / "daemon.log").start()
    workers = []
    for slug in VENDORS:
        vdir = tmp_path / slug
        vrm_vendor("init", "--dir", str(vdir), "--vendor", slug, "--name", slug, "--categories", "bikes")
        cat = tmp_path / f"{slug}.yaml"
        cat.write_text(yaml.safe_dump({"currency": "EUR", "accept_terms": "*", "items": [
            {"category": "bikes", "name": f"{slug} {i}", "sku": f"{slug}-{i}", "price": 100.0 + i}
            for i in range(ITEMS)]}))
        # a fixed client id gives the vendor a persistent session too
        workers.append(vendor(vdir, broker.url, cat, tmp_path / f"{slug}.log",
                              "--client-id", f"vendor-{slug}").start())
    yield {"data": data, "box": box, "tmp": tmp_path}
    for w in workers:
        w.stop()
    box.stop()


def stored(data) -> list[tuple[str, str]]:
    with Store.open(data) as s:
        return [(o.intent_id, o.offer_id) for o in s.list_offers()]


def sent_by_vendors(tmp) -> set[str]:
    ids = set()
    for slug in VENDORS:
        rows = json.loads(vrm_vendor("offers", "--dir", str(tmp / slug), "--json").stdout)
        ids |= {r["id"] for r in rows}
    return ids


def cast(data) -> str:
    return json.loads(vrmbox("intent", "add", "bikes", "--json", data_dir=data).stdout)["intent"]


def status(data) -> dict:
    return json.loads(vrmbox("status", "--json", data_dir=data).stdout)


def drain(broker, data, intents: list[str]) -> int:
    """A positive barrier for "no copy still to come": publish one marker (not a JWS, so the box
    refuses it as bad_encoding) to each intent's inbox and wait until the daemon has refused them
    all. The broker delivers to the box in the order it received, so every copy sent before the
    markers has then been handled. Returns the number of markers."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"marker-{uuid.uuid4().hex[:6]}",
                    protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        for i in intents:
            c.publish(topics.offers(i), b"marker", qos=1).wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()
    wait_for(lambda: status(data)["rejected_total"] >= len(intents), what="the markers refused")
    return len(intents)


def check_complete(world, broker, intents: list[str]) -> None:
    data = world["data"]
    want = INTENTS * len(VENDORS) * ITEMS
    wait_for(lambda: len({o for _, o in stored(data)}) >= want, timeout=90,
             what=f"{want} offers stored (have {len(stored(data))})")
    markers = drain(broker, data, intents)
    rows = stored(data)
    per_intent = Counter(i for i, _ in rows)
    assert per_intent == {i: len(VENDORS) * ITEMS for i in intents}
    ids = [o for _, o in rows]
    assert len(ids) == len(set(ids)) == want         # none stored twice
    # ids are the store's primary key, so "none twice" is also: every copy sent again was
    # recognised, none refused. The daemon counts in memory since its (last) start, which is
    # when redeliveries come; the store holds what earlier runs flushed.
    assert status(data)["rejected_total"] == markers
    assert {(r["reason"], r["vendor"]) for r in json.loads(
        vrmbox("rejections", "--json", data_dir=data).stdout)} <= {("bad_encoding", None)}
    assert set(ids) == sent_by_vendors(world["tmp"])  # none lost
    assert json.loads(vrmbox("audit", "verify", "--json", data_dir=data).stdout)["ok"]


def test_broker_restart_while_intents_and_offers_flow(world, broker):
    intents = []
    for i in range(INTENTS):
        if i == INTENTS // 2:
            broker.stop()                            # intents cast now wait in the box's outbox
        if i == INTENTS // 2 + 3:
            broker.start()
        intents.append(cast(world["data"]))
        time.sleep(0.3)                              # pacing the person; decides nothing
    check_complete(world, broker, intents)


def test_daemon_sigkill_while_intents_and_offers_flow(world, broker):
    intents = []
    for i in range(INTENTS):
        if i in (3, 8):
            world["box"].kill()                      # the CLI falls back to the store + outbox
        intents.append(cast(world["data"]))
        if i in (4, 9):
            world["box"].start()
        time.sleep(0.2)                              # pacing the person; decides nothing
    check_complete(world, broker, intents)
