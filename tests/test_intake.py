"""The offer intake pipeline and the market operations on a real on-disk store (no broker:
the daemon's MQTT shell is covered by the end-to-end tests)."""
from __future__ import annotations

import time

import pytest

from device.intake import Intake, Outcome, Rejection
from device.market import Market, MarketError
from device.ratelimit import RateLimiter
from device.store import Store
from vrm_protocol import DecryptionKey, Identity, ProtocolError, decrypt_json, sign, topics, verify
from vrm_protocol.codec import unverified_payload
from vrm_protocol.messages import Agreement, Disclosure, Revocation

from tests.intake_box import Box
from tests.vendor_messages import TestVendor


@pytest.fixture
def box(tmp_path):
    b = Box(tmp_path / "box")
    b.store.set_profile_field("email", "ann@example.org")
    b.store.set_profile_field("postal_address", "1 High St")
    b.store.set_profile_field("phone", "+44 1234")
    yield b
    b.store.close()


@pytest.fixture
def intent(box):
    r = box.market.add_intent("bikes", {"postcode_district": "SW1A", "budget_max": 800}, "a city bike")
    box.intake.refresh()
    return box.store.get_intent(r["intent"])


def with_vendor(box, slug="acme") -> TestVendor:
    v = TestVendor(slug)
    out = box.feed(topics.vendor_profile(slug), v.profile())
    assert isinstance(out, Outcome) and out.kind == "profile", out
    return v


def test_intent_is_signed_by_a_fresh_key_and_queued_retained(box):
    a = box.market.add_intent("bikes", {"budget_max": 500})
    b = box.market.add_intent("bikes", {"budget_max": 500})
    ta = box.outbox(topics.intent("bikes", a["intent"]))[0]
    tb = box.outbox(topics.intent("bikes", b["intent"]))[0]
    ma, mb = verify(ta, now=time.time()), verify(tb, now=time.time())
    assert ma.envelope.iss != mb.envelope.iss            # no shared identifier between intents
    assert box.store.device_identity.did not in (ma.envelope.iss, mb.envelope.iss)
    assert all(r.retain for r in box.store.pending_outbox())
    assert ma.body.terms.id == "vrm-basic-1"


def test_valid_offer_is_stored_and_ranked(box, intent):
    v = with_vendor(box)
    out = box.feed(topics.offers(intent.intent_id), v.offer(intent.token, price=500))
    assert isinstance(out, Outcome) and out.kind == "offer"
    assert out.event["eligible"] and out.event["position"] == 1
    [row] = box.market.ranked_offers()
    assert row["vendor"] == "acme" and row["explanation"]["contributions"]


def _assert_rejected(box, result, reason, vendor=None):
    assert isinstance(result, Rejection), result
    assert result.reason == reason, result
    assert box.reasons().get((reason, vendor), 0) >= 1


def test_forged_offer_signed_by_another_key(box, intent):
    v = with_vendor(box)
    forger = Identity.generate()
    token = sign(forger, v.offer_body(intent.token), now=time.time(), ttl=3600)
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), token), "unknown_vendor")
    # ...and a vendor's kid with someone else's signature
    h, p, _ = v.offer(intent.token).split(".")
    _, _, s = sign(forger, v.offer_body(intent.token), now=time.time(), ttl=3600).split(".")
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), f"{h}.{p}.{s}"), "bad_signature")
    assert not any(v == "acme" for _, v in box.reasons())   # a forgery is never acme's rejection
    assert box.store.list_offers() == []


def test_tampered_offer(box, intent):
    v = with_vendor(box)
    h, p, s = v.offer(intent.token, price=500).split(".")
    import base64, json
    payload = json.loads(base64.urlsafe_b64decode(p + "=="))
    payload["price"] = 1.0
    p2 = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), f"{h}.{p2}.{s}"), "bad_signature")
    assert box.store.list_offers() == []


