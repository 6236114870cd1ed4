"""What waits for a vendor's answer goes out again until the answer comes: a confirmed agreement
(its countersignature) and a revocation (its acknowledgement). The market link keeps no session,
so an answer published while the box was away is gone; the vendor answers the same message
again. Each message on its own clock (device/daemon/resend.py)."""
from __future__ import annotations

import random
import time

from device.daemon import ops
from device.daemon.access import BUTTON
from device.daemon.resend import FIRST_S, MAX_S, SPREAD, Resends
from intake_box import Box
from vendor_messages import TestVendor
from vrm_protocol import topics, unseal, verify
from vrm_protocol.codec import unverified_payload
from vrm_protocol.messages import Agreement, Revocation


def test_each_message_has_its_own_clock_and_one_goes_at_a_time():
    r = Resends(random.Random(5))
    assert r.due(["a", "b"], 0.0) is None                       # first moments drawn, none yet
    firsts = dict(r._next)
    assert all(FIRST_S[0] <= at <= FIRST_S[1] for at, _ in firsts.values())
    late = FIRST_S[1] + 1
    first, second = r.due(["a", "b"], late), r.due(["a", "b"], late)
    assert {first, second} == {"a", "b"} and r.due(["a", "b"], late) is None
    at, delay = r._next["a"]
    assert delay == 2 * firsts["a"][1] and late + delay * (1 - SPREAD) <= at <= late + delay * (1 + SPREAD)
    assert r.due(["b"], late) is None and len(r) == 1            # "a" answered: forgotten


def test_the_wait_doubles_up_to_fifteen_minutes():
    r = Resends(random.Random(1))
    t = 0.0
    r.due(["x"], t)
    for _ in range(12):
        t = r._next["x"][0]
        assert r.due(["x"], t) == "x"
    assert r._next["x"][1] == MAX_S


def _confirmed(tmp_path):
    box = Box(tmp_path / "box")
    box.store.set_profile_field("email", "ann@example.org")
    intent = box.market.add_intent("bikes", {})["intent"]
    box.intake.refresh()
    v = TestVendor("acme")
    box.feed(topics.vendor_profile("acme"), v.profile())
    box.feed(topics.offers(intent), v.offer(box.store.get_intent(intent).token))
    agreement = box.market.accept(box.store.list_offers(intent)[0].offer_id, ["email"])["agreement"]
    ops.run(box.market, "confirm", {"agreement": agreement}, BUTTON)
    return box, v, agreement


def test_an_agreement_without_its_countersignature_is_sent_again_then_no_more(tmp_path):
    box, v, agreement = _confirmed(tmp_path)
    try:
        assert box.market.waiting_for_answer() == [("agreement", agreement)]
        topic, sealed, exp = box.market.message_again("agreement", agreement)
        [first] = box.outbox(topics.agreements("acme"))
        assert topic == topics.agreements("acme") and sealed != first     # sealed afresh ...
        assert unseal(sealed, v.enc) == unseal(first, v.enc)                # ... the same token
        assert exp == unverified_payload(unseal(first, v.enc))["exp"]
        verify(unseal(sealed, v.enc), now=time.time(), expect=Agreement)
        box.market.countersigned(agreement, v.countersign(first))          # the answer came
        assert box.market.waiting_for_answer() == []
        assert box.market.message_again("agreement", agreement) is None
        box.market.revoke(agreement, "moved house")
        assert box.market.waiting_for_answer() == [("revocation", agreement)]
        topic, sealed, _ = box.market.message_again("revocation", agreement)
        assert topic == topics.revocations("acme")
        verify(unseal(sealed, v.enc), now=time.time(), expect=Revocation)
        intent = box.store.get_agreement(agreement).intent_id
        box.feed(topics.revocation_acks(intent), v.ack(sealed))               # acknowledged
        assert box.market.waiting_for_answer() == []
        assert box.market.message_again("revocation", agreement) is None
    finally:
        box.store.close()


def test_the_daemon_sends_it_again_on_its_clock_with_message_expiry(tmp_path):
    from device.config import load_config
    from device.daemon import Daemon
    from test_outbox_expiry import _Client
    box, v, agreement = _confirmed(tmp_path)
    box.store.close()
    d = Daemon(load_config(None, {"data_dir": str(tmp_path / "box")}, env={}))
    try:
        d.client = _Client()
        d._connected.set()
        d._resend_due()                                   # its first moment is drawn: not yet
        assert d.client.sent == [] and len(d._resends) == 1
        d._resends._next = {k: (0.0, at_delay[1]) for k, at_delay in d._resends._next.items()}
        d._resend_checked = 0.0
        d._resend_due()
        [(topic, props)] = d.client.sent
        assert topic == topics.agreements("acme") and props.MessageExpiryInterval > 0
        d._connected.clear()                              # offline: nothing goes, nothing is made up
        d._resends._next = {k: (0.0, 15.0) for k in d._resends._next}
        d._resend_checked = 0.0
        d._resend_due()
        assert len(d.client.sent) == 1
    finally:
        d.store.close()
        d._lockfile.close()
