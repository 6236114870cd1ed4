"""Outages with real vendor-kit processes: the person keeps casting intents and vendors keep
answering while the broker restarts, or while the daemon is SIGKILLed and restarted. Every offer
a vendor sent ends up stored exactly once."""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import yaml

from device.store import Store
from processes import box_config, daemon, vendor, vrm_vendor, vrmbox, wait_for

pytestmark = pytest.mark.timeout(240)

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


def check_complete(world, intents: list[str]) -> None:
    data = world["data"]
    want = INTENTS * len(VENDORS) * ITEMS
    wait_for(lambda: len(stored(data)) >= want, timeout=90,
             what=f"{want} offers stored (have {len(stored(data))})")
    time.sleep(1.5)                                  # let any duplicate arrive
    rows = stored(data)
    per_intent = Counter(i for i, _ in rows)
    assert per_intent == {i: len(VENDORS) * ITEMS for i in intents}
    ids = [o for _, o in rows]
    assert len(ids) == len(set(ids)) == want         # none stored twice
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
        time.sleep(0.3)
    check_complete(world, intents)


def test_daemon_sigkill_while_intents_and_offers_flow(world, broker):
    intents = []
    for i in range(INTENTS):
        if i in (3, 8):
            world["box"].kill()                      # the CLI falls back to the store + outbox
        intents.append(cast(world["data"]))
        if i in (4, 9):
            world["box"].start()
        time.sleep(0.2)
    check_complete(world, intents)
