"""Attacks on the intake, on a real on-disk store: a forger can only spend its own budget,
floods are shed cheaply (shared bucket for strangers, LRU limiter, a cap on pinned vendors, no
full cache refresh per profile, cheapest checks first), and the offers and inputs the spec
refuses are refused. Each test fails on the code before the fix."""
from __future__ import annotations

import base64
import dataclasses
import json
import time

import pytest

from device.intake import Outcome, Pre, Rejection
from device.ratelimit import RateLimiter
from vrm_protocol import Identity, TermsResponse, sign, topics
from vrm_protocol.codec import unverified_payload

from tests.intake_box import Box
from tests.vendor_messages import TestVendor


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.fixture
def box(tmp_path):
    b = Box(tmp_path / "box")
    yield b
    b.store.close()


@pytest.fixture
def intent(box):
    r = box.market.add_intent("bikes", {"budget_max": 800})
    box.intake.refresh()
    return box.store.get_intent(r["intent"])


def pin(box, slug: str) -> TestVendor:
    v = TestVendor(slug)
    out = box.feed(topics.vendor_profile(slug), v.profile())
    assert isinstance(out, Outcome) and out.kind == "profile", out
    return v


def forged_with_kid_of(v: TestVendor, intent_token: str) -> str:
    """A message carrying `v`'s public kid (from its retained profile), signed by someone else."""
    h, p, _ = v.offer(intent_token).split(".")
    _, _, s = sign(Identity.generate(), v.offer_body(intent_token), now=time.time(), ttl=3600).split(".")
    return f"{h}.{p}.{s}"


# ---------------------------------------------------------------------------- forgeries with a vendor's kid
def test_forgeries_carrying_a_vendors_kid_cost_it_neither_budget_nor_reputation(box, intent):
    acme = pin(box, "acme")
    for _ in range(30):   # more than acme's burst of 20
        assert box.feed(topics.offers(intent.intent_id), forged_with_kid_of(acme, intent.token)).reason \
            == "bad_signature"
    for price in (300, 400):
        out = box.feed(topics.offers(intent.intent_id), acme.offer(intent.token, price=price))
        assert isinstance(out, Outcome) and out.kind == "offer", out
    assert box.reasons() == {("bad_signature", None): 30}
    assert box.market.list_vendors()[0]["rejections"] == {}


def test_replays_of_a_vendors_own_messages_do_not_spend_its_budget(box, intent):
    acme = pin(box, "acme")
    captured = acme.offer(intent.token, price=100)
    assert box.feed(topics.offers(intent.intent_id), captured).kind == "offer"
    for _ in range(30):   # anyone on the broker can re-publish it
        box.feed(topics.offers(intent.intent_id), captured)
    out = box.feed(topics.offers(intent.intent_id), acme.offer(intent.token, price=200))
    assert isinstance(out, Outcome) and out.kind == "offer", out
    assert not any(v == "acme" for _, v in box.reasons())


def test_a_vendors_re_sends_are_taken_while_strangers_drain_the_shared_bucket(box, intent):
    """Re-sends until receipted (a copy of the vendor's own verified message) draw from the
    vendor's own re-send bucket: a stranger's flood of the shared bucket cannot stop them."""
    acme = pin(box, "acme")
    sent = acme.offer(intent.token, price=100)
    assert box.feed(topics.offers(intent.intent_id), sent).kind == "offer"
    for i in range(40):   # strangers spend the shared bucket (burst 20)
        box.intake.precheck(topics.offers(intent.intent_id), TestVendor(f"s{i}").offer(intent.token).encode())
    assert box.intake.precheck(topics.offers(intent.intent_id),
                               TestVendor("late").offer(intent.token).encode()).reason == "rate_limited"
    out = box.feed(topics.offers(intent.intent_id), sent)
    assert isinstance(out, Outcome) and out.kind == "duplicate", out


def test_a_re_sent_offer_of_a_vendor_at_its_cap_is_still_answered_as_stored(tmp_path):
    """At the per-intent cap new offers are refused cheaply, but a re-send of one already stored
    must reach the duplicate check (the box receipts it again) instead of `too_many_offers`."""
    box = Box(tmp_path / "capped", max_offers_per_vendor_intent=2)
    r = box.market.add_intent("bikes", {})
    box.intake.refresh()
    token = box.store.get_intent(r["intent"]).token
    acme = pin(box, "acme")
    first = acme.offer(token, price=100)
    assert box.feed(topics.offers(r["intent"]), first).kind == "offer"
    assert box.feed(topics.offers(r["intent"]), acme.offer(token, price=110)).kind == "offer"
    assert box.feed(topics.offers(r["intent"]), acme.offer(token, price=120)).reason == "too_many_offers"
    again = box.feed(topics.offers(r["intent"]), first)
    assert isinstance(again, Outcome) and again.kind == "duplicate", again
    box.store.close()


