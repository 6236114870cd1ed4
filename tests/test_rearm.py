"""An offer the kit gave up on goes out once more when its intent is seen again (docs/vendor-kit.md,
"receipts and re-sends"; docs/protocol.md §8.10).

The box keeps no MQTT session, so an offer sent while it is away reaches it only by a re-send,
and the re-send ladder ends some 75 minutes after the first send. The box re-publishes each live
intent at random moments of its own, whatever its connection did: a live copy of the intent is
the sign its box is alive, and each given-up, unreceipted, unexpired offer of it then goes out
once (same token), at most core.REARM_LIMIT times over its life.

Driven with an explicit clock through the pure core, the ledger and the worker's handler; one
wire test runs a real `vrm-vendor` against a real Mosquitto.
"""
from __future__ import annotations

import json
import sqlite3
import time

import pytest

from test_lost_offers import NOW, TERMS, Sim, catalogue, setup_vendor, wait_ledger
from vendor_kit import core
from vendor_kit.ledger import LEDGER_FILE, SCHEMA_VERSION, Ledger
from vrm_protocol import Identity, Intent, IntentWithdrawal, Offer, new_id, sign, topics, verify

FAST = core.ResendPolicy(first_s=1, factor=1, max_s=1, limit=2)   # gives up 3 s after the first send
GAP = core.REARM_GAP_S


def given_up_sim(vendor, led, items: int = 1, validity_s: int = 3600, box: Identity | None = None):
    sim = Sim(vendor, led, catalogue(validity_s=validity_s, items=items), FAST)
    box = box or Identity.generate()
    intent_id, offers = sim.intent(box)
    sim.run_until(NOW + 10)
    assert {r["delivery"] for r in led.list_offers(now=sim.now)} == {"gave_up"}
    assert [len(sim.copies(o)) for o in offers] == [3] * items
    return sim, box, intent_id, offers


@pytest.fixture(scope="module")
def vendor():
    from vendor_kit.identity import VendorIdentity
    return VendorIdentity.generate("acme", "Acme Bikes", ["bikes"])


# ------------------------------------------------------------------------------ the pure rule
def _offer(vendor, valid_s: int = 3600):
    i = new_id()
    msg = verify(sign(Identity.generate(), Intent(intent=i, category="bikes", terms=TERMS), now=NOW, ttl=3600,
                      msg_id=i), now=NOW, expect=Intent)
    return core.answer_intent(msg, topics.intent("bikes", i), vendor, catalogue(validity_s=valid_s, items=1),
                              NOW).offers[0]


def test_the_plan_sends_a_given_up_offer_unless_receipted_expired_withdrawn_or_at_the_limit(vendor):
    off = _offer(vendor)
    now = NOW + 1000

    def plan(**kw) -> bool:
        return bool(core.plan_rearms([core.GivenUp(off, **{"rearms": 0, "last_sent": NOW, **kw})], now))

    assert core.REARM_LIMIT == 3
    assert plan()
    assert plan(rearms=2, last_sent=now - GAP)
    assert not plan(rearms=3, last_sent=NOW)                       # the limit, over the offer's life
    assert not plan(receipted=True)
    assert not plan(withdrawn=True)
    assert not plan(intent_exp=now)                                # its intent ended
    assert plan(intent_exp=now + 1)
    assert not core.plan_rearms([core.GivenUp(off, 0)], off.valid_until)   # the offer ended
    assert not plan(rearms=1, last_sent=now - GAP + 1)            # a second copy of one re-publish
    assert plan(rearms=0, last_sent=now - 1)                      # the give-up's last copy does not count


