"""The vendor kit finds a lost offer per offer, from the receipts of its own intent, and gives up
after a bounded number of re-sends (docs/protocol.md §8.10, docs/vendor-kit.md).

Every copy the kit sends gets the next number of one send order; the broker delivers one
publisher's messages in order, so an offer whose latest copy went out before the first copy of
one the box has receipted (same intent) and that is still not receipted a few seconds later was
lost, and goes out again then, not after the 30 s timer. An offer never receipted goes out
1 + ResendPolicy.limit times, then the ledger says the kit gave up (and waits for the intent's
next re-publish: tests/test_rearm.py).

The worker is driven here with an explicit clock (no sleeps); the wire tests run a real
`vrm-vendor` process against a real Mosquitto, with the box played by test code that signs
receipts with the intent's key, and wait on real signals with deadlines.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time

import pytest

from device.daemon import receipts
from vendor_kit import core
from vendor_kit.catalogue import parse_catalogue
from vendor_kit.identity import VendorIdentity
from vendor_kit.ledger import LEDGER_FILE, SCHEMA_VERSION, Ledger
from vendor_kit.worker import BrokerSettings, VendorWorker
from vrm_protocol import Identity, Intent, Offer, Receipt, Terms, new_id, sign, token_hash, topics, verify

NOW = 1_800_000_000.0
WEEK = 7 * 24 * 3600
TERMS = Terms(id="vrm-basic-1", sha256=token_hash("terms text"))
ITEMS = 10


def catalogue(validity_s: int = 3600, items: int = ITEMS):
    return parse_catalogue({"currency": "EUR", "accept_terms": "*", "offer_validity_s": validity_s,
                            "items": [{"category": "bikes", "name": f"Bike {i}", "sku": f"BK-{i}", "price": 400 + i}
                                      for i in range(items)]})


@pytest.fixture(scope="module")
def vendor() -> VendorIdentity:
    return VendorIdentity.generate("acme", "Acme Bikes", ["bikes"])


class Sim:
    """A worker on a real ledger with a clock the test moves; what it publishes is recorded."""

    def __init__(self, vendor: VendorIdentity, ledger: Ledger, cat, policy: core.ResendPolicy | None = None) -> None:
        self.now = NOW
        self.ledger = ledger
        self.worker = VendorWorker(vendor, cat, ledger, BrokerSettings(host="127.0.0.1", port=1, client_id="sim"),
                                   clock=lambda: self.now, resend=policy)
        self.published: list[tuple[float, core.Outgoing]] = []
        self.tokens: dict[str, str] = {}                     # intent id -> the intent's token
        self.worker._publish = lambda out: self.published.append((self.now, out))   # type: ignore[method-assign]

    def intent(self, box: Identity, ttl: int = WEEK) -> tuple[str, list[core.Outgoing]]:
        intent_id = new_id()
        token = sign(box, Intent(intent=intent_id, category="bikes", terms=TERMS), now=self.now, ttl=ttl,
                     msg_id=intent_id)
        self.tokens[intent_id] = token
        before = len(self.published)
        assert self.worker.handle(topics.intent("bikes", intent_id), token.encode())
        offers = [out for _, out in self.published[before:]]
        for out in offers:                                   # the broker's PUBACK
            self.ledger.mark_sent(out.msg_id, int(self.now))
        return intent_id, offers

    def republish(self, intent_id: str, *, retained: bool = False) -> list[core.Outgoing]:
        """The box re-publishes the intent (the same token); `retained`: the copy a subscribe brings."""
        before = len(self.published)
        assert self.worker.handle(topics.intent("bikes", intent_id), self.tokens[intent_id].encode(),
                                  retained=retained)
        return [out for _, out in self.published[before:]]

    def receipt(self, box: Identity, intent_id: str, offers: list[core.Outgoing]) -> None:
        hashes = [token_hash(o.token) for o in offers]
        body = Receipt(intent=intent_id, category="bikes", offers=receipts.padded(hashes))
        token = sign(box, body, now=self.now, ttl=24 * 3600)
        assert self.worker.handle(topics.receipt("bikes", intent_id), token.encode())

    def run_until(self, until: float, step: float = 0.5) -> None:
        """The run loop's re-send look, every `step` seconds of the test's clock."""
        while self.now + step <= until:
            self.now += step
            self.worker._resend_due(self.now)

    def copies(self, out: core.Outgoing, since: float = 0.0) -> list[float]:
        return [t for t, o in self.published if o.msg_id == out.msg_id and t >= since]


# ------------------------------------------------------------------------------ lost offers, found per offer
def test_a_lost_offer_among_receipted_ones_is_resent_within_seconds_of_the_receipt_that_passes_it(vendor, tmp_path):
    """Two of ten offers lost on the way (a broker crash): the receipt that names the other eight
    shows them lost; they go out again a few seconds after it, not after the 30 s timer, and the
    eight the box holds are not sent again."""
    box = Identity.generate()
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim = Sim(vendor, led, catalogue())
        intent_id, offers = sim.intent(box)
        assert len(offers) == ITEMS
        lost = [offers[3], offers[7]]
        sim.now += 1.2                                   # the box's receipt delay (0.2 .. 2.5 s)
        receipt_at = sim.now
        sim.receipt(box, intent_id, [o for o in offers if o not in lost])
        sim.run_until(receipt_at + 10)
        for o in lost:
            again = sim.copies(o, since=receipt_at)
            assert len(again) == 1, again
            # at once after the grace for the box's own receipt delay, within one look of it
            assert receipt_at + core.LOST_GRACE_S <= again[0] <= receipt_at + core.LOST_GRACE_S + 0.5
        assert all(sim.copies(o, since=receipt_at) == [] for o in offers if o not in lost)
        rows = {r["id"]: r for r in led.list_offers(now=sim.now)}
        assert [rows[o.msg_id]["resends"] for o in offers] == [1 if o in lost else 0 for o in offers]
        assert {rows[o.msg_id]["delivery"] for o in lost} == {"waiting"}


def test_a_repair_lost_again_is_found_by_the_next_receipt_not_the_timer(vendor, tmp_path):
    """Each receipted batch of re-sends used to restart the wait: copies lost again waited for the
    timer (repairs at 60, 90, 120 s). A copy sent because the earlier ones were lost is the only
    one the box can have stored, so a receipt of it passes the other re-sent copies sent before."""
    box = Identity.generate()
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim = Sim(vendor, led, catalogue())
        intent_id, offers = sim.intent(box)
        a, b = offers[2], offers[5]
        sim.now += 0.5
        sim.receipt(box, intent_id, [o for o in offers if o not in (a, b)])
        sim.run_until(sim.now + 4)
        assert len(sim.copies(a)) == len(sim.copies(b)) == 2          # both re-sent once
        sim.now += 1.0
        receipt_at = sim.now
        sim.receipt(box, intent_id, [b])                              # a's copy was lost again
        sim.run_until(receipt_at + 10)
        assert len(sim.copies(a, since=receipt_at)) == 1
        assert sim.copies(a, since=receipt_at)[0] <= receipt_at + core.LOST_GRACE_S + 0.5
        assert sim.copies(b, since=receipt_at) == []


def test_an_offer_named_by_a_receipt_within_the_grace_is_not_sent_again(vendor, tmp_path):
    """The box may name an offer a moment after another (its receipts wait 0.2 .. 2.5 s): a
    receipt that passes an offer only schedules a look, and a receipt naming the offer before it
    stops the copy."""
    box = Identity.generate()
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim = Sim(vendor, led, catalogue())
        intent_id, offers = sim.intent(box)
        sim.now += 0.4
        sim.receipt(box, intent_id, offers[5:])
        sim.run_until(sim.now + 2.0)
        sim.receipt(box, intent_id, offers[:5])                       # 2 s later, within the grace
        sim.run_until(sim.now + 40)
        assert [len(sim.copies(o)) for o in offers] == [1] * ITEMS
        assert {r["delivery"] for r in led.list_offers(now=sim.now)} == {"receipted"}


def test_receipts_of_another_intent_say_nothing_about_this_ones_box(vendor, tmp_path):
    """Two intents may be on two boxes: an offer of intent A still queued for A's box is not
    'passed' by the receipts of intent B, however much later B's offers were sent."""
    box_a, box_b = Identity.generate(), Identity.generate()
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim = Sim(vendor, led, catalogue(items=2))
        intent_a, offers_a = sim.intent(box_a)
        sim.now += 1
        intent_b, offers_b = sim.intent(box_b)
        sim.now += 1
        sim.receipt(box_b, intent_b, offers_b)
        sim.run_until(NOW + 29)                                       # A's offers wait for their timer
        assert [len(sim.copies(o)) for o in offers_a] == [1, 1]
        sim.run_until(NOW + 31)
        assert [len(sim.copies(o)) for o in offers_a] == [2, 2]       # A's box is quiet: the timer


