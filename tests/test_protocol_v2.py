"""Protocol v2: what the box sends a vendor after a
confirmation is sealed to that vendor, the agreement is signed when the person confirms, disclosure
sizes fall into a few buckets, every JSON parser of network input has a depth limit, and the
intent carries the terms text a vendor accepts."""
from __future__ import annotations

import base64
import json

import pytest

from device.intake import Intake, Pre
from device.market import Market
from device.ratelimit import RateLimiter
from device.store import Store
from vrm_protocol import (Agreement, DecryptionKey, Intent, ProtocolError, Revocation, decrypt_json,
                          encrypt_json, seal, topics, unseal, verify)
from vrm_protocol.codec import MAX_JSON_DEPTH, check_json_depth
from vrm_protocol.encryption import PAD_BUCKETS, _decrypt
from vrm_protocol.messages import Terms, parse_dataclass, terms_digest

from tests.vendor_messages import TestVendor

T0 = 1_760_000_000


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.fixture
def world(tmp_path):
    clock = [float(T0)]
    store = Store.open(tmp_path / "box", clock=lambda: clock[0])
    store.set_profile_field("email", "ann@example.org")
    market = Market(store, clock=lambda: clock[0])
    intake = Intake(market, limiter=RateLimiter(60, 20), max_bytes=65536, clock=lambda: clock[0])
    acme = TestVendor("acme")
    intake.handle(intake.precheck(topics.vendor_profile("acme"), acme.profile(now=clock[0]).encode()))
    iid = market.add_intent("bikes", {})["intent"]
    intake.refresh()
    offer = acme.offer(store.get_intent(iid).token, now=clock[0], ttl=86400)
    pre = intake.precheck(topics.offers(iid), offer.encode())
    assert isinstance(pre, Pre)
    intake.handle(pre)
    yield {"clock": clock, "store": store, "market": market, "intake": intake, "acme": acme, "intent": iid,
           "offer": verify(offer, now=clock[0]).id}
    store.close()


def outbox(store, topic):
    return [r.payload for r in store.pending_outbox() if r.topic == topic]


def test_the_agreement_is_signed_at_confirmation_under_the_id_given_at_accept(world):
    market, clock, acme = world["market"], world["clock"], world["acme"]
    accepted = market.accept(world["offer"], ["email"], "deliver the bike to my flat", 30)
    clock[0] += 600                                  # the person thinks it over for ten minutes
    confirmed = market.confirm(accepted["agreement"], "button")
    assert confirmed["agreement"] == accepted["agreement"]
    [sealed] = outbox(world["store"], topics.agreements("acme"))
    msg = verify(unseal(sealed, acme.enc), now=clock[0], expect=Agreement)
    assert msg.envelope.iat == T0 + 600               # not the accept time: hesitation is not on the wire
    assert msg.id == accepted["agreement"]


def test_what_follows_a_confirmation_is_readable_by_the_vendor_alone(world):
    market, store, acme = world["market"], world["store"], world["acme"]
    a = market.accept(world["offer"], ["email"], "deliver the bike to my flat", 30)
    market.confirm(a["agreement"], "button")
    [sealed] = outbox(store, topics.agreements("acme"))
    assert sealed.count(".") == 4                     # a JWE, not a JWS anyone can decode
    for part in sealed.split("."):
        decoded = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        assert b"email" not in decoded and b"deliver" not in decoded
    with pytest.raises(ProtocolError) as exc:
        unseal(sealed, DecryptionKey.generate())
    assert exc.value.reason == "bad_encryption"
    intake = world["intake"]
    pre = intake.precheck(topics.countersignatures(world["intent"]), acme.countersign(sealed, now=world["clock"][0]).encode())
    assert intake.handle(pre).kind == "countersignature"
    market.revoke(a["agreement"], "I moved to Leeds")
    [rev] = outbox(store, topics.revocations("acme"))
    assert rev.count(".") == 4 and b"Leeds" not in b"".join(
        base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in rev.split("."))
    assert verify(unseal(rev, acme.enc), now=world["clock"][0], expect=Revocation).body.reason == "I moved to Leeds"


