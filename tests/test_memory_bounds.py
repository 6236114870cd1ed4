"""The box's memory does not grow with what it has stored.

The replay guard keeps recent message ids in memory (bounded) and finds older ones in the
store's indexed seen_messages, so start-up seeds nothing; the intake's leaderboards hold a
bounded number of offers (least recently used intents are dropped and rebuilt when needed).
Both keep their behaviour: replays and redeliveries are still told apart, placements still
equal a full ranking.
"""
from __future__ import annotations

import time
import tracemalloc

import pytest

import device.intake as intake_mod
import device.market as market_mod
from device.intake import Intake, Outcome, Rejection
from device.ratelimit import RateLimiter
from vrm_protocol import sign, topics
from vrm_protocol.codec import unverified_payload

from tests.intake_box import Box
from tests.vendor_messages import TestVendor


@pytest.fixture
def box(tmp_path):
    b = Box(tmp_path / "box", max_offers_per_vendor_intent=1000)
    b.intake.limiter = RateLimiter(10**6, 10**6)
    yield b
    b.store.close()


def _vendor(box: Box, slug: str = "acme") -> TestVendor:
    v = TestVendor(slug)
    assert box.feed(topics.vendor_profile(slug), v.profile()).kind == "profile"
    return v


def _intent(box: Box) -> tuple[str, str]:
    iid = box.market.add_intent("bikes", {"budget_max": 800})["intent"]
    box.intake.refresh()
    return iid, box.store.get_intent(iid).token


def test_start_up_memory_does_not_grow_with_stored_message_ids(box):
    now = int(time.time())
    with box.store.transaction():
        for i in range(20_000):
            box.store._conn.execute("INSERT INTO seen_messages(id, exp) VALUES (?,?)",
                                    (f"seen-{i:08d}-xxxxxxxxxx", now + 86400))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fresh = Intake(box.market, limiter=RateLimiter(60, 20), max_bytes=64 * 1024, clock=time.time)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(fresh.replay) == 0
    assert "seen-00000007-xxxxxxxxxx" in fresh.replay          # found in the store
    assert "never-seen-xxxxxxxxxxxx" not in fresh.replay
    assert grown < 500_000, grown                               # 20k ids in memory: several MB


def test_replays_beyond_memory_are_still_told_from_redeliveries(box, monkeypatch):
    monkeypatch.setattr(intake_mod, "REPLAY_MEMORY", 3)
    box.intake.reload()                                          # a guard with the small bound
    v = _vendor(box)
    iid, token = _intent(box)
    first = v.offer(token, price=100, ttl=600)                   # expires first: evicted first
    assert box.feed(topics.offers(iid), first).kind == "offer"
    for i in range(6):                                           # push the first id out of memory
        assert box.feed(topics.offers(iid), v.offer(token, price=200 + i)).kind == "offer"
    assert len(box.intake.replay) <= 3
    assert unverified_payload(first)["id"] not in box.intake.replay._seen
    again = box.feed(topics.offers(iid), first)
    assert isinstance(again, Outcome) and again.kind == "duplicate"      # a QoS 1 redelivery
    other = sign(v.identity, v.offer_body(token, price=1), now=time.time(), ttl=3600,
                 msg_id=unverified_payload(first)["id"])
    refused = box.feed(topics.offers(iid), other)
    assert isinstance(refused, Rejection) and refused.reason == "replay" and refused.vendor is None
    assert len(box.store.list_offers()) == 7


def test_leaderboards_hold_a_bounded_number_of_offers(box, monkeypatch):
    monkeypatch.setattr(market_mod, "MAX_BOARD_OFFERS", 10)
    v = _vendor(box)
    intents = [_intent(box) for _ in range(4)]
    for i in range(40):
        iid, token = intents[i % 4]
        out = box.feed(topics.offers(iid), v.offer(token, price=100 + (i * 37) % 500))
        assert isinstance(out, Outcome) and out.kind == "offer", out
        held = sum(len(b.board) for b in box.market._boards.values())
        assert held <= 10, held
        full = box.market.ranked_offers(iid, include_ineligible=True)
        eligible = [r["offer"] for r in full if r["eligible"]]
        mine = next(r for r in full if r["offer"] == out.event["offer"])
        assert out.event["score"] == mine["score"]
        assert out.event["position"] == (eligible.index(mine["offer"]) + 1 if mine["eligible"] else None)
    assert box.market._boards                                    # some intents are still cached


def test_listing_intents_counts_offers_without_loading_them(box, monkeypatch):
    v = _vendor(box)
    iid, token = _intent(box)
    other, _ = _intent(box)
    for price in (100, 200, 300):
        assert box.feed(topics.offers(iid), v.offer(token, price=price)).kind == "offer"

    def no(*a, **k):
        raise AssertionError("list_intents loaded offers")
    monkeypatch.setattr(box.store, "list_offers", no)
    counts = {i["intent"]: i["offers"] for i in box.market.list_intents()}
    assert counts == {iid: 3, other: 0}