def test_replayed_offer_is_stored_once_and_a_reused_id_is_refused(box, intent):
    v = with_vendor(box)
    token = v.offer(intent.token)
    assert box.feed(topics.offers(intent.intent_id), token).kind == "offer"
    again = box.feed(topics.offers(intent.intent_id), token)
    assert isinstance(again, Outcome) and again.kind == "duplicate"   # a QoS 1 redelivery
    msg_id = unverified_payload(token)["id"]
    other = sign(v.identity, v.offer_body(intent.token, price=1), now=time.time(), ttl=3600, msg_id=msg_id)
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), other), "replay")
    assert len(box.store.list_offers()) == 1


def test_expired_and_future_offers(box, intent):
    v = with_vendor(box)
    old = v.offer(intent.token, now=time.time() - 7200, ttl=600)
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), old), "expired")
    future = v.offer(intent.token, now=time.time() + 3600, ttl=600)
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), future), "not_yet_valid")
    assert box.store.list_offers() == []


def test_oversize_and_malformed(box, intent):
    with_vendor(box)
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), b"x" * (64 * 1024 + 1)), "oversize")
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), b"\xff\xfe"), "bad_encoding")
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), b"bm90.bm90.bm90"), "bad_json")
    assert box.feed(topics.offers(intent.intent_id), b"") is None        # §3: ignored, not counted
    assert sum(box.reasons().values()) == 3
    assert box.store.list_offers() == []


def test_wrong_intent(box, intent):
    v = with_vendor(box)
    other = box.market.add_intent("bikes", {})["intent"]
    box.intake.refresh()
    # an offer for `intent` sent to the other intent's inbox
    _assert_rejected(box, box.feed(topics.offers(other), v.offer(intent.token)), "topic_mismatch")
    # an inbox nobody asked for
    _assert_rejected(box, box.feed(topics.offers("Zz" * 8), v.offer(intent.token)), "unknown_intent")
    assert box.store.list_offers() == []


def test_unknown_blocked_and_impersonating_vendors(box, intent):
    stranger = TestVendor("stranger")  # never published a profile
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), stranger.offer(intent.token)),
                     "unknown_vendor")
    v = with_vendor(box, "acme")
    evil = with_vendor(box, "evil")
    imp = sign(evil.identity, v.offer_body(intent.token), now=time.time(), ttl=3600)  # says vendor=acme
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), imp), "vendor_mismatch", "evil")
    box.market.set_vendor_status("evil", "blocked")
    box.intake.refresh()
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), evil.offer(intent.token)),
                     "blocked_vendor")
    assert box.store.list_offers() == []


def test_changed_vendor_key_is_flagged_not_accepted(box, intent):
    v = with_vendor(box)
    new = TestVendor("acme")
    out = box.feed(topics.vendor_profile("acme"), new.profile())
    assert out.event["type"] == "vendor_key_changed"
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), new.offer(intent.token)),
                     "vendor_key_changed")
    assert box.market.list_vendors()[0]["key_changed"] is True
    # the old key still works until the person accepts the new one
    assert box.feed(topics.offers(intent.intent_id), v.offer(intent.token)).kind == "offer"


def test_flood_from_one_vendor_does_not_stop_others(box, intent):
    box.intake.max_offers = 1000   # the rate limit, not the per-intent cap, is what this is about
    frozen = time.time()           # the buckets must not refill while a slow machine feeds the flood
    box.intake.clock = lambda: frozen
    flood, a, b = with_vendor(box, "flood"), with_vendor(box, "alpha"), with_vendor(box, "beta")
    results = [box.feed(topics.offers(intent.intent_id), flood.offer(intent.token, price=1)) for _ in range(200)]
    assert sum(isinstance(r, Outcome) for r in results) == 20      # the burst
    assert box.reasons()[("rate_limited", "flood")] == 180
    for v in (a, b):
        for price in (300, 400):
            assert box.feed(topics.offers(intent.intent_id), v.offer(intent.token, price=price)).kind == "offer"
    vendors = {r["vendor"] for r in box.market.ranked_offers()}
    assert {"alpha", "beta"} <= vendors