# ------------------------------------------------------------------------------ the worker, on a real ledger
def test_a_given_up_offer_goes_out_once_each_time_its_intent_is_seen_again_at_most_three_times(vendor, tmp_path):
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim, box, intent_id, offers = given_up_sim(vendor, led, items=2)
        token = {o.msg_id: o.token for o in offers}
        sent = []
        for k in range(5):
            sim.now += 15 * 60                                          # the box's next re-publish
            out = sim.republish(intent_id)
            sent.append(len(out))
            assert all(o.token == token[o.msg_id] for o in out)        # the same token, id
            sim.run_until(sim.now + 120)                               # no timer starts again
        assert sent == [2, 2, 2, 0, 0]
        assert [len(sim.copies(o)) for o in offers] == [3 + 3, 3 + 3]
        rows = led.list_offers(now=sim.now)
        assert [(r["delivery"], r["resends"], r["rearms"]) for r in rows] == [("gave_up", 2, 3)] * 2
        assert sim.worker.rearmed == 6 and led.awaiting_receipts(int(sim.now)) == 0


def test_two_copies_of_one_republish_rearm_once(vendor, tmp_path):
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim, _, intent_id, (offer,) = given_up_sim(vendor, led)
        sim.now += 600
        assert len(sim.republish(intent_id)) == 1
        sim.now += 1
        assert sim.republish(intent_id) == []                         # a QoS 1 duplicate
        assert led.list_offers(now=sim.now)[0]["rearms"] == 1


def test_a_retained_copy_or_one_signed_by_another_key_rearms_nothing(vendor, tmp_path):
    """The retained copy comes because the worker (re)subscribed: it says nothing about the box.
    A copy of the intent's id signed by someone else is no sign of the box either."""
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim, _, intent_id, (offer,) = given_up_sim(vendor, led)
        sim.now += 600
        assert sim.republish(intent_id, retained=True) == []
        forged = sign(Identity.generate(), Intent(intent=intent_id, category="bikes", terms=TERMS), now=sim.now,
                      ttl=3600, msg_id=intent_id)
        before = len(sim.published)
        assert sim.worker.handle(topics.intent("bikes", intent_id), forged.encode())
        assert len(sim.published) == before
        assert led.list_offers(now=sim.now)[0]["rearms"] == 0
        assert len(sim.republish(intent_id)) == 1                     # the box's own live copy


def test_a_receipted_offer_is_not_rearmed(vendor, tmp_path):
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim, box, intent_id, offers = given_up_sim(vendor, led, items=2)
        sim.receipt(box, intent_id, offers[:1])                       # a late receipt of one
        sim.now += 600
        out = sim.republish(intent_id)
        assert [o.msg_id for o in out] == [offers[1].msg_id]
        assert [r["rearms"] for r in led.list_offers(now=sim.now)] == [0, 1]


def test_a_never_given_up_offer_is_not_sent_by_a_republish(vendor, tmp_path):
    """Offers still on the re-send ladder are the timer's business."""
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim = Sim(vendor, led, catalogue(items=1), FAST)
        intent_id, _ = sim.intent(Identity.generate())
        assert sim.republish(intent_id) == []


def test_an_expired_offer_is_not_rearmed(vendor, tmp_path):
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim, _, intent_id, _ = given_up_sim(vendor, led, validity_s=60)
        sim.now = NOW + 61
        assert sim.republish(intent_id) == []
        assert led.list_offers(now=sim.now)[0]["rearms"] == 0


def test_a_withdrawn_intents_offers_are_not_rearmed(vendor, tmp_path):
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim, box, intent_id, _ = given_up_sim(vendor, led)
        token = sign(box, IntentWithdrawal(intent=intent_id, category="bikes"), now=sim.now, ttl=600)
        assert sim.worker.handle(topics.withdrawal("bikes", intent_id), token.encode())
        sim.now += 600
        assert sim.republish(intent_id) == []                         # (a stale copy: the box cleared it)


