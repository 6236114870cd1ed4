"""Crashes during a 5,000-offer stream: real vendor-kit processes, a real
Mosquitto with the project's own config and persistence (autosave every second: a SIGKILL loses
what it acknowledged since), the real daemon. Whatever is killed, every offer the vendors sent is
stored exactly once in the end, because the box receipts what it stored and the vendors re-send
what it has not receipted.

Every wait is on a real signal (rows in the box's store, receipts in the vendors' ledgers) with
a deadline; no sleep decides an outcome.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from device.client import call
from processes import box_config, daemon, kill_broker, vendor, vendor_offers, vrm_vendor, vrmbox, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(300)]

VENDORS = 4
INTENTS = 10
ITEMS = 125                     # offers per vendor per intent: 4 x 10 x 125 = 5,000
TOTAL = VENDORS * INTENTS * ITEMS
RESEND = ("--resend-first", "8", "--resend-factor", "2", "--resend-max", "16")   # short, for a test
SETTLE_S = 240                  # deadline for everything to be stored and receipted


def store_rows(data: Path) -> list[tuple[str, str]]:
    """(intent, offer id) of every stored offer: the clear columns, read-only, while the daemon writes."""
    path = data / "store.db"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT intent_id, offer_id FROM offers").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


class World:
    def __init__(self, tmp: Path, broker, resend: tuple[str, ...] = RESEND) -> None:
        self.tmp, self.broker, self.resend = tmp, broker, resend
        self.data = tmp / "box"
        self.box = daemon(self.data, broker.url, tmp / "daemon.log")
        self.vendors = []
        self.vdirs = []
        self.intents: list[str] = []

    def start(self) -> None:
        self.box.start()
        for _ in range(INTENTS):      # through the running daemon's socket: fast, no subprocess each
            self.intents.append(call(self.data / "control.sock", "intent_add", {"category": "bikes"})["intent"])
        for n in range(VENDORS):
            slug = f"v{n}"
            vdir = self.tmp / slug
            vrm_vendor("init", "--dir", str(vdir), "--vendor", slug, "--name", slug, "--categories", "bikes")
            cat = self.tmp / f"{slug}.yaml"
            cat.write_text(yaml.safe_dump({"currency": "EUR", "accept_terms": "*", "offer_validity_s": 86400,
                                           "items": [{"category": "bikes", "name": f"{slug} {i}",
                                                      "sku": f"{slug}-{i}", "price": 100.0 + i}
                                                     for i in range(ITEMS)]}))
            self.vdirs.append(vdir)
            self.vendors.append(vendor(vdir, self.broker.url, cat, self.tmp / f"{slug}.log",
                                       "--client-id", f"vendor-{slug}", *self.resend).start())

    def stop(self) -> None:
        for v in self.vendors:
            v.stop()
        self.box.stop()

    def stored(self) -> int:
        return len(store_rows(self.data))

    def sent(self) -> list[dict]:
        return [r for d in self.vdirs for r in vendor_offers(d)]

    def wait_stored(self, n: int, what: str) -> None:
        wait_for(lambda: self.stored() >= n, timeout=120, what=f"{n} offers stored ({what}; have {self.stored()})")

    def restart_box(self) -> None:
        self.box.start(timeout=60)

    def audit_ok(self) -> None:
        report = json.loads(vrmbox("audit", "verify", "--json", data_dir=self.data).stdout)
        assert report["ok"], report

    def settle_and_check(self) -> dict[str, int]:
        """Wait until the vendors sent all 5,000 and every one is receipted, then: the store holds
        exactly what they sent, each once, INTENTS x VENDORS x ITEMS."""
        def done() -> bool:
            rows = self.sent()
            return len(rows) == TOTAL and all(r["receipted"] for r in rows)
        deadline = time.monotonic() + SETTLE_S
        while not done():
            if time.monotonic() > deadline:
                rows = self.sent()
                raise AssertionError(f"not settled: {len(rows)} sent, {sum(r['receipted'] for r in rows)} "
                                     f"receipted, {self.stored()} stored")
            time.sleep(0.5)
        rows = store_rows(self.data)
        ids = [o for _, o in rows]
        sent = {r["id"] for r in self.sent()}
        assert len(ids) == len(set(ids)) == TOTAL                      # none stored twice
        assert set(ids) == sent                                        # none lost, none invented
        assert Counter(i for i, _ in rows) == {i: VENDORS * ITEMS for i in self.intents}
        self.audit_ok()
        return {"resends": sum(r["resends"] for r in self.sent())}


@pytest.fixture
def world(tmp_path, brokers, monkeypatch):
    box_config(tmp_path, monkeypatch, "[intake]\nper_vendor_per_minute = 100000\nper_vendor_burst = 1000\n"
                                      f"max_offers_per_vendor_intent = {ITEMS + 10}\n"
                                      "[intents]\nrepublish_every_s = 2\n")
    broker = brokers("faults")            # the project's mosquitto.conf: persistence, autosave 1 s
    w = World(tmp_path, broker)
    try:
        yield w
    finally:
        w.stop()


def test_broker_sigkilled_five_times_during_the_stream(world):
    """Two of the five kills land while the daemon is down too (it queues nothing then, the broker
    holds it all); the others while the daemon is behind on a deep queue."""
    world.start()
    for k in range(5):
        world.wait_stored((k + 1) * TOTAL // 7, f"before broker kill {k + 1}")
        if k in (1, 3):
            world.box.kill()              # the daemon down: the broker queues for its session
        kill_broker(world.broker)
        world.broker.start()
        if k in (1, 3):
            world.restart_box()
    print(world.settle_and_check())


def test_broker_and_daemon_sigkilled_together_four_times(world):
    world.start()
    for k in range(4):
        world.wait_stored((k + 1) * TOTAL // 6, f"before power cut {k + 1}")
        world.box.kill()                  # a power cut: both at once, neither saves anything
        kill_broker(world.broker)
        world.broker.start()
        world.restart_box()
    print(world.settle_and_check())


def test_daemon_sigkilled_five_times_audit_verifies_after_each(world):
    world.start()
    for k in range(5):
        world.wait_stored((k + 1) * TOTAL // 7, f"before daemon kill {k + 1}")
        world.box.kill()
        world.audit_ok()                  # the log verifies after every crash
        world.restart_box()
    print(world.settle_and_check())