def test_a_vendors_budget_spent_on_one_intent_tells_nothing_about_another(box, intent):
    """From a review: with one budget per vendor, a vendor could spend it on intent A and see
    whether intent B stops answering (no receipt): that would link two intents to one box."""
    acme = pin(box, "acme")
    other = box.store.get_intent(box.market.add_intent("bikes", {})["intent"])
    box.intake.refresh()
    refused = [box.intake.precheck(topics.offers(intent.intent_id),
                                   acme.offer(intent.token, price=100 + i).encode()) for i in range(25)]
    assert [r.reason for r in refused if isinstance(r, Rejection)] == ["rate_limited"] * 5   # burst 20
    out = box.intake.precheck(topics.offers(other.intent_id), acme.offer(other.token).encode())
    assert isinstance(out, Pre), out


def test_a_relayed_offer_on_another_intent_is_not_charged_to_the_vendor(box, intent):
    acme = pin(box, "acme")
    other = box.market.add_intent("bikes", {})["intent"]
    box.intake.refresh()
    genuine = acme.offer(intent.token)
    for _ in range(30):
        assert box.feed(topics.offers(other), genuine).reason == "topic_mismatch"
    assert box.feed(topics.offers(intent.intent_id), genuine).kind == "offer"
    assert box.reasons() == {("topic_mismatch", None): 30}


# ---------------------------------------------------------------------------- floods
def test_unknown_signers_share_one_bucket_for_every_message_type(box, intent):
    passed = [box.intake.precheck(topics.offers(intent.intent_id),
                                  TestVendor(f"s{i}").offer(intent.token).encode()) for i in range(300)]
    assert sum(isinstance(p, Pre) for p in passed) == 20            # one burst for all strangers
    # ...and the same bucket is the one brand-new profiles draw from
    stranger = TestVendor("late")
    out = box.intake.precheck(topics.vendor_profile("late"), stranger.profile().encode())
    assert isinstance(out, Rejection) and out.reason == "rate_limited" and out.vendor is None


def test_the_rate_limiter_forgets_the_least_recently_used_bucket_not_all():
    limiter = RateLimiter(rate_per_minute=1, burst=2, max_keys=3)
    now = 1000.0
    assert [limiter.allow("flooder", now) for _ in range(3)] == [True, True, False]
    for i in range(50):          # fresh keys, as many as the attacker likes
        limiter.allow(f"fresh-{i}", now)
        assert limiter.allow("flooder", now) is False               # still empty: never refilled
    assert len(limiter) == 3


def test_pinned_vendors_are_capped_and_known_ones_keep_working(tmp_path):
    box = Box(tmp_path / "b", max_vendors=3)
    vendors = [pin(box, f"v{i}") for i in range(3)]
    out = box.feed(topics.vendor_profile("v3"), TestVendor("v3").profile())
    assert isinstance(out, Rejection) and out.reason == "too_many_vendors"
    assert len(box.store.list_vendors()) == 3
    again = box.feed(topics.vendor_profile("v0"), vendors[0].profile(now=time.time() + 1))
    assert isinstance(again, Outcome) and again.event["type"] == "vendor_same"
    box.store.close()


def test_profiles_update_the_caches_incrementally(box, monkeypatch):
    vendors = [pin(box, f"v{i}") for i in range(5)]
    calls = []
    real = box.store.list_vendors
    monkeypatch.setattr(box.store, "list_vendors", lambda: calls.append(1) or real())
    writes = []
    real_upsert = box.store.upsert_vendor_profile
    monkeypatch.setattr(box.store, "upsert_vendor_profile", lambda *a: writes.append(a[0]) or real_upsert(*a))
    for v in vendors:   # a reconnect re-delivers every retained profile: nothing to do
        assert box.feed(topics.vendor_profile(v.slug), box.store.get_vendor(v.slug).profile_token) is None
    assert writes == []
    assert isinstance(box.feed(topics.vendor_profile("v0"), vendors[0].profile(now=time.time() + 1)), Outcome)
    newcomer = TestVendor("new")
    assert isinstance(box.feed(topics.vendor_profile("new"), newcomer.profile()), Outcome)
    assert calls == [] and writes == ["v0", "new"]                   # never a full reload
    intent = box.market.add_intent("bikes", {})
    box.intake.refresh()
    token = box.store.get_intent(intent["intent"]).token
    assert box.feed(topics.offers(intent["intent"]), newcomer.offer(token)).kind == "offer"


def test_the_intent_lookup_comes_before_any_decoding(box, intent, monkeypatch):
    import device.intake as intake_mod

    def no_decoding(_):
        raise AssertionError("decoded a message for an intent we do not have")
    monkeypatch.setattr(intake_mod, "read_header", no_decoding)
    out = box.feed(topics.offers("Zz" * 8), b"\xff garbage")
    assert isinstance(out, Rejection) and out.reason == "unknown_intent"


