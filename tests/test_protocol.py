"""VRM protocol codec: every message type round-trips, and every refusal has its reason code.

Hostile messages are built with `craft`, which signs arbitrary header/payload bytes with Ed25519
straight through `cryptography`, so a refusal can only come from the verifier's own rules, not
from a broken signature (unless that is the point of the case).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from joserfc import jwe
from joserfc.jwk import OKPKey

from vrm_protocol import (MAX_MESSAGE_BYTES, REASONS, Agreement, Countersignature, DecryptionKey,
                          Disclosure, Identity, Intent, IntentWithdrawal, Item, Offer, ProtocolError,
                          Receipt, ReplayGuard, Revocation, RevocationAck, Terms, TermsResponse, VendorProfile,
                          decrypt_json, encrypt_json, new_id, read_header, sign, token_hash, verify)
from vrm_protocol.codec import CLOCK_SKEW, MAX_LIFETIME
from vrm_protocol.messages import VERSION, BODY_TYPES, MAX_LIST, MAX_STR, body_to_dict

NOW = 1_750_000_000
BOX = Identity.from_seed(b"\x01" * 32)       # the intent key
VENDOR = Identity.from_seed(b"\x02" * 32)
OTHER = Identity.from_seed(b"\x03" * 32)
VENDOR_DK = DecryptionKey.generate()
INTENT_ID = "intent-0001-abcd"
TERMS = Terms(id="p2b1-sd-nc", sha256=base64.urlsafe_b64encode(
    hashlib.sha256(b"terms text").digest()).rstrip(b"=").decode(), uri="https://example.org/p2b1")


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def craft(payload: dict[str, Any] | None = None, header: dict[str, Any] | None = None,
          signer: Identity = BOX, *, raw_header: bytes | None = None,
          raw_payload: bytes | None = None) -> str:
    """A compact JWS over exactly these header/payload bytes, Ed25519-signed by `signer`."""
    if header is None:
        header = {"alg": "EdDSA", "kid": signer.kid, "typ": "vrm+jws"}
    h = b64u(raw_header if raw_header is not None else json.dumps(header).encode())
    p = b64u(raw_payload if raw_payload is not None else json.dumps(payload).encode())
    sig = signer.private_key.sign(f"{h}.{p}".encode("ascii"))
    return f"{h}.{p}.{b64u(sig)}"


def envelope(body: dict[str, Any], type_: str, signer: Identity = BOX, **over: Any) -> dict[str, Any]:
    payload = {"v": VERSION, "type": type_, "id": "msg-0001-abcdefgh", "iss": signer.did,
               "iat": NOW, "exp": NOW + 3600, **body}
    payload.update(over)
    return payload


def without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


# ---------------------------------------------------------------------------- sample bodies
def sample_bodies() -> dict[str, Any]:
    """One realistic body per message type, chained the way the flow chains them."""
    intent = Intent(intent=INTENT_ID, category="bicycles", terms=TERMS,
                    description="commuter e-bike, medium frame",
                    attributes={"postcode_district": "SW1A", "budget_max": 800, "currency": "EUR",
                                "frame": ["M", "L"], "used_ok": False, "max_weight_kg": 24.5})
    offer = Offer(intent=INTENT_ID, vendor="acme-bikes",
                  item=Item(name="City E-Bike 500", sku="ceb-500-m", brand="Acme",
                            description="500 Wh, hub motor", attributes={"battery_wh": 500}),
                  price=749.0, currency="EUR", valid_until=NOW + 7 * 86400,
                  terms_response=TermsResponse(id=TERMS.id, sha256=TERMS.sha256, decision="accept"),
                  delivery_days=3, region="GB")
    offer_token = sign(VENDOR, offer, now=NOW, ttl=7 * 86400, msg_id="offer-0001-abcd")
    agreement = Agreement(intent=INTENT_ID, offer="offer-0001-abcd", offer_hash=token_hash(offer_token),
                          vendor="acme-bikes", vendor_did=VENDOR.did, terms=TERMS,
                          fields=["email", "postal_address"], purpose="delivery of the ordered bicycle",
                          duration_days=365)
    agreement_id = "agree-0001-abcd"   # v2: the agreement id is the agreement message's id
    agreement_hash = token_hash(sign(BOX, agreement, now=NOW, ttl=86400, msg_id=agreement_id))
    return {
        "vendor_profile": VendorProfile(vendor="acme-bikes", name="Acme Bikes Ltd",
                                        categories=["bicycles", "e-bikes"], enc_key=VENDOR_DK.public,
                                        url="https://acme.example", accreditations=["iso-27001"]),
        "intent": intent,
        "intent_withdrawal": IntentWithdrawal(intent=INTENT_ID, category="bicycles"),
        "offer": offer,
        "agreement": agreement,
        "countersignature": Countersignature(agreement=agreement_id, agreement_hash=agreement_hash,
                                             intent=INTENT_ID),
        "disclosure": Disclosure(agreement=agreement_id, intent=INTENT_ID, jwe=encrypt_json(
            {"agreement": agreement_id, "fields": {"email": "p@example.org"}}, VENDOR_DK.public)),
        "revocation": Revocation(agreement=agreement_id, intent=INTENT_ID, delete=True,
                                 reason="no longer a customer"),
        "revocation_ack": RevocationAck(agreement=agreement_id, intent=INTENT_ID,
                                        revocation="revoke-0001-abcd", deleted=True),
        "receipt": Receipt(intent=INTENT_ID, category="bicycles", offers=[token_hash(offer_token)] * 8),
    }


BODIES = sample_bodies()
SIGNER_OF = {"vendor_profile": VENDOR, "offer": VENDOR, "countersignature": VENDOR,
             "revocation_ack": VENDOR}


def intent_payload(**over: Any) -> dict[str, Any]:
    return envelope(body_to_dict(BODIES["intent"]), "intent", **over)


def offer_payload(**over: Any) -> dict[str, Any]:
    body = body_to_dict(BODIES["offer"])   # §8.4: exp = valid_until
    return envelope(body, "offer", VENDOR, **{"exp": body["valid_until"], **over})


def offer_token(payload: dict[str, Any]) -> str:
    return craft(payload, signer=VENDOR)


# ---------------------------------------------------------------------------- round trips
def test_sample_bodies_cover_every_message_type():
    assert set(BODIES) == set(BODY_TYPES)


@pytest.mark.parametrize("type_", sorted(BODY_TYPES))
def test_round_trip(type_):
    body = BODIES[type_]
    signer = SIGNER_OF.get(type_, BOX)
    ttl = body.valid_until - NOW if type_ == "offer" else 600   # an offer's exp is its valid_until
    token = sign(signer, body, now=NOW, ttl=ttl)
    msg = verify(token, now=NOW + 1, replay=ReplayGuard(), expect=type(body))
    assert msg.body == body
    assert type(msg.body) is BODY_TYPES[type_]
    assert msg.envelope.v == VERSION and msg.envelope.type == type_
    assert msg.envelope.iss == signer.did
    assert (msg.envelope.iat, msg.envelope.exp) == (NOW, NOW + ttl)
    assert msg.token == token and msg.hash == token_hash(token)
    assert body_to_dict(msg.body) == body_to_dict(body)


def test_sign_emits_the_documented_header_and_payload():
    token = sign(BOX, BODIES["intent_withdrawal"], now=NOW, ttl=60, msg_id="msg-0001-abcdefgh")
    h, p, _ = token.split(".")
    assert json.loads(base64.urlsafe_b64decode(h + "==")) == {
        "alg": "EdDSA", "kid": BOX.kid, "typ": "vrm+jws"}
    assert json.loads(base64.urlsafe_b64decode(p + "==")) == {
        "v": VERSION, "type": "intent_withdrawal", "id": "msg-0001-abcdefgh", "iss": BOX.did,
        "iat": NOW, "exp": NOW + 60, "intent": INTENT_ID, "category": "bicycles"}
    assert read_header(token)[1]["kid"] == BOX.kid
    assert read_header(token.encode())[0] == token


def test_crafted_baseline_is_valid():
    """The hostile cases below differ from these in one respect only."""
    assert verify(craft(intent_payload()), now=NOW).body == BODIES["intent"]
    assert verify(offer_token(offer_payload()), now=NOW).body == BODIES["offer"]
    # JSON numbers: an integral price is a valid number, and typ is optional/free
    assert verify(offer_token(offer_payload(price=749)), now=NOW).body.price == 749.0
    no_typ = {"alg": "EdDSA", "kid": BOX.kid}
    assert verify(craft(intent_payload(), no_typ), now=NOW).body == BODIES["intent"]
    assert verify(craft(intent_payload(), {**no_typ, "typ": "JWT"}), now=NOW)


def test_optional_null_is_absent():
    msg = verify(offer_token(offer_payload(region=None)), now=NOW)
    assert msg.body.region is None


def test_ids_and_hashes():
    assert all(len(new_id()) == 22 for _ in range(10))
    assert len({new_id() for _ in range(100)}) == 100
    token = sign(BOX, BODIES["intent"], now=NOW, ttl=60)
    assert token_hash(token) == b64u(hashlib.sha256(token.encode()).digest())
    assert len(token_hash(token)) == 43
    assert sign(BOX, BODIES["intent"], now=NOW, ttl=60, msg_id="same-id-0001") == \
        sign(BOX, BODIES["intent"], now=NOW, ttl=60, msg_id="same-id-0001")  # Ed25519 is deterministic


def test_clock_skew_boundaries():
    assert verify(craft(intent_payload(iat=NOW + CLOCK_SKEW, exp=NOW + 3600)), now=NOW)
    assert verify(craft(intent_payload(iat=NOW - 3600, exp=NOW - CLOCK_SKEW)), now=NOW)
    assert verify(craft(intent_payload(iat=NOW, exp=NOW + MAX_LIFETIME)), now=NOW)


# ---------------------------------------------------------------------------- refusals
def flip_sig(token: str) -> str:
    h, p, s = token.split(".")
    sig = bytearray(base64.urlsafe_b64decode(s + "=="))
    sig[10] ^= 0x01
    return f"{h}.{p}.{b64u(bytes(sig))}"


def truncate_sig(token: str) -> str:
    h, p, s = token.split(".")
    return f"{h}.{p}.{b64u(base64.urlsafe_b64decode(s + '==')[:-3])}"


def flip_payload(token: str) -> str:
    h, p, s = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(p + "=="))
    raw[raw.index(b"bicycles")] ^= 0x20  # 'b' -> 'B': still JSON, no longer what was signed
    return f"{h}.{b64u(bytes(raw))}.{s}"


def hs256_confusion() -> str:
    """alg HS256 'signed' with the public key as HMAC secret: the classic confusion attack."""
    h = b64u(json.dumps({"alg": "HS256", "kid": BOX.kid, "typ": "vrm+jws"}).encode())
    p = b64u(json.dumps(intent_payload()).encode())
    mac = hmac.new(BOX.public_bytes, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64u(mac)}"


def hs256_did_secret() -> str:
    h = b64u(json.dumps({"alg": "HS256", "kid": BOX.kid}).encode())
    p = b64u(json.dumps(intent_payload()).encode())
    mac = hmac.new(BOX.did.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64u(mac)}"


def rs256() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    h = b64u(json.dumps({"alg": "RS256", "kid": BOX.kid}).encode())
    p = b64u(json.dumps(intent_payload()).encode())
    sig = key.sign(f"{h}.{p}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{h}.{p}.{b64u(sig)}"


def alg_none(signature: str = "") -> str:
    h = b64u(json.dumps({"alg": "none", "kid": BOX.kid}).encode())
    return f"{h}.{b64u(json.dumps(intent_payload()).encode())}.{signature}"


def hdr(**over: Any) -> dict[str, Any]:
    return {"alg": "EdDSA", "kid": BOX.kid, "typ": "vrm+jws", **over}


def did_with_codec(codec: bytes, raw: bytes = BOX.public_bytes) -> str:
    import base58
    return "did:key:z" + base58.b58encode(codec + raw).decode()


X25519_DID = did_with_codec(b"\xec\x01")
VALID_INTENT = lambda: craft(intent_payload())  # noqa: E731


def nested(path: str, value: Any, base: Callable[..., dict] = intent_payload) -> dict[str, Any]:
    """The base payload with payload[a][b] = value for path 'a.b'."""
    payload = json.loads(json.dumps(base()))
    *parents, last = path.split(".")
    node = payload
    for p in parents:
        node = node[p]
    node[last] = value
    return payload


CASES: list[tuple[str, str, Callable[[], Any], dict[str, Any]]] = [
    # --- bad_encoding
    ("bad_encoding", "not_ascii", lambda: VALID_INTENT().encode() + "é".encode(), {}),
    ("bad_encoding", "two_segments", lambda: ".".join(VALID_INTENT().split(".")[:2]), {}),
    ("bad_encoding", "four_segments", lambda: VALID_INTENT() + ".AAAA", {}),
    ("bad_encoding", "padding", lambda: VALID_INTENT() + "==", {}),
    ("bad_encoding", "stray_character", lambda: VALID_INTENT().replace(".", "!.", 1), {}),
    ("bad_encoding", "standard_alphabet", lambda: VALID_INTENT().replace(".", "+.", 1), {}),
    ("bad_encoding", "length_1_mod_4", lambda: (lambda t: t + "A" * ((1 - len(t.split(".")[2])) % 4))(
        VALID_INTENT()), {}),
    ("bad_encoding", "non_canonical_trailing_bits",
     lambda: (lambda t: t[:-1] + chr(ord(t[-1]) + 1))(VALID_INTENT()), {}),
    ("bad_encoding", "empty", lambda: "", {}),
    # --- bad_json
    ("bad_json", "header_not_json", lambda: craft(intent_payload(), raw_header=b"{alg: EdDSA}"), {}),
    ("bad_json", "header_array", lambda: craft(intent_payload(), raw_header=b'["EdDSA"]'), {}),
    ("bad_json", "header_empty", lambda: craft(intent_payload(), raw_header=b""), {}),
    ("bad_json", "header_not_utf8", lambda: craft(intent_payload(), raw_header=b'{"alg":"\xff"}'), {}),
    ("bad_json", "payload_not_json", lambda: craft(raw_payload=b"{'v': 1}"), {}),
    ("bad_json", "payload_array", lambda: craft(raw_payload=b"[1, 2]"), {}),
    ("bad_json", "payload_string", lambda: craft(raw_payload=b'"intent"'), {}),
    ("bad_json", "payload_empty", lambda: craft(raw_payload=b""), {}),
    ("bad_json", "payload_bom", lambda: craft(raw_payload=b"\xef\xbb\xbf" + json.dumps(intent_payload()).encode()), {}),
    ("bad_json", "payload_nan", lambda: craft(raw_payload=json.dumps(offer_payload(price=float("nan"))).encode(),
                                              signer=VENDOR), {}),
    ("bad_json", "payload_infinity", lambda: craft(raw_payload=json.dumps(offer_payload(price=float("inf"))).encode(),
                                                   signer=VENDOR), {}),
    ("bad_json", "duplicate_member", lambda: craft(
        raw_payload=json.dumps(intent_payload())[:-1].encode() + b', "category": "weapons"}'), {}),
    ("bad_json", "duplicate_nested_member", lambda: craft(
        raw_payload=json.dumps(intent_payload()).replace('"id": "p2b1-sd-nc"', '"id": "p2b1-sd-nc", "id": "x"').encode()), {}),
    ("bad_json", "lone_surrogate", lambda: craft(
        raw_payload=json.dumps(intent_payload(description="\ud800")).encode()), {}),
    ("bad_json", "lone_surrogate_in_list", lambda: craft(
        raw_payload=json.dumps(nested("attributes.frame", ["M", "\udfff"])).encode()), {}),
    ("bad_json", "huge_integer", lambda: craft(
        raw_payload=json.dumps(intent_payload())[:-1].encode() + b', "n": ' + b"9" * 5000 + b"}"), {}),
    ("bad_json", "deep_nesting", lambda: craft(raw_payload=b'{"a":' + b"[" * 20000 + b"]" * 20000 + b"}"), {}),
    # --- bad_alg
    ("bad_alg", "none_unsigned", lambda: alg_none(), {}),
    ("bad_alg", "none_with_signature", lambda: alg_none(VALID_INTENT().split(".")[2]), {}),
    ("bad_alg", "hs256_public_key_secret", hs256_confusion, {}),
    ("bad_alg", "hs256_did_secret", hs256_did_secret, {}),
    ("bad_alg", "rs256", rs256, {}),
    ("bad_alg", "missing_alg", lambda: craft(intent_payload(), without(hdr(), "alg")), {}),
    ("bad_alg", "fully_specified_ed25519", lambda: craft(intent_payload(), hdr(alg="Ed25519")), {}),
    ("bad_alg", "es256", lambda: craft(intent_payload(), hdr(alg="ES256")), {}),
    ("bad_alg", "lower_case", lambda: craft(intent_payload(), hdr(alg="eddsa")), {}),
    ("bad_alg", "alg_list", lambda: craft(intent_payload(), hdr(alg=["EdDSA"])), {}),
    # --- bad_header
    ("bad_header", "crit", lambda: craft(intent_payload(), hdr(crit=["exp"], exp=NOW)), {}),
    ("bad_header", "crit_b64", lambda: craft(intent_payload(), hdr(crit=["b64"], b64=True)), {}),
    ("bad_header", "embedded_jwk", lambda: craft(intent_payload(), hdr(jwk={
        "kty": "OKP", "crv": "Ed25519", "x": b64u(OTHER.public_bytes)}), signer=OTHER), {}),
    ("bad_header", "jku", lambda: craft(intent_payload(), hdr(jku="https://evil.example/jwks")), {}),
    ("bad_header", "x5u", lambda: craft(intent_payload(), hdr(x5u="https://evil.example/cert")), {}),
    ("bad_header", "x5c", lambda: craft(intent_payload(), hdr(x5c=["MIIB"])), {}),
    ("bad_header", "missing_kid", lambda: craft(intent_payload(), without(hdr(), "kid")), {}),
    ("bad_header", "typ_not_string", lambda: craft(intent_payload(), hdr(typ=1)), {}),
    ("bad_header", "unknown_parameter", lambda: craft(intent_payload(), hdr(cty="json")), {}),
    ("bad_header", "b64_false", lambda: craft(intent_payload(), hdr(b64=False)), {}),
    ("bad_header", "zip", lambda: craft(intent_payload(), hdr(zip="DEF")), {}),
    # --- bad_did
    ("bad_did", "kid_without_fragment", lambda: craft(intent_payload(), hdr(kid=BOX.did)), {}),
    ("bad_did", "kid_wrong_fragment", lambda: craft(intent_payload(), hdr(kid=BOX.did + "#key-1")), {}),
    ("bad_did", "kid_other_keys_fragment", lambda: craft(intent_payload(), hdr(kid=BOX.did + OTHER.kid[OTHER.kid.index("#"):])), {}),
    ("bad_did", "kid_did_web", lambda: craft(intent_payload(), hdr(kid="did:web:acme.example#key-1")), {}),
    ("bad_did", "kid_x25519_did_key", lambda: craft(intent_payload(), hdr(kid=f"{X25519_DID}#{X25519_DID[8:]}")), {}),
    ("bad_did", "kid_not_base58", lambda: (lambda d: craft(intent_payload(), hdr(kid=f"{d}#{d[8:]}")))(
        BOX.did[:-3] + "0Il"), {}),
    ("bad_did", "kid_too_long", lambda: (lambda d: craft(intent_payload(), hdr(kid=f"{d}#{d[8:]}")))(
        did_with_codec(b"\xed\x01", BOX.public_bytes + b"\x00" * 20)), {}),
    ("bad_did", "kid_short_key", lambda: (lambda d: craft(intent_payload(), hdr(kid=f"{d}#{d[8:]}")))(
        did_with_codec(b"\xed\x01", BOX.public_bytes[:31])), {}),
    ("bad_did", "kid_not_string", lambda: craft(intent_payload(), hdr(kid=42)), {}),
    ("bad_did", "kid_empty", lambda: craft(intent_payload(), hdr(kid="")), {}),
    # --- bad_signature
    ("bad_signature", "flipped_signature_byte", lambda: flip_sig(VALID_INTENT()), {}),
    ("bad_signature", "flipped_payload_byte", lambda: flip_payload(VALID_INTENT()), {}),
    ("bad_signature", "stripped_signature", lambda: VALID_INTENT().rsplit(".", 1)[0] + ".", {}),
    ("bad_signature", "truncated_signature", lambda: truncate_sig(VALID_INTENT()), {}),
    ("bad_signature", "kid_of_one_key_signed_by_another", lambda: craft(
        intent_payload(), hdr(kid=BOX.kid), signer=OTHER), {}),
    ("bad_signature", "signature_of_another_message", lambda: ".".join(
        VALID_INTENT().split(".")[:2] + [craft(intent_payload(id="msg-0002-abcdefgh")).split(".")[2]]), {}),
    ("bad_signature", "payload_swapped", lambda: ".".join(
        [VALID_INTENT().split(".")[0], craft(intent_payload(exp=NOW + 7200)).split(".")[1],
         VALID_INTENT().split(".")[2]]), {}),
    # --- key_mismatch
    ("key_mismatch", "iss_is_another_did", lambda: craft(intent_payload(iss=OTHER.did)), {}),
    ("key_mismatch", "iss_is_did_web", lambda: craft(intent_payload(iss="did:web:acme.example")), {}),
    ("key_mismatch", "iss_is_the_kid", lambda: craft(intent_payload(iss=BOX.kid)), {}),
    ("key_mismatch", "vendor_offer_signed_by_box_key_claiming_vendor", lambda: craft(
        offer_payload(), hdr(kid=BOX.kid), signer=BOX), {}),
    # --- unknown_version
    ("unknown_version", "v_next", lambda: craft(intent_payload(v=VERSION + 1)), {}),
    ("unknown_version", "v1", lambda: craft(intent_payload(v=1)), {}),
    ("unknown_version", "v0", lambda: craft(intent_payload(v=0)), {}),
    ("unknown_version", "v_string", lambda: craft(intent_payload(v=str(VERSION))), {}),
    ("unknown_version", "v_float", lambda: craft(intent_payload(v=float(VERSION))), {}),
    ("unknown_version", "v_true", lambda: craft(intent_payload(v=True)), {}),
    ("unknown_version", "v_missing", lambda: craft(without(intent_payload(), "v")), {}),
    # --- unknown_type
    ("unknown_type", "bogus", lambda: craft(intent_payload(type="purchase_order")), {}),
    ("unknown_type", "wrong_case", lambda: craft(intent_payload(type="Intent")), {}),
    ("unknown_type", "missing", lambda: craft(without(intent_payload(), "type")), {}),
    ("unknown_type", "list", lambda: craft(intent_payload(type=["intent"])), {}),
    ("unknown_type", "object", lambda: craft(intent_payload(type={"intent": 1})), {}),
    # --- wrong_type
    ("wrong_type", "offer_expected_intent_given", VALID_INTENT, {"expect": Offer}),
    ("wrong_type", "intent_expected_withdrawal_given", lambda: craft(envelope(
        body_to_dict(BODIES["intent_withdrawal"]), "intent_withdrawal")), {"expect": Intent}),
    # --- bad_field
    ("bad_field", "missing_body_field", lambda: craft(without(intent_payload(), "terms")), {}),
    ("bad_field", "missing_nested_field", lambda: craft(nested("terms", {"id": TERMS.id})), {}),
    ("bad_field", "missing_id", lambda: craft(without(intent_payload(), "id")), {}),
    ("bad_field", "missing_iss", lambda: craft(without(intent_payload(), "iss")), {}),
    ("bad_field", "missing_iat", lambda: craft(without(intent_payload(), "iat")), {}),
    ("bad_field", "missing_exp", lambda: craft(without(intent_payload(), "exp")), {}),
    ("bad_field", "extra_field", lambda: craft(intent_payload(admin=True)), {}),
    ("bad_field", "extra_nested_field", lambda: craft(nested("terms.version", 2)), {}),
    ("bad_field", "extra_field_in_item", lambda: offer_token(nested("item.price", 1, offer_payload)), {}),
    ("bad_field", "string_price", lambda: offer_token(offer_payload(price="749.00")), {}),
    ("bad_field", "bool_price", lambda: offer_token(offer_payload(price=True)), {}),
    ("bad_field", "bool_as_int_delivery_days", lambda: offer_token(offer_payload(delivery_days=True)), {}),
    ("bad_field", "float_as_int_valid_until", lambda: offer_token(offer_payload(valid_until=1.5e9)), {}),
    ("bad_field", "bool_as_int_iat", lambda: craft(intent_payload(iat=True)), {}),
    ("bad_field", "string_exp", lambda: craft(intent_payload(exp=str(NOW + 60))), {}),
    ("bad_field", "overflowing_price", lambda: craft(raw_payload=json.dumps(offer_payload()).replace(
        '"price": 749.0', '"price": 1e999').encode(), signer=VENDOR), {}),
    ("bad_field", "price_out_of_range", lambda: offer_token(offer_payload(price=1e16)), {}),
    ("bad_field", "negative_price", lambda: offer_token(offer_payload(price=-1)), {}),
    ("bad_field", "lower_case_currency", lambda: offer_token(offer_payload(currency="eur")), {}),
    ("bad_field", "decision_not_in_literal", lambda: offer_token(nested("terms_response.decision", "maybe",
                                                                         offer_payload)), {}),
    ("bad_field", "id_too_short", lambda: craft(intent_payload(id="short")), {}),
    ("bad_field", "id_bad_characters", lambda: craft(intent_payload(id="msg 0001 abcdefgh")), {}),
    ("bad_field", "id_not_string", lambda: craft(intent_payload(id=12345678)), {}),
    ("bad_field", "iss_not_string", lambda: craft(intent_payload(iss=None)), {}),
    ("bad_field", "intent_id_syntax", lambda: craft(intent_payload(intent="../../etc")), {}),
    ("bad_field", "category_not_slug", lambda: craft(intent_payload(category="Bicycles")), {}),
    ("bad_field", "terms_hash_not_sha256", lambda: craft(nested("terms.sha256", "abc")), {}),
    ("bad_field", "null_required_field", lambda: craft(intent_payload(category=None)), {}),
    ("bad_field", "attributes_nested_object", lambda: craft(nested("attributes.budget", {"max": 800})), {}),
    ("bad_field", "attributes_not_object", lambda: craft(intent_payload(attributes=["a"])), {}),
    ("bad_field", "attributes_too_many_keys", lambda: craft(intent_payload(
        attributes={f"k{i}": i for i in range(51)})), {}),
    ("bad_field", "attribute_list_too_long", lambda: craft(nested("attributes.frame", ["M"] * (MAX_LIST + 1))), {}),
    ("bad_field", "string_too_long", lambda: craft(intent_payload(description="x" * (MAX_STR + 1))), {}),
    ("bad_field", "list_not_list", lambda: craft(envelope({**body_to_dict(BODIES["vendor_profile"]),
                                                            "categories": "bicycles"}, "vendor_profile")), {}),
    ("bad_field", "enc_key_wrong_curve", lambda: craft(envelope(
        {**body_to_dict(BODIES["vendor_profile"]), "enc_key": {**VENDOR_DK.public.as_jwk(), "crv": "P-256"}},
        "vendor_profile")), {}),
    ("bad_field", "agreement_vendor_did_not_did_key", lambda: craft(envelope(
        {**body_to_dict(BODIES["agreement"]), "vendor_did": "did:web:acme.example"}, "agreement")), {}),
    ("bad_field", "agreement_duration_zero", lambda: craft(envelope(
        {**body_to_dict(BODIES["agreement"]), "duration_days": 0}, "agreement")), {}),
    ("bad_field", "disclosure_jwe_not_compact", lambda: craft(envelope(
        {**body_to_dict(BODIES["disclosure"]), "jwe": "not-a-jwe"}, "disclosure")), {}),
    ("bad_field", "revocation_delete_not_bool", lambda: craft(envelope(
        {**body_to_dict(BODIES["revocation"]), "delete": 1}, "revocation")), {}),
    # --- lifetime and time
    ("bad_lifetime", "exp_equals_iat", lambda: craft(intent_payload(iat=NOW, exp=NOW)), {}),
    ("bad_lifetime", "exp_before_iat", lambda: craft(intent_payload(iat=NOW, exp=NOW - 10)), {}),
    ("bad_lifetime", "longer_than_a_year", lambda: craft(intent_payload(iat=NOW, exp=NOW + MAX_LIFETIME + 1)), {}),
    ("expired", "expired", lambda: craft(intent_payload(iat=NOW - 7200, exp=NOW - 3600)), {}),
    ("expired", "just_beyond_skew", lambda: craft(intent_payload(iat=NOW - 7200, exp=NOW - CLOCK_SKEW - 1)), {}),
    ("not_yet_valid", "issued_in_the_future", lambda: craft(intent_payload(iat=NOW + 3600, exp=NOW + 7200)), {}),
    ("not_yet_valid", "just_beyond_skew", lambda: craft(intent_payload(iat=NOW + CLOCK_SKEW + 1, exp=NOW + 7200)), {}),
    # --- oversize
    ("oversize", "str_over_64k", lambda: VALID_INTENT() + "A" * MAX_MESSAGE_BYTES, {}),
    ("oversize", "bytes_over_64k", lambda: b"A" * (MAX_MESSAGE_BYTES + 1), {}),
    ("oversize", "signed_but_too_big", lambda: craft(nested("attributes", {
        f"k{i}": "x" * MAX_STR for i in range(40)})), {}),
]


@pytest.mark.parametrize("reason,make,kwargs", [pytest.param(r, m, k, id=f"{r}-{n}") for r, n, m, k in CASES])
def test_refusal(reason, make, kwargs):
    token = make()
    with pytest.raises(ProtocolError) as exc:
        verify(token, now=NOW, replay=ReplayGuard(), **kwargs)
    assert exc.value.reason == reason, exc.value


def test_replayed_id_is_refused():
    guard = ReplayGuard()
    token = craft(intent_payload())
    verify(token, now=NOW, replay=guard)
    with pytest.raises(ProtocolError) as exc:
        verify(token, now=NOW + 5, replay=guard)
    assert exc.value.reason == "replay"
    # the same id in a different (validly signed) message is a replay too
    with pytest.raises(ProtocolError) as exc:
        verify(craft(intent_payload(exp=NOW + 60)), now=NOW, replay=guard)
    assert exc.value.reason == "replay"
    # an invalid message does not poison the guard: a refused token's id is not remembered
    with pytest.raises(ProtocolError):
        verify(craft(intent_payload(id="msg-0003-abcdefgh", iat=NOW + 9999, exp=NOW + 99999)),
               now=NOW, replay=guard)
    assert "msg-0003-abcdefgh" not in guard
    verify(craft(intent_payload(id="msg-0003-abcdefgh")), now=NOW, replay=guard)


def test_replay_guard_prunes_and_stays_bounded():
    guard = ReplayGuard(max_entries=3)
    for i in range(3):
        guard.check_and_remember(f"msg-{i:08d}", exp=NOW + i, now=NOW)
    guard.check_and_remember("msg-new-00000", exp=NOW + 100, now=NOW + 1000)  # all others expired
    assert len(guard) == 1 and "msg-new-00000" in guard
    for i in range(5):
        guard.check_and_remember(f"live-{i:08d}", exp=NOW + 10_000 + i, now=NOW)
    assert len(guard) == 3
    guard.remember("seeded-00001", NOW + 50)
    with pytest.raises(ProtocolError) as exc:
        guard.check_and_remember("seeded-00001", NOW + 50, NOW)
    assert exc.value.reason == "replay"


def test_large_disclosure_round_trips():
    """A disclosure JWE is bounded by the 64 KiB message limit, not by the 2000-character text limit."""
    fields = {"email": "p@example.org", "notes": "n" * 20_000}
    jwe_token = encrypt_json({"agreement": "A" * 43, "fields": fields}, VENDOR_DK.public)
    assert len(jwe_token) > MAX_STR
    token = sign(BOX, Disclosure(agreement="A" * 43, intent=INTENT_ID, jwe=jwe_token), now=NOW, ttl=60)
    msg = verify(token, now=NOW, expect=Disclosure)
    assert decrypt_json(msg.body.jwe, VENDOR_DK)["fields"] == fields


def test_sign_refuses_oversize():
    huge = Intent(intent=INTENT_ID, category="bicycles", terms=TERMS,
                  attributes={f"k{i}": "x" * MAX_STR for i in range(40)})
    with pytest.raises(ProtocolError) as exc:
        sign(BOX, huge, now=NOW, ttl=60)
    assert exc.value.reason == "oversize"


def test_read_header_refuses_before_verifying():
    with pytest.raises(ProtocolError) as exc:
        read_header(hs256_confusion())
    assert exc.value.reason == "bad_alg"
    assert read_header(craft(intent_payload(), signer=OTHER, header=hdr()))[1]["kid"] == BOX.kid


# ---------------------------------------------------------------------------- encryption
PLAINTEXT = {"agreement": "A" * 43, "fields": {"email": "p@example.org", "postal_address": "1 High St"}}


def test_encrypt_decrypt_round_trip():
    token = encrypt_json(PLAINTEXT, VENDOR_DK.public)
    assert token.count(".") == 4
    assert "p@example.org" not in token
    assert decrypt_json(token, VENDOR_DK) == PLAINTEXT
    assert encrypt_json(PLAINTEXT, VENDOR_DK.public) != token  # fresh ephemeral key and IV
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert (header["alg"], header["enc"], header["epk"]["crv"]) == ("ECDH-ES", "A256GCM", "X25519")


def test_encryption_round_trip_unicode():
    data = {"agreement": "B" * 43, "fields": {"name": "Zoë Ångström 🚲"}}
    assert decrypt_json(encrypt_json(data, VENDOR_DK.public), VENDOR_DK) == data


def tamper(token: str, index: int) -> str:
    parts = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(parts[index] + "=="))
    raw[0] ^= 0x01
    parts[index] = b64u(bytes(raw))
    return ".".join(parts)


def raw_jwe(plaintext: bytes, header: dict[str, Any] | None = None) -> str:
    return jwe.encrypt_compact(header or {"alg": "ECDH-ES", "enc": "A256GCM"}, plaintext,
                               OKPKey.import_key(VENDOR_DK.public.as_jwk()))


ENCRYPTION_CASES = {
    "wrong_key": lambda: (encrypt_json(PLAINTEXT, VENDOR_DK.public), DecryptionKey.generate()),
    "tampered_ciphertext": lambda: (tamper(encrypt_json(PLAINTEXT, VENDOR_DK.public), 3), VENDOR_DK),
    "tampered_tag": lambda: (tamper(encrypt_json(PLAINTEXT, VENDOR_DK.public), 4), VENDOR_DK),
    "tampered_iv": lambda: (tamper(encrypt_json(PLAINTEXT, VENDOR_DK.public), 2), VENDOR_DK),
    "tampered_header": lambda: (encrypt_json(PLAINTEXT, VENDOR_DK.public).replace("ey", "fy", 1), VENDOR_DK),
    "not_a_jwe": lambda: ("a.b.c.d.e", VENDOR_DK),
    "a_jws": lambda: (VALID_INTENT(), VENDOR_DK),
    "plaintext_not_object": lambda: (raw_jwe(b"[1, 2]"), VENDOR_DK),
    "plaintext_not_json": lambda: (raw_jwe(b"hello"), VENDOR_DK),
    "plaintext_duplicate_member": lambda: (raw_jwe(b'{"a": 1, "a": 2}'), VENDOR_DK),
    "plaintext_lone_surrogate": lambda: (raw_jwe(b'{"a": "\\ud800"}'), VENDOR_DK),
    "other_enc": lambda: (raw_jwe(b"{}", {"alg": "ECDH-ES", "enc": "A128GCM"}), VENDOR_DK),
    "zip": lambda: (raw_jwe(b"{}", {"alg": "ECDH-ES", "enc": "A256GCM", "zip": "DEF"}), VENDOR_DK),
}


@pytest.mark.parametrize("case", sorted(ENCRYPTION_CASES))
def test_bad_encryption(case):
    token, key = ENCRYPTION_CASES[case]()
    with pytest.raises(ProtocolError) as exc:
        decrypt_json(token, key)
    assert exc.value.reason == "bad_encryption"


# ---------------------------------------------------------------------------- coverage of REASONS
def test_every_reason_code_is_provoked():
    provoked = {r for r, *_ in CASES} | {"replay", "bad_encryption"}
    assert provoked == set(REASONS)


def test_unknown_reason_code_is_a_programming_error():
    with pytest.raises(AssertionError):
        ProtocolError("no_such_reason")


@pytest.mark.parametrize("value", [10**400, -(2**53) - 1, 1e16, [2**60]])
def test_attribute_numbers_are_bounded_like_other_numbers(value):
    """A huge integer once passed as an attribute and crashed a vendor's float() conversion."""
    from vrm_protocol import Identity, Intent, Terms, sign, verify
    from vrm_protocol.errors import ProtocolError
    ident = Identity.generate()
    body = Intent(intent="abcdefgh12", category="bikes", terms=Terms(id="t", sha256="A" * 43),
                  attributes={"budget_max": value})
    token = sign(ident, body, now=1_700_000_000, ttl=60)
    with pytest.raises(ProtocolError) as exc:
        verify(token, now=1_700_000_000)
    assert exc.value.reason == "bad_field"