def test_the_listing_shows_the_rearms(vendor, tmp_path, capsys):
    from vendor_kit import cli
    with Ledger(tmp_path / LEDGER_FILE) as led:
        sim, _, intent_id, _ = given_up_sim(vendor, led)
        sim.now += 600
        sim.republish(intent_id)
    assert cli.main(["offers", "--dir", str(tmp_path)]) == 0
    line = capsys.readouterr().out.strip()
    assert "delivery=gave_up  resends=2  rearms=1" in line
    assert cli.main(["offers", "--dir", str(tmp_path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["delivery"], row["gave_up"], row["rearms"]) == ("gave_up", True, 1)


# ------------------------------------------------------------------------------ the ledger
def test_a_v4_ledger_keeps_its_data_and_counts_no_rearms_yet(vendor, tmp_path):
    path = tmp_path / LEDGER_FILE
    with Ledger(path) as led:
        sim, box, intent_id, offers = given_up_sim(vendor, led, items=2)
        sim.receipt(box, intent_id, offers[:1])
        before = led.list_offers(now=sim.now)
        intents = led.list_intents()
    db = sqlite3.connect(path, isolation_level=None)                  # make it what v4 wrote
    db.execute("ALTER TABLE offers DROP COLUMN rearms")
    db.execute("PRAGMA user_version = 4")
    db.close()
    with Ledger(path) as led:
        assert led._one("PRAGMA user_version")[0] == SCHEMA_VERSION == 5
        after = led.list_offers(now=sim.now)
        assert [r["rearms"] for r in after] == [0, 0]
        assert [{k: v for k, v in r.items() if k != "rearms"} for r in after] == \
            [{k: v for k, v in r.items() if k != "rearms"} for r in before]
        assert led.list_intents() == intents
        # the migrated ledger re-arms as a new one does
        row = led._one("SELECT gave_up_at, rearms FROM offers WHERE id = ?", offers[1].msg_id)
        assert row["gave_up_at"] is not None and row["rearms"] == 0
        out = led.take_rearms(intent_id, NOW + 600, lambda g: core.plan_rearms(g, NOW + 600))
        assert [o.msg_id for o in out] == [offers[1].msg_id]
        assert led._one("SELECT rearms FROM offers WHERE id = ?", offers[1].msg_id)[0] == 1


# ------------------------------------------------------------------------------ real processes, the wire
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_on_the_wire_a_given_up_offer_goes_out_again_when_the_box_republishes_its_intent(broker, tmp_path):
    from processes import vrm_vendor
    from test_vendor_e2e import Box, VendorProcess
    vdir, cat = setup_vendor(tmp_path, items=1)
    proc = VendorProcess(vdir, broker, cat, tmp_path / "vendor.log", "--resend-first", "0.5", "--resend-factor", "1",
                         "--resend-max", "0.5", "--resend-limit", "1")
    box = None
    try:
        proc.wait_ready()
        box = Box(broker, topics.offers("+"))
        key = Identity.generate()
        intent_id = new_id()
        token = sign(key, Intent(intent=intent_id, category="bikes", terms=TERMS), now=time.time(), ttl=600,
                     msg_id=intent_id)
        box.publish(topics.intent("bikes", intent_id), token, retain=True, expiry=600)
        first = box.take(topics.offers(intent_id))
        assert box.take(topics.offers(intent_id)) == first           # the one re-send
        wait_ledger(lambda rows: rows[0]["delivery"] == "gave_up", vdir, "the give-up")
        box.publish(topics.intent("bikes", intent_id), token, retain=True, expiry=590)   # the box's re-publish
        again = box.take(topics.offers(intent_id), timeout=15)
        assert again == first
        assert verify(again, now=time.time(), expect=Offer).id == verify(first, now=time.time(), expect=Offer).id
        rows = wait_ledger(lambda rows: rows[0]["rearms"] == 1, vdir, "the re-arm recorded")
        assert (rows[0]["delivery"], rows[0]["resends"]) == ("gave_up", 1)
        assert "delivery=gave_up  resends=1  rearms=1" in vrm_vendor("offers", "--dir", str(vdir)).stdout
        assert proc.terminate() == 0
        log = proc.log.read_text()
        assert f"intent {intent_id} seen again: re-sent 1 offer(s) given up on before" in log
        assert "Traceback" not in log
    finally:
        proc.kill()
        if box:
            box.close()