def test_rules_change_reranks_stored_offers(box, intent):
    v, w = with_vendor(box, "acme"), with_vendor(box, "bolt")
    box.feed(topics.offers(intent.intent_id), v.offer(intent.token, price=300, brand="Cheap"))
    box.feed(topics.offers(intent.intent_id), w.offer(intent.token, price=600, brand="Brompton"))
    assert [r["vendor"] for r in box.market.ranked_offers()] == ["acme", "bolt"]
    rules = box.market.rules()
    rules["filters"]["max_price"] = {"amount": 500, "currency": "EUR"}
    box.market.set_rules(rules)
    assert [r["vendor"] for r in box.market.ranked_offers()] == ["acme"]
    rules["filters"].pop("max_price")
    rules["weights"]["price"] = 0.1
    rules["weights"]["brands_liked"] = 2.0
    rules["brands"]["liked"] = ["brompton"]
    box.market.set_rules(rules)
    assert [r["vendor"] for r in box.market.ranked_offers()] == ["bolt", "acme"]
    with pytest.raises(MarketError):
        box.market.set_rules({"filters": {"max_price": "cheap"}})


def test_agreement_flow_needs_the_button_and_discloses_exactly_the_fields(box, intent):
    v = with_vendor(box)
    offer_token = v.offer(intent.token)
    box.feed(topics.offers(intent.intent_id), offer_token)
    offer_id = unverified_payload(offer_token)["id"]
    with pytest.raises(MarketError, match="no field"):
        box.market.accept(offer_id, ["email", "shoe_size"])
    a = box.market.accept(offer_id, ["email", "postal_address"], "deliver the bike", 14)
    agreement_id = a["agreement"]
    assert box.outbox(topics.agreements("acme")) == []            # nothing sent before confirmation
    with pytest.raises(MarketError, match="button"):
        box.market.confirm(agreement_id, "companion")
    box.market.confirm(agreement_id, "button")
    [sealed] = box.outbox(topics.agreements("acme"))
    assert sealed.count(".") == 4 and "postal_address" not in sealed   # v2: sealed to the vendor
    agreement_token = v.opened(sealed)
    m = verify(agreement_token, now=time.time(), expect=Agreement)
    assert m.envelope.iss == intent.identity.did and m.body.fields == ["email", "postal_address"]
    assert box.outbox(topics.disclosures("acme")) == []           # not before the countersignature
    out = box.feed(topics.countersignatures(intent.intent_id), v.countersign(agreement_token))
    assert isinstance(out, Outcome) and out.kind == "countersignature", out
    [disclosure] = box.outbox(topics.disclosures("acme"))
    d = verify(disclosure, now=time.time(), expect=Disclosure)
    assert decrypt_json(d.body.jwe, v.enc) == {"agreement": agreement_id, "fields": {
        "email": "ann@example.org", "postal_address": "1 High St"}}
    with pytest.raises(ProtocolError, match=r"^bad_encryption: "):   # another key cannot open it
        decrypt_json(d.body.jwe, DecryptionKey.generate())
    box.market.revoke(agreement_id, "moved house")
    [rev] = box.outbox(topics.revocations("acme"))
    assert verify(v.opened(rev), now=time.time(), expect=Revocation).body.delete is True
    assert box.market.list_agreements()[0]["revocation"] == "pending"
    out = box.feed(topics.revocation_acks(intent.intent_id), v.ack(rev))
    assert isinstance(out, Outcome) and out.kind == "ack", out
    assert box.market.list_agreements()[0]["revocation"] == "acknowledged"
    assert box.store.audit.verify().ok
    events = [e.event_type for e in box.store.audit.entries()]
    for e in ("agreement_signed", "agreement_confirmed", "agreement_countersigned", "data_disclosed",
              "agreement_revoked", "deletion_requested", "deletion_acknowledged"):
        assert e in events


