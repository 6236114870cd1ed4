"""End-to-end receipts (docs/protocol.md §8.10): the box's pure batching, the vendor kit's pure
receipt check and re-send plan, the ledger that keeps what waits for a receipt across restarts,
the worker that refuses and counts forged receipts, the broker ACL with real clients, and a real
daemon + vendor-kit process pair where an offer the broker lost is re-sent and receipted."""
from __future__ import annotations

import json

import pytest

from device.daemon import receipts
from vendor_kit import core
from vendor_kit.catalogue import parse_catalogue
from vendor_kit.identity import VendorIdentity
from vendor_kit.ledger import LEDGER_FILE, Ledger
from vendor_kit.worker import BrokerSettings, VendorWorker
from vrm_protocol import (Identity, Intent, ProtocolError, Receipt, Terms, new_id, sign, token_hash, topics,
                          verify)
from vrm_protocol.messages import MAX_RECEIPT_OFFERS, RECEIPT_BUCKETS

NOW = 1_800_000_000.0
TERMS = Terms(id="vrm-basic-1", sha256=token_hash("terms text"))
CATALOGUE = {"currency": "EUR", "accept_terms": ["vrm-basic-1"], "offer_validity_s": 3600,
             "items": [{"category": "bikes", "name": f"Bike {i}", "sku": f"BK-{i}", "price": 400 + i}
                       for i in range(3)]}


# ------------------------------------------------------------------------------ the box's batching
def test_batch_groups_per_intent_chunks_pads_and_names_each_token_once():
    stored = [receipts.Stored("intent-a0000001", f"tok-a-{i}") for i in range(40)]
    stored += [receipts.Stored("intent-b0000001", "tok-b-0"), receipts.Stored("intent-a0000001", "tok-a-0")]
    fills = iter(range(10_000))
    out = receipts.batch(stored, {"intent-a0000001": "bikes", "intent-b0000001": "tents"},
                         filler=lambda: token_hash(f"filler-{next(fills)}"))
    assert [(r.intent, r.category, len(r.offers)) for r in out] == [
        ("intent-a0000001", "bikes", MAX_RECEIPT_OFFERS), ("intent-a0000001", "bikes", RECEIPT_BUCKETS[0]),
        ("intent-b0000001", "tents", RECEIPT_BUCKETS[0])]
    named = [h for r in out for h in r.offers]
    real = {token_hash(s.token) for s in stored}
    assert sum(h in real for h in named) == len(real) == 41           # every stored token once
    for r in out:
        r.check()                                                    # each a valid protocol body


def test_batch_skips_intents_the_store_no_longer_has_and_fillers_are_random():
    assert receipts.batch([receipts.Stored("intent-gone0001", "t")], {}) == []
    (r,) = receipts.batch([receipts.Stored("intent-a0000001", "t")], {"intent-a0000001": "bikes"})
    assert len(set(r.offers)) == RECEIPT_BUCKETS[0] and r.offers[0] == token_hash("t")
    with pytest.raises(ValueError, match="1..32"):
        receipts.padded([])
    with pytest.raises(ValueError, match="1..32"):
        receipts.padded(["x"] * (MAX_RECEIPT_OFFERS + 1))


# ------------------------------------------------------------------------------ the vendor's pure core
@pytest.fixture(scope="module")
def vendor() -> VendorIdentity:
    return VendorIdentity.generate("acme", "Acme Bikes", ["bikes", "tents"])


def answered(vendor, box, now=NOW):
    intent_id = new_id()
    token = sign(box, Intent(intent=intent_id, category="bikes", terms=TERMS), now=now, ttl=3600, msg_id=intent_id)
    msg = verify(token, now=now, expect=Intent)
    return core.answer_intent(msg, topics.intent("bikes", intent_id), vendor,
                              parse_catalogue(json.loads(json.dumps(CATALOGUE))), now)


def receipt_msg(signer: Identity, intent: str, hashes: list[str], category: str = "bikes", now=NOW):
    token = sign(signer, Receipt(intent=intent, category=category, offers=receipts.padded(hashes)),
                 now=now, ttl=3600)
    return verify(token, now=now, expect=Receipt), token