def test_the_offer_cap_comes_before_the_signature_check(tmp_path):
    box = Box(tmp_path / "b", max_offers_per_vendor_intent=2)
    iid = box.market.add_intent("bikes", {})["intent"]
    box.intake.refresh()
    token = box.store.get_intent(iid).token
    acme = pin(box, "acme")
    for price in (1, 2):
        assert box.feed(topics.offers(iid), acme.offer(token, price=price)).kind == "offer"
    out = box.feed(topics.offers(iid), forged_with_kid_of(acme, token))
    assert isinstance(out, Rejection) and out.reason == "too_many_offers" and out.vendor is None
    box.store.close()


# ---------------------------------------------------------------------------- offers the spec refuses
def test_an_offer_whose_signature_expires_before_valid_until_is_refused(box, intent):
    acme = pin(box, "acme")
    short = sign(acme.identity, acme.offer_body(intent.token, valid_s=3 * 86400), now=time.time(), ttl=20)
    out = box.feed(topics.offers(intent.intent_id), short)
    assert isinstance(out, Rejection) and out.reason == "bad_field" and "valid_until" in out.detail
    assert box.store.list_offers() == []


@pytest.mark.parametrize("other", ["id", "sha256"])
def test_accepting_other_terms_is_not_accepting_the_persons(box, intent, other):
    acme = pin(box, "acme")
    terms = intent.body["terms"]
    response = TermsResponse(id="other-terms" if other == "id" else terms["id"],
                             sha256=b64u(b"\x00" * 32) if other == "sha256" else terms["sha256"],
                             decision="accept")
    body = dataclasses.replace(acme.offer_body(intent.token), terms_response=response)
    token = sign(acme.identity, body, now=time.time(), ttl=3600)
    out = box.feed(topics.offers(intent.intent_id), token)
    assert isinstance(out, Rejection) and out.reason == "terms_mismatch" and out.vendor == "acme"
    assert box.store.list_offers() == [] and box.market.ranked_offers() == []


@pytest.mark.parametrize("kind", ["offers", "countersignatures", "acks"])
def test_an_empty_payload_on_a_box_inbox_is_ignored_not_counted(box, intent, kind):
    topic = {"offers": topics.offers, "countersignatures": topics.countersignatures,
             "acks": topics.revocation_acks}[kind](intent.intent_id)
    assert box.feed(topic, b"") is None
    assert box.reasons() == {}


@pytest.mark.parametrize("kid", [["did:key:z6Mk"], {"a": 1}, 7, None])
def test_a_kid_that_is_not_a_string_is_the_protocols_bad_did(box, intent, kid):
    acme = pin(box, "acme")
    _, p, s = acme.offer(intent.token).split(".")
    h = b64u(json.dumps({"alg": "EdDSA", "kid": kid}).encode())
    out = box.intake.precheck(topics.offers(intent.intent_id), f"{h}.{p}.{s}".encode())
    assert isinstance(out, Rejection) and out.reason == "bad_did"


def test_a_pending_key_and_a_blocked_vendor_are_refused_under_no_vendor(box, intent):
    acme = pin(box, "acme")
    newkey = TestVendor("acme")
    assert box.feed(topics.vendor_profile("acme"), newkey.profile()).event["type"] == "vendor_key_changed"
    assert box.feed(topics.offers(intent.intent_id), newkey.offer(intent.token)).reason == "vendor_key_changed"
    box.market.set_vendor_status("acme", "blocked")
    box.intake.refresh()
    assert box.feed(topics.offers(intent.intent_id), acme.offer(intent.token)).reason == "blocked_vendor"
    assert box.reasons() == {("vendor_key_changed", None): 1, ("blocked_vendor", None): 1}


def test_only_the_vendors_verified_messages_show_under_its_name(box, intent):
    acme, evil = pin(box, "acme"), pin(box, "evil")
    imp = sign(evil.identity, acme.offer_body(intent.token), now=time.time(), ttl=3600)  # evil says "acme"
    assert box.feed(topics.offers(intent.intent_id), imp).reason == "vendor_mismatch"
    assert box.reasons() == {("vendor_mismatch", "evil"): 1}


def test_a_verified_replayed_id_after_storing_is_never_charged(box, intent):
    acme = pin(box, "acme")
    token = acme.offer(intent.token)
    assert box.feed(topics.offers(intent.intent_id), token).kind == "offer"
    other = sign(acme.identity, acme.offer_body(intent.token, price=1), now=time.time(), ttl=3600,
                 msg_id=unverified_payload(token)["id"])
    assert box.feed(topics.offers(intent.intent_id), other).reason == "replay"
    assert box.reasons() == {("replay", None): 1}