def test_an_offer_sent_after_everything_receipted_anywhere_waits_while_receipts_flow(vendor, tmp_path):
    """A box working through a deep queue receipts intent B's offers; intent A's, sent after all
    of them, may be queued behind (if A is on that box), so their timer holds them while receipts
    come, and sends them once the receipts stop (A's box may be another, and away)."""
    box_a, box_b = Identity.generate(), Identity.generate()
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim = Sim(vendor, led, catalogue(items=2))
        intent_b, offers_b = sim.intent(box_b)
        sim.now += 1
        intent_a, offers_a = sim.intent(box_a)
        sim.now = NOW + 25
        sim.receipt(box_b, intent_b, offers_b)
        sim.run_until(NOW + 54)
        assert [len(sim.copies(o)) for o in offers_a] == [1, 1]       # held at +31 s: B's box is receipting
        sim.run_until(NOW + 62)
        assert [len(sim.copies(o)) for o in offers_a] == [2, 2]       # the receipts stopped: sent at +61 s
        assert [r["resends"] for r in led.list_offers(now=sim.now) if r["intent"] == intent_a] == [1, 1]


# ------------------------------------------------------------------------------ the cap
def test_a_week_long_offer_never_receipted_goes_out_nine_times_then_the_kit_gives_up(vendor, tmp_path, caplog):
    """It used to go out 676 times (every 15 minutes for a week). Now: the first send, then
    RESEND_LIMIT re-sends on the back-off (30 s, doubling, at most 15 min), then a give-up in
    the ledger, in `vrm-vendor offers` and in the log."""
    caplog.set_level(logging.WARNING, logger="vendor_kit.worker")
    box = Identity.generate()
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim = Sim(vendor, led, catalogue(validity_s=WEEK, items=1))
        intent_id, (offer,) = sim.intent(box)
        while True:                                                  # jump from one due look to the next
            nxt = led._one("SELECT MIN(resend_at) FROM offers WHERE receipted_at IS NULL")[0]
            if nxt is None or nxt > NOW + WEEK:
                break
            sim.now = max(sim.now, float(nxt))
            sim.worker._resend_due(sim.now)
        times = sim.copies(offer)
        assert len(times) == 9                                        # it was 676
        assert core.RESEND_LIMIT == 8
        assert [round(b - a) for a, b in zip(times, times[1:])] == [30, 60, 120, 240, 480, 900, 900, 900]
        row = led.list_offers(now=sim.now)[0]
        assert (row["delivery"], row["gave_up"], row["resends"], row["receipted"]) == ("gave_up", True, 8, False)
        assert row["gave_up_at"] == pytest.approx(times[-1] + 900)
        assert led.awaiting_receipts(int(sim.now)) == 0 and led.given_up() == 1
        assert sim.worker.gave_up == 1
        assert [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()] == [
            f"gave up on 1 offer(s) for intent {intent_id} after 8 re-sends without a receipt from the box: "
            f"{offer.msg_id}"]