def test_a_genuine_receipt_names_our_offers_and_forged_ones_are_refused(vendor):
    box, other = Identity.generate(), Identity.generate()
    answer = answered(vendor, box)
    intent = answer.intent
    hashes = [o.hash for o in answer.offers]
    msg, _ = receipt_msg(box, intent.intent, hashes)
    rec = core.accept_receipt(msg, topics.receipt("bikes", intent.intent), intent)
    assert rec is not None and set(hashes) <= set(rec.hashes) and rec.intent == intent.intent
    forged, _ = receipt_msg(other, intent.intent, hashes)             # someone else's key
    with pytest.raises(ProtocolError) as exc:
        core.accept_receipt(forged, topics.receipt("bikes", intent.intent), intent)
    assert exc.value.reason == "key_mismatch"
    with pytest.raises(ProtocolError) as exc:                         # relayed to another intent's topic
        core.accept_receipt(msg, topics.receipt("bikes", "intent-other001"), intent)
    assert exc.value.reason == "bad_field"
    # another intent's receipt, signed by *its* key, does not match ours: it is not our intent
    second = answered(vendor, other).intent
    cross, _ = receipt_msg(other, second.intent, hashes)
    with pytest.raises(ProtocolError):
        core.accept_receipt(cross, topics.receipt("bikes", second.intent), intent)
    assert core.accept_receipt(msg, topics.receipt("bikes", intent.intent), None) is None   # not ours