def test_countersignature_from_another_vendor_is_refused(box, intent):
    v, other = with_vendor(box, "acme"), with_vendor(box, "other")
    offer_token = v.offer(intent.token)
    box.feed(topics.offers(intent.intent_id), offer_token)
    a = box.market.accept(unverified_payload(offer_token)["id"], ["email"])
    box.market.confirm(a["agreement"], "button")
    [agreement_token] = box.outbox(topics.agreements("acme"))
    agreement_token = v.opened(agreement_token)   # as if acme had shown it to the other vendor
    out = box.feed(topics.countersignatures(intent.intent_id), other.countersign(agreement_token))
    assert isinstance(out, Rejection) and out.reason == "vendor_mismatch"
    assert box.outbox(topics.disclosures("acme")) == []


def test_withdrawn_intent_takes_no_more_offers(box, intent):
    v = with_vendor(box)
    box.market.withdraw_intent(intent.intent_id)
    box.intake.refresh()
    assert box.outbox(topics.intent("bikes", intent.intent_id))[-1] == ""   # retained copy cleared
    assert box.outbox(topics.withdrawal("bikes", intent.intent_id))
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), v.offer(intent.token)),
                     "intent_closed")


def test_agreement_without_countersignature_becomes_overdue_and_releases_nothing(tmp_path):
    clock = [time.time()]
    store = Store.open(tmp_path / "b", clock=lambda: clock[0])
    store.set_profile_field("email", "ann@example.org")
    market = Market(store, clock=lambda: clock[0])
    box = Box.__new__(Box)
    box.store, box.market = store, market
    box.intake = Intake(market, limiter=RateLimiter(60, 20), max_bytes=65536, clock=lambda: clock[0])
    iid = market.add_intent("bikes", {})["intent"]
    box.intake.refresh()
    v = with_vendor(box)
    token = v.offer(store.get_intent(iid).token, now=clock[0])
    box.feed(topics.offers(iid), token)
    a = market.accept(unverified_payload(token)["id"], ["email"])
    market.confirm(a["agreement"], "button")
    assert market.list_agreements()[0]["overdue"] is False
    clock[0] += 301
    [row] = market.list_agreements()
    assert row["overdue"] is True and row["status"] == "confirmed"
    assert box.outbox(topics.disclosures("acme")) == []
    market.revoke(a["agreement"])          # the person gives up on it; the vendor is told
    assert box.outbox(topics.revocations("acme"))
    store.close()


def test_a_bad_review_lowers_a_vendor_in_the_ranking(box, intent):
    v, w = with_vendor(box, "acme"), with_vendor(box, "bolt")
    box.feed(topics.offers(intent.intent_id), v.offer(intent.token, price=500))
    box.feed(topics.offers(intent.intent_id), w.offer(intent.token, price=510))
    assert [r["vendor"] for r in box.market.ranked_offers()] == ["acme", "bolt"]
    box.store.add_review("acme", "never delivered", rating=1)
    rules = box.market.rules()
    rules["weights"]["reputation"] = 1.0
    rules["weights"]["price"] = 0.2          # 500 vs 510 EUR matters less than a 1-star review
    box.market.set_rules(rules)
    ranked = box.market.ranked_offers()
    assert [r["vendor"] for r in ranked] == ["bolt", "acme"]
    assert ranked[1]["explanation"]["contributions"]["reputation"] < 0


def test_a_preset_from_the_config_casts_its_intent(tmp_path):
    from pathlib import Path
    from device.config import load_config
    from device.market import market_settings
    example = Path(__file__).resolve().parent.parent / "config" / "vrmbox.example.toml"
    cfg = load_config(example, {"data_dir": str(tmp_path / "b")})
    store = Store.open(cfg.data_dir)
    market = Market(store, market_settings(cfg))
    out = market.add_intent_from_preset("Bike")
    rec = store.get_intent(out["intent"])
    assert rec.category == "bikes" and rec.body["attributes"]["budget_max"] == 800
    assert rec.body["description"] == "A folding bike for commuting"
    with pytest.raises(MarketError, match="no preset"):
        market.add_intent_from_preset("Yacht")
    store.close()


