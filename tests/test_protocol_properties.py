"""Property tests: whatever arrives on the wire, `verify` either returns a Message or raises
ProtocolError, never anything else; and what it accepts can be signed again."""
from __future__ import annotations

import base64
import dataclasses
import json
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vrm_protocol import (DecryptionKey, Identity, Item, Offer, ProtocolError, ReplayGuard,
                          TermsResponse, decrypt_json, encrypt_json, sign, verify)
from vrm_protocol.messages import VERSION, BODY_TYPES, body_to_dict

NOW = 1_750_000_000
BOX = Identity.from_seed(b"\x01" * 32)
VENDOR = Identity.from_seed(b"\x02" * 32)
DK = DecryptionKey.generate()
FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SHA = "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg"
AGREEMENT = "1Nq4mFfD0z0wO9lT7eqJhQf4Y0bqkXs2bBz1vGz1n3A"
BODIES: dict[str, dict[str, Any]] = {
    "vendor_profile": {"vendor": "acme-bikes", "name": "Acme", "categories": ["bicycles"],
                       "enc_key": DK.public.as_jwk(), "url": "https://acme.example"},
    "intent": {"intent": "intent-0001", "category": "bicycles", "terms": {"id": "p2b1", "sha256": SHA},
               "description": "e-bike", "attributes": {"budget_max": 800, "frame": ["M", "L"]}},
    "intent_withdrawal": {"intent": "intent-0001", "category": "bicycles"},
    "offer": {"intent": "intent-0001", "vendor": "acme-bikes", "item": {"name": "City 500"},
              "price": 749.5, "currency": "EUR", "valid_until": NOW + 3600,
              "terms_response": {"id": "p2b1", "sha256": SHA, "decision": "accept"}, "delivery_days": 3},
    "agreement": {"intent": "intent-0001", "offer": "offer-00001", "offer_hash": SHA, "vendor": "acme-bikes",
                  "vendor_did": VENDOR.did, "terms": {"id": "p2b1", "sha256": SHA}, "fields": ["email"],
                  "purpose": "delivery", "duration_days": 30},
    "countersignature": {"agreement": AGREEMENT, "agreement_hash": SHA, "intent": "intent-0001"},
    "disclosure": {"agreement": AGREEMENT, "intent": "intent-0001",
                   "jwe": encrypt_json({"agreement": AGREEMENT, "fields": {"email": "a@b.c"}}, DK.public)},
    "revocation": {"agreement": AGREEMENT, "intent": "intent-0001", "delete": True},
    "revocation_ack": {"agreement": AGREEMENT, "intent": "intent-0001", "revocation": "revoke-0001",
                       "deleted": True},
    "receipt": {"intent": "intent-0001", "category": "bicycles", "offers": [SHA] * 8},
}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def craft(payload: Any, header: Any = None, signer: Identity = BOX) -> str:
    header = {"alg": "EdDSA", "kid": signer.kid, "typ": "vrm+jws"} if header is None else header
    h = b64u(json.dumps(header).encode())
    p = b64u(json.dumps(payload).encode())
    return f"{h}.{p}.{b64u(signer.private_key.sign(f'{h}.{p}'.encode()))}"


def payload_of(type_: str) -> dict[str, Any]:
    body = json.loads(json.dumps(BODIES[type_]))
    return {"v": VERSION, "type": type_, "id": "msg-0001-abcdefgh", "iss": BOX.did, "iat": NOW,
            "exp": body.get("valid_until", NOW + 3600) if type_ == "offer" else NOW + 3600, **body}


VALID = {t: craft(payload_of(t)) for t in BODIES}


def check(token: Any, **kwargs: Any):
    """verify must return or raise ProtocolError; anything it accepts must survive re-signing."""
    try:
        msg = verify(token, now=NOW, replay=ReplayGuard(), **kwargs)
    except ProtocolError as exc:
        assert exc.reason and str(exc)
        return None
    env = msg.envelope   # same lifetime: an offer's exp is its valid_until
    again = verify(sign(BOX, msg.body, now=env.iat, ttl=env.exp - env.iat), now=NOW)
    assert again.body == msg.body
    return msg


def test_the_seeds_are_valid():
    assert set(VALID) == set(BODY_TYPES)
    for token in VALID.values():
        assert check(token) is not None


# ---------------------------------------------------------------------------- arbitrary input
surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
any_text = st.text() | surrogates
json_scalar = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
               | st.floats() | any_text)
json_value = st.recursive(json_scalar, lambda c: st.lists(c, max_size=4)
                          | st.dictionaries(any_text, c, max_size=4), max_leaves=12)
b64_alphabet = string.ascii_letters + string.digits + "-_"
token_like = st.lists(st.text(b64_alphabet + "=+/!", max_size=60), min_size=1, max_size=5).map(".".join)


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes(data):
    check(data)


@FAST
@given(st.text(max_size=400) | token_like)
def test_arbitrary_text(text):
    check(text)


@FAST
@given(json_value, json_value)
def test_arbitrary_json_signed_properly(header, payload):
    """Any JSON in either slot, with a valid Ed25519 signature over it."""
    check(craft(payload, header))
    check(craft(payload))