def test_disclosure_lengths_fall_into_buckets():
    key = DecryptionKey.generate()
    short = encrypt_json({"agreement": "a" * 22, "fields": {"email": "a@b.c"}}, key.public)
    longer = encrypt_json({"agreement": "a" * 22, "fields": {"email": "a.much.longer.name@example.org",
                                                             "postal_address": "1 High Street"}}, key.public)
    assert len(short) == len(longer)                 # the exact length of the values is not on the wire
    assert len(_decrypt(short, key)) == PAD_BUCKETS[0]
    assert decrypt_json(longer, key)["fields"]["postal_address"] == "1 High Street"   # padding ignored
    big = encrypt_json({"agreement": "a" * 22, "fields": {"note": "x" * 3000}}, key.public)
    assert len(_decrypt(big, key)) == PAD_BUCKETS[2]
    with pytest.raises(ProtocolError) as exc:
        encrypt_json({"agreement": "a", "fields": {"note": "x" * (PAD_BUCKETS[-1] + 1)}}, key.public)
    assert exc.value.reason == "oversize"


def test_sealing_round_trip_and_refusals():
    key = DecryptionKey.generate()
    assert unseal(seal("a.b.c", key.public), key) == "a.b.c"
    for bad in ("a.b.c", "x" * 10, "a..b.c.d", "\u00e9....", b"\xff....", ""):
        with pytest.raises(ProtocolError) as exc:
            unseal(bad, key)
        assert exc.value.reason in ("bad_encryption", "bad_encoding")


# ---------------------------------------------------------------------------- bounded nesting
def test_json_depth_is_bounded_before_parsing():
    check_json_depth("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    check_json_depth('["' + "[" * 1000 + '"]')        # brackets inside strings do not count
    with pytest.raises(ValueError):
        check_json_depth("[" * (MAX_JSON_DEPTH + 1))
    with pytest.raises(ValueError):
        check_json_depth('{"a":"\\"",' + '"b":' * 0 + "[" * 100_000)


def test_a_deeply_nested_payload_is_bad_json_not_a_crash():
    from vrm_protocol import Identity
    signer = Identity.generate()
    header = b64u(json.dumps({"alg": "EdDSA", "kid": signer.kid}).encode())
    body = b64u(b'{"v":2,"x":' + b"[" * 20_000 + b"]" * 20_000 + b"}")
    token = f"{header}.{body}.{b64u(signer.private_key.sign(f'{header}.{body}'.encode()))}"
    with pytest.raises(ProtocolError) as exc:
        verify(token, now=T0)
    assert exc.value.reason == "bad_json"
    attrs = b'{"v":2,"type":"intent","attributes":{"a":' + b"[" * 40 + b"]" * 40 + b"}}"
    body = b64u(attrs)
    token = f"{header}.{body}.{b64u(signer.private_key.sign(f'{header}.{body}'.encode()))}"
    with pytest.raises(ProtocolError) as exc:
        verify(token, now=T0)
    assert exc.value.reason == "bad_json"


def test_a_jwe_with_a_deeply_nested_header_is_bad_encryption_not_a_crash():
    key = DecryptionKey.generate()
    good = encrypt_json({"agreement": "x", "fields": {}}, key.public).split(".")
    deep = b64u(b'{"alg":"ECDH-ES","enc":"A256GCM","epk":' + b"[" * 20_000 + b"]" * 20_000 + b"}")
    with pytest.raises(ProtocolError) as exc:
        decrypt_json(".".join([deep] + good[1:]), key)
    assert exc.value.reason == "bad_encryption"


# ---------------------------------------------------------------------------- the terms
def test_the_default_intent_carries_the_terms_text_it_hashes(world):
    token = world["store"].get_intent(world["intent"]).token
    terms = verify(token, now=world["clock"][0], expect=Intent).body.terms
    assert terms.text and terms_digest(terms.text) == terms.sha256
    with pytest.raises(ProtocolError) as exc:
        parse_dataclass(Terms, {"id": terms.id, "sha256": terms.sha256, "text": terms.text + "!"})
    assert exc.value.reason == "bad_field"


def test_a_configured_terms_uri_travels_with_the_text(tmp_path):
    from device.market import MarketSettings
    store = Store.open(tmp_path / "b")
    market = Market(store, MarketSettings(terms_uri="https://example.org/my-terms"))
    iid = market.add_intent("bikes", {})["intent"]
    terms = verify(store.get_intent(iid).token, now=store.now(), expect=Intent).body.terms
    assert terms.uri == "https://example.org/my-terms" and terms.text == MarketSettings().terms_text
    store.close()