def test_a_late_receipt_after_the_give_up_still_counts(vendor, tmp_path):
    box = Identity.generate()
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim = Sim(vendor, led, catalogue(items=1), core.ResendPolicy(first_s=1, factor=1, max_s=1, limit=2))
        intent_id, (offer,) = sim.intent(box)
        sim.run_until(NOW + 10)
        assert len(sim.copies(offer)) == 3 and led.list_offers(now=sim.now)[0]["delivery"] == "gave_up"
        sim.receipt(box, intent_id, [offer])
        row = led.list_offers(now=sim.now)[0]
        assert (row["delivery"], row["gave_up"], row["receipted"]) == ("receipted", False, True)


def test_the_plan_gives_up_only_after_the_limit_and_waiting_does_not_count(vendor):
    policy = core.ResendPolicy(first_s=5.0, factor=2.0, max_s=60.0, limit=2)
    off = core.answer_intent(verify(sign(Identity.generate(), Intent(intent=(i := new_id()), category="bikes",
                                                                      terms=TERMS), now=NOW, ttl=3600, msg_id=i),
                                    now=NOW, expect=Intent),
                             topics.intent("bikes", i), vendor, catalogue(items=1), NOW).offers[0]
    assert [(r.send, r.gave_up, r.resends) for r in core.plan_resends([core.Pending(off, 1, seq=1)], NOW + 10,
                                                                      policy)] == [(True, False, 2)]
    assert [(r.send, r.gave_up) for r in core.plan_resends([core.Pending(off, 2, seq=1)], NOW + 10,
                                                           policy)] == [(False, True)]
    flowing = core.Receipts({off.intent: (core.Receipted(floor_seq=0, at=NOW + 9),)})   # its box receipts
    assert [(r.send, r.gave_up, r.resends) for r in core.plan_resends([core.Pending(off, 2, seq=1)], NOW + 10,
                                                                      policy, flowing)] == [(False, False, 2)]
    with pytest.raises(ValueError, match="limit"):
        core.ResendPolicy(limit=-1)