# ---------------------------------------------------------------------------- mutated valid tokens
types_ = st.sampled_from(sorted(BODIES))


@FAST
@given(types_, st.data())
def test_flipped_characters(type_, data):
    token = VALID[type_]
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(token) - 1))
        c = data.draw(st.characters(codec="utf-8") | st.sampled_from(b64_alphabet + "."))
        token = token[:i] + c + token[i + 1:]
    check(token)


@FAST
@given(types_, st.data())
def test_flipped_bytes(type_, data):
    raw = bytearray(VALID[type_].encode())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    check(bytes(raw))


@FAST
@given(types_, st.integers(min_value=0), st.booleans())
def test_truncated(type_, cut, from_front):
    token = VALID[type_]
    cut %= len(token)
    check(token[cut:] if from_front else token[:cut])


@FAST
@given(types_, types_, st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2)), min_size=3, max_size=4))
def test_segment_swaps(a, b, picks):
    """Segments taken from two valid tokens, in any order and number."""
    segs = (VALID[a].split("."), VALID[b].split("."))
    token = ".".join(segs[t][i] for t, i in picks)
    msg = check(token)
    if msg is not None:  # only an intact token is accepted
        assert token in (VALID[a], VALID[b])


@FAST
@given(types_, st.data())
def test_resigned_field_substitution(type_, data):
    """A validly signed payload with one field (top-level or nested) replaced, added or removed."""
    payload = payload_of(type_)
    node = payload
    while True:  # mostly an existing key, sometimes a new one; maybe descend into an object
        key = data.draw(st.sampled_from(sorted(node))) if data.draw(st.integers(0, 5)) else data.draw(any_text)
        if isinstance(node.get(key), dict) and data.draw(st.booleans()):
            node = node[key]
            continue
        break
    if data.draw(st.integers(0, 6)) == 0:
        node.pop(key, None)
    else:  # strings (with lone surrogates) and numbers often, since most fields are one of those
        node[key] = data.draw(st.one_of(any_text, json_value, json_scalar))
    check(craft(payload), expect=data.draw(st.none() | st.sampled_from(list(BODY_TYPES.values()))))


@FAST
@given(st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "jwk", "b64", "cty", "x"]), json_value,
                       max_size=4), types_)
def test_resigned_header_substitution(over, type_):
    header = {"alg": "EdDSA", "kid": BOX.kid, "typ": "vrm+jws", **over}
    check(craft(payload_of(type_), header))


@FAST
@given(st.binary(max_size=200) | st.text(max_size=200) | token_like)
def test_decrypt_refuses_garbage_with_protocol_error(data):
    try:
        decrypt_json(data if isinstance(data, str) else data.decode("latin-1"), DK)
    except ProtocolError as exc:
        assert exc.reason == "bad_encryption"


# ---------------------------------------------------------------------------- valid offers round-trip
ids = st.from_regex(r"[A-Za-z0-9_-]{8,64}", fullmatch=True)
slugs = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,62}", fullmatch=True)
hashes = st.from_regex(r"[A-Za-z0-9_-]{43}", fullmatch=True)
short_text = st.text(max_size=80)
scalars = (short_text | st.booleans() | st.integers(-(2**53), 2**53)
           | st.floats(min_value=-1e15, max_value=1e15, allow_nan=False, allow_infinity=False))
attributes = st.dictionaries(st.text(max_size=64), scalars | st.lists(scalars, max_size=5), max_size=8)
items = st.builds(Item, name=short_text, sku=st.none() | short_text, brand=st.none() | short_text,
                  description=st.none() | st.text(max_size=500), attributes=attributes)
offers = st.builds(
    Offer, intent=ids, vendor=slugs, item=items,
    price=st.floats(min_value=0, max_value=1e15, allow_nan=False) | st.integers(0, 10**15),
    currency=st.from_regex(r"[A-Z]{3}", fullmatch=True), valid_until=st.integers(0, 2**40),
    terms_response=st.builds(TermsResponse, id=slugs, sha256=hashes,
                             decision=st.sampled_from(["accept", "reject"])),
    delivery_days=st.none() | st.integers(0, 3650), region=st.none() | short_text)


@FAST
@given(offers, st.integers(1, 366 * 86400), ids)
def test_valid_offers_round_trip(offer, ttl, msg_id):
    offer = dataclasses.replace(offer, valid_until=NOW + ttl)   # §8.4: exp = valid_until
    token = sign(VENDOR, offer, now=NOW, ttl=ttl, msg_id=msg_id)
    msg = verify(token, now=NOW, replay=ReplayGuard(), expect=Offer)
    assert msg.body == offer
    assert body_to_dict(msg.body) == json.loads(json.dumps(body_to_dict(offer)))
    assert (msg.id, msg.envelope.iss, msg.envelope.exp) == (msg_id, VENDOR.did, NOW + ttl)
    assert verify(token, now=NOW).hash == msg.hash


@FAST
@given(st.dictionaries(st.text(max_size=30), scalars, max_size=10))
def test_disclosure_plaintext_round_trip(fields):
    data = {"agreement": AGREEMENT, "fields": fields}
    assert decrypt_json(encrypt_json(data, DK.public), DK) == data