def _confirmed_agreement(box, intent, v):
    token = v.offer(intent.token)
    box.feed(topics.offers(intent.intent_id), token)
    a = box.market.accept(unverified_payload(token)["id"], ["email"])
    box.market.confirm(a["agreement"], "button")
    [agreement_token] = box.outbox(topics.agreements(v.slug))
    return a["agreement"], v.opened(agreement_token)


def test_an_impostor_key_never_gets_the_disclosure(box, intent):
    real = with_vendor(box, "acme")
    agreement_id, agreement_token = _confirmed_agreement(box, intent, real)
    impostor = TestVendor("acme")
    assert box.feed(topics.vendor_profile("acme"), impostor.profile()).event["type"] == "vendor_key_changed"
    box.market.set_vendor_status("acme", "trusted")           # trusting does not swap the key
    box.intake.refresh()
    assert box.store.get_vendor("acme").did == real.did
    out = box.feed(topics.countersignatures(intent.intent_id), impostor.countersign(agreement_token))
    assert isinstance(out, Rejection) and out.reason == "vendor_key_changed"
    # even if the person accepts the new key, the agreement names the old one
    box.market.accept_vendor_key("acme", impostor.did)
    box.intake.refresh()
    out = box.feed(topics.countersignatures(intent.intent_id), impostor.countersign(agreement_token))
    assert isinstance(out, Rejection) and out.reason == "vendor_key_changed"
    assert box.outbox(topics.disclosures("acme")) == []
    with pytest.raises(MarketError, match="pinned key"):
        box.market.countersigned(agreement_id, impostor.countersign(agreement_token))
    assert box.store.list_disclosures() == []


def test_one_offer_cannot_get_two_agreements(box, intent):
    v = with_vendor(box)
    token = v.offer(intent.token)
    box.feed(topics.offers(intent.intent_id), token)
    offer_id = unverified_payload(token)["id"]
    box.market.accept(offer_id, ["email"])
    for act in (lambda: box.market.snooze(offer_id, 1), lambda: box.market.decline(offer_id),
                lambda: box.market.accept(offer_id, ["email"])):
        with pytest.raises(MarketError, match="accepted"):
            act()
    assert len(box.store.list_agreements()) == 1


@pytest.mark.parametrize("ttl", [-5, 0, 59, 400 * 86400])
def test_intent_lifetime_is_bounded(box, ttl):
    with pytest.raises(MarketError, match="between"):
        box.market.add_intent("bikes", {}, ttl=ttl)
    assert box.store.list_intents() == []


def test_a_late_confirmation_sends_nothing(tmp_path):
    clock = [time.time()]
    store = Store.open(tmp_path / "b", clock=lambda: clock[0])
    store.set_profile_field("email", "ann@example.org")
    box = Box.__new__(Box)
    box.store, box.market = store, Market(store, clock=lambda: clock[0])
    box.intake = Intake(box.market, limiter=RateLimiter(60, 20), max_bytes=65536, clock=lambda: clock[0])
    iid = box.market.add_intent("bikes", {})["intent"]
    box.intake.refresh()
    v = with_vendor(box)
    token = v.offer(store.get_intent(iid).token, now=clock[0], valid_s=30 * 86400, ttl=30 * 86400)
    box.feed(topics.offers(iid), token)
    a = box.market.accept(unverified_payload(token)["id"], ["email"])
    clock[0] += 8 * 86400                                      # the signed agreement was valid 7 days
    with pytest.raises(MarketError, match="expired"):
        box.market.confirm(a["agreement"], "button")
    assert box.outbox(topics.agreements("acme")) == []
    assert box.market.list_agreements()[0]["status"] == "ended"
    store.close()