def test_a_withdrawn_intents_offers_are_not_sent_again(vendor, tmp_path):
    from vrm_protocol import IntentWithdrawal
    box = Identity.generate()
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim = Sim(vendor, led, catalogue(items=2))
        intent_id, offers = sim.intent(box)
        token = sign(box, IntentWithdrawal(intent=intent_id, category="bikes"), now=sim.now, ttl=600)
        assert sim.worker.handle(topics.withdrawal("bikes", intent_id), token.encode())
        sim.run_until(NOW + 120)
        assert [len(sim.copies(o)) for o in offers] == [1, 1]
        assert {r["delivery"] for r in led.list_offers(now=sim.now)} == {"withdrawn"}


def test_an_expired_intents_offers_are_not_sent_again(vendor, tmp_path):
    """The offers live an hour, the intent a minute: after the intent's end the box refuses them."""
    box = Identity.generate()
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim = Sim(vendor, led, catalogue(items=1))
        _, (offer,) = sim.intent(box, ttl=60)
        sim.run_until(NOW + 600)
        assert [round(t - NOW) for t in sim.copies(offer)] == [0, 30]
        assert led.list_offers(now=sim.now)[0]["delivery"] == "expired"
        assert led.awaiting_receipts(int(sim.now)) == 0


# ------------------------------------------------------------------------------ the ledger
def test_a_v3_ledger_gets_a_send_order_in_the_order_offers_were_first_sent(vendor, tmp_path):
    box = Identity.generate()
    path = tmp_path / LEDGER_FILE
    with Ledger(path) as led:
        sim = Sim(vendor, led, catalogue(items=3))
        _, offers = sim.intent(box)
    db = sqlite3.connect(path, isolation_level=None)                  # make it what v3 wrote
    db.execute("DROP INDEX offers_floor")
    for col in ("first_seq", "last_seq", "floor_seq", "gave_up_at", "rearms"):
        db.execute(f"ALTER TABLE offers DROP COLUMN {col}")
    db.execute("DROP TABLE send_order")
    db.execute("PRAGMA user_version = 3")
    db.close()
    with Ledger(path) as led:
        assert led._one("PRAGMA user_version")[0] == SCHEMA_VERSION
        seqs = [led._one("SELECT last_seq FROM offers WHERE id = ?", o.msg_id)[0] for o in offers]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        sim = Sim(vendor, led, catalogue(items=1))
        _, (newer,) = sim.intent(box)
        assert led._one("SELECT first_seq FROM offers WHERE id = ?", newer.msg_id)[0] > max(seqs)


def test_the_offers_listing_shows_delivery_and_resends(vendor, tmp_path, capsys):
    from vendor_kit import cli
    box = Identity.generate()
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim = Sim(vendor, led, catalogue(items=1), core.ResendPolicy(first_s=1, factor=1, max_s=1, limit=1))
        sim.intent(box)
        sim.run_until(NOW + 5)
    assert cli.main(["offers", "--dir", str(tmp_path)]) == 0
    line = capsys.readouterr().out.strip()
    assert "delivery=gave_up" in line and "resends=1" in line and "rearms=0" in line


# ------------------------------------------------------------------------------ real processes, the wire
def setup_vendor(tmp_path, items: int):
    from processes import vrm_vendor
    vdir = tmp_path / "acme"
    vrm_vendor("init", "--dir", str(vdir), "--vendor", "acme", "--name", "Acme Bikes", "--categories", "bikes")
    cat = tmp_path / "catalogue.json"
    cat.write_text(json.dumps({"currency": "EUR", "accept_terms": "*", "offer_validity_s": 3600,
                               "items": [{"category": "bikes", "name": f"Bike {i}", "sku": f"BK-{i}",
                                          "price": 400 + i} for i in range(items)]}))
    return vdir, cat


def offers_json(vdir) -> list[dict]:
    from processes import vrm_vendor
    return json.loads(vrm_vendor("offers", "--dir", str(vdir), "--json").stdout)


def wait_ledger(pred, vdir, what: str, timeout: float = 20.0) -> list[dict]:
    from processes import wait_for
    return wait_for(lambda: (rows := offers_json(vdir)) and pred(rows) and rows, timeout=timeout, what=what)