def test_resend_plan_backs_off_and_drops_expired_offers(vendor):
    policy = core.ResendPolicy(first_s=1.0, factor=2.0, max_s=5.0)
    assert [policy.delay(n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    offers = answered(vendor, Identity.generate()).offers
    plan = core.plan_resends([core.Pending(offers[0], 0), core.Pending(offers[1], 3)], NOW + 10, policy)
    assert [(r.outgoing.msg_id, r.resends, r.next_at) for r in plan] == [
        (offers[0].id, 1, NOW + 12), (offers[1].id, 4, NOW + 15)]
    assert plan[0].outgoing.token == offers[0].token                  # the same token: the box de-duplicates
    assert core.plan_resends([core.Pending(offers[0], 0)], offers[0].valid_until, policy) == []
    with pytest.raises(ValueError, match="resend policy"):
        core.ResendPolicy(first_s=0)


def test_while_receipts_flow_only_offers_sent_before_a_receipted_one_go_again(vendor):
    """The broker delivers one publisher's messages in order: an offer of the intent sent before
    one the box has receipted was lost (or refused); one sent after is still in the queue."""
    policy = core.ResendPolicy(first_s=5.0, factor=2.0, max_s=60.0)
    lost, queued = answered(vendor, Identity.generate()).offers[:2]
    intent = lost.intent
    due = [core.Pending(lost, 0, last_sent=NOW, seq=1), core.Pending(queued, 0, last_sent=NOW, seq=3)]
    flowing = core.Receipts({intent: (core.Receipted(floor_seq=2, at=NOW + 6),)})   # 4 s ago, past the grace
    plan = core.plan_resends(due, NOW + 10, policy, flowing)
    assert [(r.outgoing.msg_id, r.send, r.lost, r.resends, r.next_at) for r in plan] == [
        (lost.id, True, True, 1, NOW + 20), (queued.id, False, False, 0, NOW + 15)]
    quiet = core.Receipts({intent: (core.Receipted(floor_seq=2, at=NOW + 4),)})     # nothing for 6 s: away
    assert [r.send for r in core.plan_resends(due, NOW + 10, policy, quiet)] == [True, True]
    assert [r.send for r in core.plan_resends(due, NOW + 10, policy)] == [True, True]   # no receipt yet
    # another intent's receipts say nothing about this one's box (two intents may be two boxes)
    elsewhere = core.Receipts({"intent-elsewhere1": (core.Receipted(floor_seq=9, at=NOW + 9),)},
                              latest=core.Receipted(floor_seq=9, at=NOW + 9))
    assert [(r.send, r.lost) for r in core.plan_resends(due, NOW + 10, policy, elsewhere)] == [
        (True, False), (True, False)]


# ------------------------------------------------------------------------------ the ledger
def test_ledger_keeps_unreceipted_offers_across_a_restart_and_stops_on_receipt(vendor, tmp_path):
    policy = core.ResendPolicy(first_s=2.0, factor=2.0, max_s=60.0)
    answer = answered(vendor, Identity.generate())
    plan = lambda now: lambda due, mark: core.plan_resends(due, now, policy, mark)  # noqa: E731
    with Ledger(tmp_path / LEDGER_FILE) as led:
        led.resend = policy
        led.claim(answer, int(NOW))
        assert led.take_resends(NOW + 100, plan(NOW + 100)) == []     # never sent: the outbox re-sends it
        for o in answer.offers:
            led.mark_sent(o.id, int(NOW))
        assert led.take_resends(NOW + 1, plan(NOW + 1)) == []         # not due yet
        assert led.awaiting_receipts(int(NOW)) == 3
    with Ledger(tmp_path / LEDGER_FILE) as led:                        # a restarted vendor
        led.resend = policy
        due = led.take_resends(NOW + 2, plan(NOW + 2))
        assert sorted(r.outgoing.msg_id for r in due) == sorted(o.id for o in answer.offers)
        assert led.take_resends(NOW + 3, plan(NOW + 3)) == []         # rescheduled: next at +4 s
        first = answer.offers[0]
        assert led.mark_receipted(first.intent, [first.hash, token_hash("someone else's")], int(NOW)) == 1
        assert led.mark_receipted(first.intent, [first.hash], int(NOW)) == 0   # a second copy: nothing
        again = led.take_resends(NOW + 6, plan(NOW + 6))
        assert sorted(r.outgoing.msg_id for r in again) == sorted(o.id for o in answer.offers[1:])
        assert all(r.resends == 2 for r in again)
        rows = {r["id"]: r for r in led.list_offers()}
        assert rows[first.id]["receipted"] and not rows[answer.offers[1].id]["receipted"]
        assert led.awaiting_receipts(int(NOW)) == 2
        assert led.take_resends(first.valid_until + 1.0, plan(first.valid_until + 1.0)) == []  # expired
        assert led.take_resends(first.valid_until + 999.0, plan(first.valid_until + 999.0)) == []


def test_copies_of_old_receipts_do_not_hold_back_re_sends(vendor, tmp_path):
    """Found in review: a replayed old receipt (or one the box re-signs for a replayed copy of a
    stored offer) made the box look "flowing", so lost offers were never re-sent."""
    policy = core.ResendPolicy(first_s=2.0, factor=2.0, max_s=60.0)
    answer = answered(vendor, Identity.generate())
    with Ledger(tmp_path / LEDGER_FILE) as led:
        led.resend = policy
        led.claim(answer, int(NOW))
        for o in answer.offers:
            led.mark_sent(o.id, int(NOW))
        first = answer.offers[0]
        assert led.mark_receipted(first.intent, [first.hash], int(NOW)) == 1
        said = led.receipted([first.intent])
        assert led.mark_receipted(first.intent, [first.hash], int(NOW) + 5) == 0   # the copy, later
        assert led.receipted([first.intent]) == said
        later = NOW + 5
        due = led.take_resends(later, lambda d, m: core.plan_resends(d, later, policy, m))
        assert sorted(r.outgoing.msg_id for r in due if r.send) == sorted(o.id for o in answer.offers[1:])


def test_worker_refuses_and_counts_forged_receipts(vendor, tmp_path):
    box, other = Identity.generate(), Identity.generate()
    answer = answered(vendor, box)
    with Ledger(tmp_path / LEDGER_FILE) as led:
        w = VendorWorker(vendor, parse_catalogue(json.loads(json.dumps(CATALOGUE))), led,
                         BrokerSettings(host="127.0.0.1", port=1, client_id="t"), clock=lambda: NOW)
        led.claim(answer, int(NOW))
        intent = answer.intent.intent
        hashes = [o.hash for o in answer.offers]
        topic = topics.receipt("bikes", intent)
        _, forged = receipt_msg(other, intent, hashes)
        assert w.handle(topic, forged.encode())
        _, genuine = receipt_msg(box, intent, hashes)
        assert w.handle(topics.receipt("bikes", "intent-elsewhere"), genuine.encode())   # relayed elsewhere
        assert w.handle(topic, b"not a jws")
        assert w.refused == {("receipt", "key_mismatch"): 1, ("receipt", "bad_field"): 1,
                             ("receipt", "bad_encoding"): 1}
        assert not any(r["receipted"] for r in led.list_offers())     # none of them counted as a receipt
        # another intent we answered, its own key, naming this intent's offers: receipts nothing here
        other_answer = answered(vendor, other)
        led.claim(other_answer, int(NOW))
        _, elsewhere = receipt_msg(other, other_answer.intent.intent, hashes)
        assert w.handle(topics.receipt("bikes", other_answer.intent.intent), elsewhere.encode())
        assert not any(r["receipted"] for r in led.list_offers())
        assert w.handle(topic, genuine.encode())
        assert {r["id"] for r in led.list_offers() if r["receipted"]} == {o.id for o in answer.offers}
        assert sum(w.refused.values()) == 3


# ------------------------------------------------------------------------------ the broker ACL
def test_acl_lets_the_box_publish_receipts_and_vendors_only_read_them(tmp_path):
    from provisioned import Client, box_credentials, layout, new_root, provision, remove_root, vrmbox
    from provisioning.launch import Broker, free_port
    root = new_root()
    try:
        assert provision(root, free_port()).returncode == 0
        lay = layout(root)
        out = root / "acme.password"
        assert vrmbox("broker", "add-vendor", "acme", "--root", str(root), "--out", str(out)).returncode == 0
        with Broker(tmp_path / "b", conf=lay.broker_conf) as broker:
            box = Client(broker.host, broker.port, lay.pem("ca"), *box_credentials(lay), name="box")
            acme = Client(broker.host, broker.port, lay.pem("ca"), "acme", out.read_text().strip(), name="acme")
            try:
                assert box.connect() == 0 and acme.connect() == 0
                topic = topics.receipt("bikes", "intent-0123456789ab")
                assert acme.subscribe(topics.receipts("bikes")) in (0, 1)
                assert box.publish(topic, b"receipt") == 0
                acme.wait(lambda: acme.got(topic, b"receipt"), "the box's receipt")
                assert acme.publish(topic, b"forged receipt") == 135          # not authorised
            finally:
                box.close()
                acme.close()
    finally:
        remove_root(root)


# ------------------------------------------------------------------------------ real processes
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_an_offer_the_broker_lost_is_resent_until_receipted(tmp_path, brokers, monkeypatch):
    """The daemon is down; the vendor's offers reach the broker (PUBACK) and the broker is then
    SIGKILLed before its autosave: they are gone from the broker. The vendor re-sends them until
    the restarted box stores and receipts them."""
    from processes import (box_config, bike_vendor, daemon, kill_broker, receipted, stored_offers, wait_for,
                           widen_autosave, vrmbox as box_cli)
    box_config(tmp_path, monkeypatch)
    broker = brokers("receipts")
    broker.stop()
    widen_autosave(broker, 3600)
    broker.start()
    data = tmp_path / "box"
    box = daemon(data, broker.url, tmp_path / "daemon.log").start()
    intent = json.loads(box_cli("intent", "add", "bikes", "--json", data_dir=data).stdout)["intent"]
    box.stop()                                                        # its session stays at the broker
    vendor_proc = bike_vendor(tmp_path, broker.url, extra=("--client-id", "vendor-alpha",
                                                          "--resend-first", "1", "--resend-max", "2"))
    vendor_proc.start()
    vdir = tmp_path / "vendor-alpha"
    wait_for(lambda: [r for r in receipted(vdir) if r["sent"]], what="the offer acknowledged by the broker")
    kill_broker(broker)                                               # before it saved anything to disk
    broker.start()
    box = daemon(data, broker.url, tmp_path / "daemon.log").start()
    try:
        rows = wait_for(lambda: [r for r in receipted(vdir) if r["receipted"]] or None, timeout=60,
                        what="the offer receipted")
        assert rows[0]["resends"] >= 1                                # it took a re-send
        assert [o for i, o in stored_offers(data)] == [rows[0]["id"]]
        assert intent in {i for i, _ in stored_offers(data)}
    finally:
        box.stop()
        vendor_proc.stop()