def test_the_control_socket_cannot_claim_to_be_the_button(box, intent, tmp_path_factory):
    import os
    from concurrent.futures import Future
    from device.client import ControlError, call
    from device.daemon import ops
    from device.daemon.access import BUTTON_SOCKET, CONTROL_SOCKET, build_access
    from device.daemon.events import EventBus
    from device.daemon.sockets import ControlServer
    v = with_vendor(box)
    token = v.offer(intent.token)
    box.feed(topics.offers(intent.intent_id), token)
    agreement = box.market.accept(unverified_payload(token)["id"], ["email"])["agreement"]

    def submit(op, args, role):
        f: Future = Future()
        try:
            f.set_result(ops.run(box.market, op, args, role))
        except Exception as exc:
            f.set_exception(exc)
        return f
    d = tmp_path_factory.mktemp("s")
    access = build_access(os.geteuid())
    control = ControlServer(d / "c.sock", CONTROL_SOCKET, access, submit, EventBus(), lambda r: {})
    button = ControlServer(d / "b.sock", BUTTON_SOCKET, access, submit, EventBus(), lambda r: {})
    control.start()
    button.start()
    try:
        with pytest.raises(ControlError, match="button"):
            call(d / "c.sock", "confirm", {"agreement": agreement, "source": "button"})
        with pytest.raises(ControlError, match="not available"):
            call(d / "b.sock", "rules_set", {"rules": {}})
        assert call(d / "b.sock", "confirm", {"agreement": agreement, "source": "companion"})["source"] == "button"
    finally:
        control.stop()
        button.stop()
    assert box.outbox(topics.agreements("acme"))


def test_new_vendor_keys_share_one_bucket(box):
    results = [box.feed(topics.vendor_profile(f"v{i}"), TestVendor(f"v{i}").profile()) for i in range(60)]
    pinned = sum(isinstance(r, Outcome) for r in results)
    assert pinned == 20 and len(box.store.list_vendors()) == 20     # the burst, then refused
    assert box.reasons()[("rate_limited", None)] == 40


def test_an_offer_id_reused_after_its_replay_entry_expired_is_still_a_replay(box, intent):
    v = with_vendor(box)
    token = v.offer(intent.token, price=100)
    box.feed(topics.offers(intent.intent_id), token)
    box.intake.replay = type(box.intake.replay)()        # as after a long time: entry pruned
    other = sign(v.identity, v.offer_body(intent.token, price=1), now=time.time(), ttl=3600,
                 msg_id=unverified_payload(token)["id"])
    _assert_rejected(box, box.feed(topics.offers(intent.intent_id), other), "replay")
    assert [o.body["price"] for o in box.store.list_offers()] == [100]


def test_every_reason_the_intake_gives_is_declared():
    """Rejection counters, the docs and the phone app read reasons from one list."""
    import re
    from pathlib import Path
    import device.intake as intake_mod
    from vrm_protocol import REASONS
    source = Path(intake_mod.__file__).read_text()
    used = set(re.findall(r'Rejection\(\s*"([a-z_]+)"', source))
    used |= set(re.findall(r'else "([a-z_]+)"', source))
    assert used <= set(intake_mod.INTAKE_REASONS) | set(REASONS)     # nothing undeclared
    assert set(intake_mod.INTAKE_REASONS) <= used                    # nothing declared and dead


def test_decline_hides_an_offer_and_snooze_hides_it_until_the_time_is_up(tmp_path):
    clock = [time.time()]
    store = Store.open(tmp_path / "b", clock=lambda: clock[0])
    box = Box.__new__(Box)
    box.store, box.market = store, Market(store, clock=lambda: clock[0])
    box.intake = Intake(box.market, limiter=RateLimiter(60, 20), max_bytes=65536, clock=lambda: clock[0])
    iid = box.market.add_intent("bikes", {})["intent"]
    box.intake.refresh()
    v = with_vendor(box)
    tokens = [v.offer(store.get_intent(iid).token, now=clock[0], price=p, valid_s=86400, ttl=86400)
              for p in (100, 200)]
    a, b = (unverified_payload(t)["id"] for t in tokens)
    for t in tokens:
        box.feed(topics.offers(iid), t)
    box.market.decline(a)
    box.market.snooze(b, 3600)
    assert box.market.ranked_offers() == []
    assert {r["offer"]: r["status"] for r in box.market.ranked_offers(include_closed=True)} == \
        {a: "declined", b: "snoozed"}
    clock[0] += 3601
    assert [r["offer"] for r in box.market.ranked_offers()] == [b]
    store.close()
