"""The `box` vectors (docs/protocol.md 11.2, 12): what a box answers for offers on its inbox,
against the reference intake on a real on-disk store at the vectors' clock. A kid no pinned
vendor has is `unknown_vendor` however the token was signed; a withdrawn intent's inbox refuses
everything with `intent_closed`, counts it and stores nothing."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from device.intake import Intake, Outcome, Pre, Rejection
from device.market import Market
from device.ratelimit import RateLimiter
from device.store import Store
from vrm_protocol import Offer, ProtocolError, topics, verify
from vrm_protocol.codec import unverified_payload

VECTORS = json.loads((Path(__file__).parent / "vectors" / "v2.json").read_text(encoding="utf-8"))
BOX = VECTORS["box"]
ENVELOPE = ("v", "type", "id", "iss", "iat", "exp")


class VectorBox:
    """A box whose own intent is the `intent` vector and which has pinned the `profile` vector."""

    def __init__(self, path: Path, intent_status: str) -> None:
        now = float(BOX["now"])
        self.store = Store.open(path, clock=lambda: now)
        self.market = Market(self.store, clock=lambda: now)
        self.intake = Intake(self.market, limiter=RateLimiter(60, 20), max_bytes=64 * 1024,
                             clock=lambda: now)
        payload = unverified_payload(BOX["intent"])
        body = {k: v for k, v in payload.items() if k not in ENVELOPE}
        self.store.add_intent(payload["intent"], payload["category"], bytes.fromhex(BOX["intent_seed"]),
                              BOX["intent"], body, payload["exp"])
        if intent_status != "active":
            self.store.set_intent_status(payload["intent"], intent_status)
        self.intake.refresh()
        pinned = self.feed(topics.vendor_profile(BOX["vendor"]), BOX["profile"])
        assert isinstance(pinned, Outcome) and pinned.event["type"] == "vendor_new", pinned

    def feed(self, topic: str, token: str) -> Any:
        pre = self.intake.precheck(topic, token.encode("ascii"))
        result = self.intake.handle(pre) if isinstance(pre, Pre) else pre
        if isinstance(result, Rejection):
            self.intake.count(result)
            self.intake.flush_counts()
        return result


@pytest.fixture
def make_box(tmp_path: Path) -> Iterator[Any]:
    boxes: list[VectorBox] = []

    def make(status: str) -> VectorBox:
        boxes.append(VectorBox(tmp_path / f"box{len(boxes)}", status))
        return boxes[-1]

    yield make
    for b in boxes:
        b.store.close()


@pytest.mark.parametrize("case", BOX["cases"], ids=lambda c: c["name"])
def test_the_box_answers_each_case_as_the_vector_says(make_box, case):
    box = make_box(case["intent_status"])
    got = box.feed(case["topic"], case["token"])
    if case["reason"] is None:
        assert isinstance(got, Outcome) and got.kind == "offer", got
        assert [o.offer_id for o in box.store.list_offers()] == [unverified_payload(case["token"])["id"]]
    else:
        assert isinstance(got, Rejection) and got.reason == case["reason"], got
        assert got.vendor is None                 # nothing here carries a pinned vendor's verified word
        assert box.store.list_offers() == []
        assert {(r, v): n for r, v, n in box.store.rejection_counts()} == {(case["reason"], None): 1}


@pytest.mark.parametrize("case", BOX["cases"], ids=lambda c: c["name"])
def test_verify_alone_reports_the_vectors_verify_reason(case):
    if case["verify_reason"] is None:
        verify(case["token"], now=BOX["now"], expect=Offer)
    else:
        with pytest.raises(ProtocolError) as exc:
            verify(case["token"], now=BOX["now"], expect=Offer)
        assert exc.value.reason == case["verify_reason"]


def test_the_cases_cover_the_three_unpinned_kids_and_the_closed_inbox():
    by = {c["name"]: c for c in BOX["cases"]}
    unpinned = [c for c in BOX["cases"] if c["reason"] == "unknown_vendor"]
    # the signature verifier would say something else of each: the box answers before it asks
    assert {c["verify_reason"] for c in unpinned} == {"bad_signature", "key_mismatch"} and len(unpinned) == 3
    vendor_did = unverified_payload(BOX["profile"])["iss"]
    assert unverified_payload(by["pinned_iss_unpinned_kid"]["token"])["iss"] == vendor_did
    assert {c["reason"] for c in BOX["cases"] if c["intent_status"] == "withdrawn"} == {"intent_closed"}


def test_a_withdrawn_intents_inbox_stays_read_until_the_intents_exp(make_box):
    """Read, so that what a vendor still sends is refused `intent_closed` and counted, instead of
    never reaching the box (an unread inbox counts nothing)."""
    box = make_box("withdrawn")
    intent = unverified_payload(BOX["intent"])
    assert intent["intent"] in box.intake.subscribed_intents
    box.intake.clock = lambda: float(intent["exp"])
    assert intent["intent"] not in box.intake.subscribed_intents


def test_an_offer_arriving_again_is_an_offer_duplicate_event(make_box):
    box = make_box("active")
    stored = next(c for c in BOX["cases"] if c["reason"] is None)
    first = box.feed(stored["topic"], stored["token"])
    again = box.feed(stored["topic"], stored["token"])
    assert again.kind == "duplicate"
    assert again.event == {"type": "offer_duplicate", "offer": first.event["offer"],
                           "intent": first.event["intent"], "vendor": BOX["vendor"]}
