"""An offer id is unique only within its intent and its signer.

1. A vendor re-sending its own offer stored for I1 to I2's inbox is not a duplicate (no receipt
   names it under I2), and a new offer for I2 reusing I1's offer id is treated as on a box that
   never saw I1: receipts cannot tell "same box" from "another box".
2. A squatter publishing offers with another vendor's ids (read from the inboxes while the box
   was offline) cannot make the genuine vendor's offers be refused as replays.

In the harness an Outcome "offer" or "duplicate" is what the daemon receipts (service.py)."""
from __future__ import annotations

import time

import pytest

from device.intake import Outcome
from vrm_protocol import ReplayGuard, sign, token_hash, topics, verify
from vrm_protocol.codec import unverified_payload
from vrm_protocol.messages import Agreement

from tests.intake_box import Box
from tests.vendor_messages import TestVendor


def _intent(box: Box, **attrs) -> tuple[str, str]:
    iid = box.market.add_intent("bikes", attrs or {"budget_max": 800})["intent"]
    box.intake.refresh()
    return iid, box.store.get_intent(iid).token


def _pin(box: Box, v: TestVendor) -> TestVendor:
    out = box.feed(topics.vendor_profile(v.slug), v.profile())
    assert isinstance(out, Outcome) and out.kind == "profile", out
    return v


def _id(token: str) -> str:
    return unverified_payload(token)["id"]


def _kind(result) -> str:
    """What an observer outside the box can tell apart: receipted or not (and the reason, which
    the box keeps to itself, for the test's own precision)."""
    return result.kind if isinstance(result, Outcome) else f"refused:{result.reason}"


@pytest.fixture
def two_boxes(tmp_path):
    """Box A with intents I1 and I2, box B with J1; one vendor pinned on both."""
    a, b = Box(tmp_path / "a"), Box(tmp_path / "b")
    acme = TestVendor("acme")
    _pin(a, acme), _pin(b, acme)
    yield a, b, acme
    a.store.close()
    b.store.close()


def test_an_offer_stored_for_one_intent_sent_to_anothers_inbox_is_no_duplicate(two_boxes):
    a, b, acme = two_boxes
    i1, t1 = _intent(a)
    i2, _ = _intent(a)
    j1, _ = _intent(b)
    offer = acme.offer(t1)
    assert a.feed(topics.offers(i1), offer).kind == "offer"
    same_box = a.feed(topics.offers(i2), offer)
    other_box = b.feed(topics.offers(j1), offer)
    assert not isinstance(same_box, Outcome), same_box          # never receipted under I2
    assert _kind(same_box) == _kind(other_box) == "refused:topic_mismatch"
    assert [o.intent_id for o in a.store.list_offers()] == [i1]
    # the genuine re-send on its own inbox is still a duplicate (receipted again)
    assert a.feed(topics.offers(i1), offer).kind == "duplicate"


def test_a_new_offer_reusing_an_id_from_another_intent_is_taken_as_on_a_fresh_box(two_boxes):
    a, b, acme = two_boxes
    i1, t1 = _intent(a)
    i2, t2 = _intent(a)
    j1, tj = _intent(b)
    first = acme.offer(t1, price=100)
    assert a.feed(topics.offers(i1), first).kind == "offer"
    reused = sign(acme.identity, acme.offer_body(t2, price=200), now=time.time(), ttl=3600,
                  msg_id=_id(first))
    reused_b = sign(acme.identity, acme.offer_body(tj, price=200), now=time.time(), ttl=3600,
                    msg_id=_id(first))
    same_box, other_box = a.feed(topics.offers(i2), reused), b.feed(topics.offers(j1), reused_b)
    assert _kind(same_box) == _kind(other_box) == "offer", (same_box, other_box)
    assert sorted((o.intent_id, o.body["price"]) for o in a.store.list_offers()) == \
        sorted([(i1, 100), (i2, 200)])
    # each is its own: re-sends are duplicates, a third token with the id in either is a replay
    assert a.feed(topics.offers(i1), first).kind == "duplicate"
    assert a.feed(topics.offers(i2), reused).kind == "duplicate"
    third = sign(acme.identity, acme.offer_body(t2, price=300), now=time.time(), ttl=3600,
                 msg_id=_id(first))
    assert _kind(a.feed(topics.offers(i2), third)) == "refused:replay"
    # accepting the I2 offer names the vendor's own id and that token in the agreement
    handle = same_box.event["offer"]
    assert a.store.get_offer(handle).intent_id == i2
    a.store.set_profile_field("email", "ann@example.org")
    agr = a.market.accept(handle, ["email"], "deliver", 7)
    a.market.confirm(agr["agreement"], "button")
    [sealed] = a.outbox(topics.agreements("acme"))
    body = verify(acme.opened(sealed), now=time.time(), expect=Agreement).body
    assert (body.intent, body.offer, body.offer_hash) == (i2, _id(first), token_hash(reused))