def publish(box, key: Identity) -> str:
    """An intent as the box publishes it: retained, with message expiry, signed by a fresh key."""
    intent_id = new_id()
    box.publish(topics.intent("bikes", intent_id),
                sign(key, Intent(intent=intent_id, category="bikes", terms=TERMS), now=time.time(), ttl=600,
                     msg_id=intent_id), retain=True, expiry=600)
    return intent_id


def receipt_for(key: Identity, intent_id: str, offers: list[Offer]) -> str:
    return sign(key, Receipt(intent=intent_id, category="bikes",
                             offers=receipts.padded([token_hash(o.token) for o in offers])), now=time.time(), ttl=3600)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_on_the_wire_a_lost_offer_comes_again_seconds_after_the_receipt_that_passes_it(broker, tmp_path):
    """A real vendor-kit process with the default timings (first look after 30 s): the box, played
    here, receipts four of its five offers; the fifth's copy arrives a few seconds later."""
    from test_vendor_e2e import Box, VendorProcess
    vdir, cat = setup_vendor(tmp_path, items=5)
    proc = VendorProcess(vdir, broker, cat, tmp_path / "vendor.log")
    box = None
    try:
        proc.wait_ready()
        key = Identity.generate()
        box = Box(broker, topics.offers("+"))
        intent_id = publish(box, key)
        offers = [verify(box.take(topics.offers(intent_id)), now=time.time(), expect=Offer) for _ in range(5)]
        wait_ledger(lambda rows: len(rows) == 5 and all(r["sent"] for r in rows), vdir, "all five acknowledged")
        lost = offers[2]
        kept = [o for o in offers if o is not lost]
        box.publish(topics.receipt("bikes", intent_id), receipt_for(key, intent_id, kept))
        receipted_at = time.monotonic()
        again = verify(box.take(topics.offers(intent_id), timeout=15), now=time.time(), expect=Offer)
        took = time.monotonic() - receipted_at
        print(f"lost offer sent again {took:.2f} s after the receipt that passed it")
        assert again.id == lost.id and again.token == lost.token
        assert took < 8, took                                         # the timer would have taken 30 s
        box.publish(topics.receipt("bikes", intent_id), receipt_for(key, intent_id, [lost]))
        rows = wait_ledger(lambda rows: all(r["receipted"] for r in rows), vdir, "all five receipted")
        assert sorted(r["resends"] for r in rows) == [0, 0, 0, 0, 1]
        assert {r["delivery"] for r in rows} == {"receipted"}
        assert proc.terminate() == 0
        assert "Traceback" not in proc.log.read_text()
    finally:
        proc.kill()
        if box:
            box.close()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_on_the_wire_an_offer_never_receipted_stops_after_the_cap_with_the_give_up_shown(broker, tmp_path):
    from processes import vrm_vendor
    from test_vendor_e2e import Box, VendorProcess
    vdir, cat = setup_vendor(tmp_path, items=1)
    proc = VendorProcess(vdir, broker, cat, tmp_path / "vendor.log", "--resend-first", "0.5", "--resend-factor", "1",
                         "--resend-max", "0.5", "--resend-limit", "3")
    box = None
    try:
        proc.wait_ready()
        box = Box(broker, topics.offers("+"))
        intent_id = publish(box, Identity.generate())
        rows = wait_ledger(lambda rows: rows[0]["delivery"] == "gave_up", vdir, "the give-up")
        assert (rows[0]["resends"], rows[0]["gave_up"], rows[0]["receipted"]) == (3, True, False)
        # a positive barrier: an offer the kit sends after the give-up. One publisher's messages
        # arrive in order, so every copy sent before it is here by then.
        barrier = publish(box, Identity.generate())
        box.take(topics.offers(barrier), timeout=15)
        got = []
        while not box.messages.empty():
            got.append(box.messages.get_nowait())
        copies = [p for t, p in got if t == topics.offers(intent_id)]
        assert len(copies) == 1 + 3 and len(set(copies)) == 1         # the first send and 3 re-sends, one token
        text = vrm_vendor("offers", "--dir", str(vdir)).stdout
        assert f"intent={intent_id}" in text and "delivery=gave_up  resends=3" in text
        assert proc.terminate() == 0
        log = proc.log.read_text()
        assert f"gave up on 1 offer(s) for intent {intent_id} after 3 re-sends without a receipt from the box" in log
        assert "Traceback" not in log
    finally:
        proc.kill()
        if box:
            box.close()