def test_the_same_after_a_restart_with_the_ids_only_in_the_store(two_boxes, tmp_path):
    a, _, acme = two_boxes
    i1, t1 = _intent(a)
    i2, t2 = _intent(a)
    first = acme.offer(t1)
    assert a.feed(topics.offers(i1), first).kind == "offer"
    a.intake.reload()   # memory forgets; the store's seen ids and rows remain
    assert _kind(a.feed(topics.offers(i2), first)) == "refused:topic_mismatch"
    reused = sign(acme.identity, acme.offer_body(t2), now=time.time(), ttl=3600, msg_id=_id(first))
    assert a.feed(topics.offers(i2), reused).kind == "offer"
    a.intake.replay = ReplayGuard()     # not even the store's seen ids: the rows alone decide
    assert a.feed(topics.offers(i1), first).kind == "duplicate"
    assert a.feed(topics.offers(i2), reused).kind == "duplicate"
    again = sign(acme.identity, acme.offer_body(t1, price=1), now=time.time(), ttl=3600, msg_id=_id(first))
    assert _kind(a.feed(topics.offers(i1), again)) == "refused:replay"


def test_a_squatters_copies_of_ids_never_block_the_genuine_vendors_offers(tmp_path):
    box = Box(tmp_path / "box")
    acme, evil = _pin(box, TestVendor("acme")), _pin(box, TestVendor("evil"))
    iid, token = _intent(box)
    box.store.close()
    # the box is offline; acme's offers wait in the inbox, where evil reads their ids
    genuine = [acme.offer(token, price=100 + i) for i in range(3)]
    squats = [sign(evil.identity, evil.offer_body(token, price=1), now=time.time(), ttl=3600,
                   msg_id=_id(g)) for g in genuine]
    box = Box(tmp_path / "box")     # back online: evil's copies happen to come first
    try:
        assert [box.feed(topics.offers(iid), s).kind for s in squats] == ["offer"] * 3
        got = [box.feed(topics.offers(iid), g) for g in genuine]
        assert [_kind(g) for g in got] == ["offer"] * 3, got
        # and the genuine re-sends are receipted, also after another restart
        assert [box.feed(topics.offers(iid), g).kind for g in genuine] == ["duplicate"] * 3
        box.intake.reload()
        assert [box.feed(topics.offers(iid), g).kind for g in genuine] == ["duplicate"] * 3
        assert sorted(o.vendor for o in box.store.list_offers()) == ["acme"] * 3 + ["evil"] * 3
        assert not any(r == "replay" for r, _ in box.reasons())
        # the handles the person uses are distinct, each naming its own vendor's offer
        handles = {g.event["offer"] for g in got}
        assert len(handles) == 3 and all(box.store.get_offer(h).vendor == "acme" for h in handles)
    finally:
        box.store.close()


def test_a_squatter_first_on_the_id_leaves_the_cap_precheck_to_the_genuine_vendor(tmp_path):
    """At its cap a vendor's re-sends still reach the duplicate check; another signer's id in
    the store does not count as the genuine vendor's own."""
    box = Box(tmp_path / "capped", max_offers_per_vendor_intent=1)
    try:
        acme, evil = _pin(box, TestVendor("acme")), _pin(box, TestVendor("evil"))
        iid, token = _intent(box)
        mine = acme.offer(token)
        assert box.feed(topics.offers(iid), mine).kind == "offer"
        squat = sign(evil.identity, evil.offer_body(token), now=time.time(), ttl=3600, msg_id=_id(mine))
        assert box.feed(topics.offers(iid), squat).kind == "offer"
        evil_new = evil.offer(token)
        assert _kind(box.feed(topics.offers(iid), evil_new)) == "refused:too_many_offers"
        assert box.feed(topics.offers(iid), mine).kind == "duplicate"
        assert box.feed(topics.offers(iid), squat).kind == "duplicate"
    finally:
        box.store.close()
