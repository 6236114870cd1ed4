"""Write tests/vectors/v<VERSION>.json: fixed keys, ids and clock, so every token in it is reproducible.

Ed25519 signatures are deterministic, so each valid token is fixed by its seed, header and payload.
JWEs (the disclosure's, and the sealed agreement and revocation) are normally randomised (ephemeral
key, IV); here they are built by hand from fixed ephemeral seeds and IVs, following docs/protocol.md,
so they are fixed too and double as a check that the documented construction (padding included) is
what the reference decrypts.

    .venv/bin/python tools/make_vectors.py           # (re)write the file
    .venv/bin/python tools/make_vectors.py --check   # exit 1 if the file is not what this generates
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import struct
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vrm_protocol import (Agreement, Countersignature, Disclosure, EncryptionKey, Identity,  # noqa: E402
                          Intent, IntentWithdrawal, Item, Offer, Receipt, Revocation, RevocationAck,
                          Terms, TermsResponse, VendorProfile, sign, token_hash, topics)
from vrm_protocol.codec import MAX_JSON_DEPTH, MAX_MESSAGE_BYTES  # noqa: E402
from vrm_protocol.encryption import PAD_BUCKETS, pad  # noqa: E402
from vrm_protocol.messages import RECEIPT_BUCKETS, VERSION, body_to_dict  # noqa: E402

log = logging.getLogger(__name__)

OUT = ROOT / "tests" / "vectors" / f"v{VERSION}.json"
NOW = 1_750_000_000                      # 2025-06-15T15:06:40Z
SEEDS = {"box_intent": b"\x01" * 32, "vendor": b"\x02" * 32, "other": b"\x03" * 32,
         "stranger": b"\x0c" * 32}       # stranger: a key no vector pins or signs with elsewhere
VENDOR_ENC_SEED = b"\x04" * 32           # X25519 private key of the vendor (its profile's enc_key)
EPHEMERAL_SEED = b"\x05" * 32            # X25519 ephemeral key of the one fixed JWE
JWE_IV = b"\x06" * 12
SEAL_SEEDS = {"agreement": b"\x08" * 32, "revocation": b"\x09" * 32}   # ephemeral keys of the sealed ones
SEAL_IVS = {"agreement": b"\x0a" * 12, "revocation": b"\x0b" * 12}
REORDERED_IV = b"\x0d" * 12              # the JWE whose header members come in another order
INTENT_ID = "intent-0001-vector"
TERMS_TEXT = "Personal data is used only for the agreed purpose, not shared, deleted on revocation."


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


# ---------------------------------------------------------------------------- fixed JWE
def x25519_jwk(seed: bytes, private: bool) -> dict[str, str]:
    key = X25519PrivateKey.from_private_bytes(seed)
    jwk = {"kty": "OKP", "crv": "X25519", "x": b64u(key.public_key().public_bytes_raw())}
    if private:
        jwk["d"] = b64u(seed)
    return jwk


def concat_kdf(shared: bytes, enc: str) -> bytes:
    """RFC 7518 4.6.2 for direct ECDH-ES: AlgorithmID = enc, empty apu/apv, keydatalen 256."""
    other = (struct.pack(">I", len(enc)) + enc.encode() + struct.pack(">I", 0) + struct.pack(">I", 0)
             + struct.pack(">I", 256))
    return ConcatKDFHash(algorithm=hashes.SHA256(), length=32, otherinfo=other).derive(shared)


def jwe_header(ephemeral_seed: bytes) -> dict[str, Any]:
    """The protected header the vectors use: members in the order of docs/protocol.md 10.1."""
    return {"alg": "ECDH-ES", "enc": "A256GCM", "epk": x25519_jwk(ephemeral_seed, private=False)}


def fixed_jwe(plaintext: bytes, recipient_x: str, ephemeral_seed: bytes, iv: bytes,
              header: dict[str, Any] | None = None) -> str:
    """Compact JWE, ECDH-ES + A256GCM over X25519, with a chosen ephemeral key and IV (and, to
    show what a receiver must accept or refuse, a chosen protected header)."""
    eph = X25519PrivateKey.from_private_bytes(ephemeral_seed)
    shared = eph.exchange(X25519PublicKey.from_public_bytes(b64u_decode(recipient_x)))
    header = jwe_header(ephemeral_seed) if header is None else header
    protected = b64u(json.dumps(header, separators=(",", ":")).encode())
    sealed = AESGCM(concat_kdf(shared, "A256GCM")).encrypt(iv, plaintext, protected.encode("ascii"))
    return ".".join([protected, "", b64u(iv), b64u(sealed[:-16]), b64u(sealed[-16:])])


# ---------------------------------------------------------------------------- hostile tokens
def craft(payload: Any, header: Any, signer: Identity, *, raw_payload: bytes | None = None) -> str:
    h = b64u(json.dumps(header, separators=(",", ":")).encode())
    p = b64u(raw_payload if raw_payload is not None else json.dumps(payload, separators=(",", ":")).encode())
    return f"{h}.{p}.{b64u(signer.private_key.sign(f'{h}.{p}'.encode('ascii')))}"


def header_json(jwe: str) -> str:
    """The protected header of a compact JWE as the JSON text it was encoded from."""
    return b64u_decode(jwe.split(".")[0]).decode("utf-8")


def nested(payload_json: str, depth: int) -> bytes:
    """`payload_json` with an extra member nesting arrays so that the whole payload is `depth`
    deep, the payload object itself counting as 1."""
    arrays = depth - 1
    return payload_json[:-1].encode() + b',"x":' + b"[" * arrays + b"]" * arrays + b"}"


def _key_entry(name: str) -> dict[str, str]:
    ident = Identity.from_seed(SEEDS[name])
    return {"seed": SEEDS[name].hex(), "public_key": ident.public_bytes.hex(), "did": ident.did,
            "kid": ident.kid}


def build() -> dict[str, Any]:
    """The whole vector file as a JSON-ready dict. Pure: same output on every run."""
    box, vendor, other, stranger = (Identity.from_seed(SEEDS[n])
                                    for n in ("box_intent", "vendor", "other", "stranger"))
    signer_name = {box.did: "box_intent", vendor.did: "vendor"}
    enc_private = x25519_jwk(VENDOR_ENC_SEED, private=True)
    enc_key = EncryptionKey(kty="OKP", crv="X25519", x=enc_private["x"])
    terms = Terms(id="vrm-terms-basic", sha256=b64u(hashlib.sha256(TERMS_TEXT.encode()).digest()),
                  uri="https://example.org/terms/basic", text=TERMS_TEXT)

    valid: list[dict[str, Any]] = []

    def add(name: str, signer: Identity, body: Any, msg_id: str, ttl: int, topic: str,
            iat: int = NOW) -> str:
        token = sign(signer, body, now=iat, ttl=ttl, msg_id=msg_id)
        h, p, _ = token.split(".")
        valid.append({
            "name": name, "type": body.TYPE, "signer": signer_name[signer.did],
            "seed": signer.seed.hex(), "did": signer.did, "kid": signer.kid, "topic": topic,
            "envelope": {"v": VERSION, "type": body.TYPE, "id": msg_id, "iss": signer.did, "iat": iat,
                         "exp": iat + ttl},
            "body": body_to_dict(body),
            "header_json": b64u_decode(h).decode("utf-8"),
            "payload_json": b64u_decode(p).decode("utf-8"),
            "token": token, "token_hash": token_hash(token),
        })
        return token

    profile = VendorProfile(vendor="acme-bikes", name="Acme Bikes Ltd", categories=["bicycles", "e-bikes"],
                            enc_key=enc_key, url="https://acme-bikes.example",
                            accreditations=["iso-27001"])
    add("vendor_profile", vendor, profile, "profile-0001-vector", 30 * 86400,
        topics.vendor_profile("acme-bikes"))
    intent = Intent(intent=INTENT_ID, category="bicycles", terms=terms,
                    description="Commuter e-bike, medium frame, for daily 12 km",
                    attributes={"postcode_district": "SW1A", "budget_max": 800, "currency": "EUR",
                                "frame_sizes": ["M", "L"], "used_ok": False})
    add("intent", box, intent, INTENT_ID, 14 * 86400, topics.intent("bicycles", INTENT_ID))
    add("intent_withdrawal", box, IntentWithdrawal(intent=INTENT_ID, category="bicycles"),
        "withdraw-0001-vector", 14 * 86400, topics.withdrawal("bicycles", INTENT_ID))
    valid_until = NOW + 7 * 86400
    offer = Offer(intent=INTENT_ID, vendor="acme-bikes",
                  item=Item(name="City E-Bike 500", sku="ceb-500-m", brand="Acme",
                            description="500 Wh battery, hub motor, medium frame",
                            attributes={"battery_wh": 500, "weight_kg": 22.5, "colours": ["grey", "green"]}),
                  price=749.0, currency="EUR", valid_until=valid_until,
                  terms_response=TermsResponse(id=terms.id, sha256=terms.sha256, decision="accept"),
                  delivery_days=3, region="GB")
    offer_token = add("offer", vendor, offer, "offer-0001-vector", valid_until - NOW, topics.offers(INTENT_ID))
    # the box stored it: a receipt names its token_hash, padded with fillers (random on the box,
    # fixed here: sha256 of "filler-<i>") to the smallest of RECEIPT_BUCKETS
    fillers = [b64u(hashlib.sha256(f"filler-{i}".encode()).digest()) for i in range(RECEIPT_BUCKETS[0] - 1)]
    receipt = Receipt(intent=INTENT_ID, category="bicycles", offers=[token_hash(offer_token), *fillers])
    add("receipt", box, receipt, "receipt-0001-vector", 86400, topics.receipt("bicycles", INTENT_ID),
        iat=NOW + 1)
    agreement = Agreement(intent=INTENT_ID, offer="offer-0001-vector", offer_hash=token_hash(offer_token),
                          vendor="acme-bikes", vendor_did=vendor.did, terms=terms,
                          fields=["email", "postal_address"], purpose="delivery of the ordered bicycle",
                          duration_days=365)
    agreement_id = "agreement-0001-vector"     # v2: the agreement id is its message id
    agreement_token = add("agreement", box, agreement, agreement_id, 7 * 86400,
                          topics.agreements("acme-bikes"))
    add("countersignature", vendor, Countersignature(agreement=agreement_id,
                                                     agreement_hash=token_hash(agreement_token),
                                                     intent=INTENT_ID),
        "countersig-0001-vector", 7 * 86400, topics.countersignatures(INTENT_ID))
    plaintext = {"agreement": agreement_id,
                 "fields": {"email": "pat@example.org", "postal_address": "1 High Street, London SW1A 1AA"}}
    plaintext_json = json.dumps(plaintext, separators=(",", ":"), ensure_ascii=False)
    jwe = fixed_jwe(pad(plaintext_json.encode("utf-8")), enc_key.x, EPHEMERAL_SEED, JWE_IV)
    add("disclosure", box, Disclosure(agreement=agreement_id, intent=INTENT_ID, jwe=jwe),
        "disclosure-0001-vector", 7 * 86400, topics.disclosures("acme-bikes"))
    revocation_id = "revocation-0001-vector"
    revocation_token = add("revocation", box, Revocation(agreement=agreement_id, intent=INTENT_ID, delete=True,
                                      reason="no longer a customer"),
        revocation_id, 30 * 86400, topics.revocations("acme-bikes"))
    add("revocation_ack", vendor, RevocationAck(agreement=agreement_id, intent=INTENT_ID,
                                                revocation=revocation_id, deleted=True),
        "ack-0001-vector", 30 * 86400, topics.revocation_acks(INTENT_ID))

    # ------------------------------------------------------------------ sealed (v2)
    by_name = {v["name"]: v for v in valid}
    for name, token in (("agreement", agreement_token), ("revocation", revocation_token)):
        by_name[name]["sealed"] = fixed_jwe(pad(token.encode("ascii")), enc_key.x, SEAL_SEEDS[name],
                                            SEAL_IVS[name])
        by_name[name]["sealed_ephemeral_seed"] = SEAL_SEEDS[name].hex()
        by_name[name]["sealed_iv"] = SEAL_IVS[name].hex()
        by_name[name]["sealed_header_json"] = header_json(by_name[name]["sealed"])

    # ------------------------------------------------------------------ invalid messages
    intent_payload = json.loads(by_name["intent"]["payload_json"])
    offer_payload = json.loads(by_name["offer"]["payload_json"])
    receipt_payload = json.loads(by_name["receipt"]["payload_json"])
    box_header = {"alg": "EdDSA", "kid": box.kid, "typ": "vrm+jws"}
    vendor_header = {"alg": "EdDSA", "kid": vendor.kid, "typ": "vrm+jws"}
    good = by_name["intent"]["token"]
    h, p, s = good.split(".")
    sig = bytearray(b64u_decode(s))
    sig[0] ^= 0x01
    hs_input = f"{b64u(json.dumps({'alg': 'HS256', 'kid': box.kid}, separators=(',', ':')).encode())}.{p}"

    def mutated(**over: Any) -> dict[str, Any]:
        return {**intent_payload, **over}

    reused_id = craft(mutated(description="the same id, other words"), box_header, box)
    # an id is unique only within its intent and signer (docs/protocol.md 11.3)
    offer_good = by_name["offer"]["token"]
    other_header = {"alg": "EdDSA", "kid": other.kid, "typ": "vrm+jws"}
    scope = [
        ("same_intent_same_signer", craft({**offer_payload, "price": 1.0}, vendor_header, vendor), "replay"),
        ("another_signer", craft({**offer_payload, "iss": other.did, "vendor": "other-bikes"},
                                 other_header, other), None),
        ("another_intent", craft({**offer_payload, "intent": "intent-0002-vector"}, vendor_header, vendor),
         None),
    ]

    invalid = [
        ("flipped_signature_bit", f"{h}.{p}.{b64u(bytes(sig))}", "bad_signature"),
        ("signed_by_another_key", craft(intent_payload, box_header, other), "bad_signature"),
        ("alg_none", f"{b64u(json.dumps({'alg': 'none', 'kid': box.kid}).encode())}.{p}.", "bad_alg"),
        ("alg_hs256_with_public_key_as_secret",
         f"{hs_input}.{b64u(hmac.new(box.public_bytes, hs_input.encode(), hashlib.sha256).digest())}", "bad_alg"),
        ("iss_not_the_signing_did", craft(mutated(iss=other.did), box_header, box), "key_mismatch"),
        ("kid_fragment_wrong", craft(intent_payload, {**box_header, "kid": box.did + "#key-1"}, box), "bad_did"),
        ("kid_not_did_key", craft(intent_payload, {**box_header, "kid": "did:web:acme.example#key-1"}, box),
         "bad_did"),
        ("embedded_jwk", craft(intent_payload, {**box_header, "jwk": {
            "kty": "OKP", "crv": "Ed25519", "x": b64u(other.public_bytes)}}, other), "bad_header"),
        ("crit", craft(intent_payload, {**box_header, "crit": ["exp"]}, box), "bad_header"),
        ("missing_kid", craft(intent_payload, {"alg": "EdDSA", "typ": "vrm+jws"}, box), "bad_header"),
        ("unknown_header_parameter", craft(intent_payload, {**box_header, "cty": "json"}, box), "bad_header"),
        ("expired", craft(mutated(iat=NOW - 7200, exp=NOW - 3600), box_header, box), "expired"),
        ("not_yet_valid", craft(mutated(iat=NOW + 3600, exp=NOW + 7200), box_header, box), "not_yet_valid"),
        ("exp_before_iat", craft(mutated(exp=NOW - 1), box_header, box), "bad_lifetime"),
        ("lifetime_over_366_days", craft(mutated(exp=NOW + 366 * 86400 + 1), box_header, box), "bad_lifetime"),
        ("unknown_type", craft(mutated(type="purchase_order"), box_header, box), "unknown_type"),
        ("unknown_version", craft(mutated(v=VERSION + 1), box_header, box), "unknown_version"),
        ("previous_version", craft(mutated(v=VERSION - 1), box_header, box), "unknown_version"),
        ("version_as_float", craft(mutated(v=float(VERSION)), box_header, box), "unknown_version"),
        ("extra_field", craft(mutated(admin=True), box_header, box), "bad_field"),
        ("missing_field", craft({k: v for k, v in intent_payload.items() if k != "terms"}, box_header, box),
         "bad_field"),
        ("price_as_string", craft({**offer_payload, "price": "749.00"}, vendor_header, vendor), "bad_field"),
        ("integer_as_boolean", craft({**offer_payload, "delivery_days": True}, vendor_header, vendor),
         "bad_field"),
        ("bad_message_id", craft(mutated(id="short"), box_header, box), "bad_field"),
        ("offer_valid_until_not_exp", craft({**offer_payload, "valid_until": offer_payload["exp"] + 60},
                                            vendor_header, vendor), "bad_field"),
        ("terms_text_not_its_sha256", craft(mutated(terms={**intent_payload["terms"], "text": "other terms"}),
                                            box_header, box), "bad_field"),
        ("kid_is_an_array", craft(intent_payload, {**box_header, "kid": [box.kid]}, box), "bad_did"),
        ("kid_is_an_object", craft(intent_payload, {**box_header, "kid": {"id": box.kid}}, box), "bad_did"),
        ("nested_too_deep", craft(None, box_header, box, raw_payload=by_name["intent"]["payload_json"][:-1]
                                  .encode() + b',"x":' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
                                  + b"}"), "bad_json"),
        # the payload object is depth 1: at 32 the depth check passes (and the extra member is
        # what fails), at 33 it does not
        ("nested_32_deep", craft(None, box_header, box, raw_payload=nested(by_name["intent"]["payload_json"],
                                                                         MAX_JSON_DEPTH)), "bad_field"),
        ("nested_33_deep", craft(None, box_header, box, raw_payload=nested(by_name["intent"]["payload_json"],
                                                                         MAX_JSON_DEPTH + 1)), "bad_json"),
        ("duplicate_member", craft(None, box_header, box, raw_payload=by_name["intent"]["payload_json"][:-1]
                                   .encode() + b',"category":"weapons"}'), "bad_json"),
        ("nan_literal", craft(None, vendor_header, vendor, raw_payload=by_name["offer"]["payload_json"].replace(
            '"price":749.0', '"price":NaN').encode()), "bad_json"),
        ("padded_base64", good + "=", "bad_encoding"),
        ("two_segments", f"{h}.{p}", "bad_encoding"),
        ("oversize", "A" * (MAX_MESSAGE_BYTES + 1), "oversize"),
        ("receipt_without_offers", craft({**receipt_payload, "offers": []}, box_header, box), "bad_field"),
        ("receipt_hash_not_sha256", craft({**receipt_payload, "offers": ["offer-0001-vector"]}, box_header, box),
         "bad_field"),
        ("receipt_over_32_hashes", craft({**receipt_payload, "offers": receipt_payload["offers"] * 5},
                                         box_header, box), "bad_field"),
    ]
    invalid_entries: list[dict[str, Any]] = [
        {"name": name, "token": token, "now": NOW, "expect": None, "reason": reason}
        for name, token, reason in invalid]
    invalid_entries.append({"name": "offer_expected_intent_given", "token": good, "now": NOW,
                            "expect": "offer", "reason": "wrong_type"})

    # ------------------------------------------------------------------ what a box answers
    # The box checks a signer's standing before its signature (docs/protocol.md 11.2): a kid no
    # pinned vendor has is `unknown_vendor` however it was signed; only a pinned vendor's kid
    # buys a signature check. `verify_reason` is what the verifier alone says of the same token.
    stranger_header = {"alg": "EdDSA", "kid": stranger.kid, "typ": "vrm+jws"}
    box_cases = [
        ("offer_stored", offer_good, "active", None, None),
        ("unpinned_kid_signed_by_the_pinned_key",
         craft({**offer_payload, "iss": other.did}, other_header, vendor), "active", "unknown_vendor",
         "bad_signature"),
        ("pinned_iss_unpinned_kid", craft(offer_payload, other_header, other), "active", "unknown_vendor",
         "key_mismatch"),
        ("unknown_kid_signed_by_another_key",
         craft({**offer_payload, "iss": stranger.did}, stranger_header, other), "active", "unknown_vendor",
         "bad_signature"),
        ("pinned_kid_signed_by_another_key", craft(offer_payload, vendor_header, other), "active",
         "bad_signature", "bad_signature"),
        ("pinned_kid_iss_another_did", craft({**offer_payload, "iss": other.did}, vendor_header, vendor),
         "active", "key_mismatch", "key_mismatch"),
        ("offer_to_a_withdrawn_intent", offer_good, "withdrawn", "intent_closed", None),
        ("forgery_to_a_withdrawn_intent", craft(offer_payload, vendor_header, other), "withdrawn",
         "intent_closed", "bad_signature"),
    ]

    wrong_recipient = x25519_jwk(b"\x07" * 32, private=True)
    enc_x = enc_key.x
    # members in another order (the reference encryptor writes epk as crv, x, kty): equally valid
    eph_public = x25519_jwk(EPHEMERAL_SEED, private=False)
    reordered = fixed_jwe(pad(plaintext_json.encode("utf-8")), enc_x, EPHEMERAL_SEED, REORDERED_IV,
                          header={"enc": "A256GCM", "epk": {k: eph_public[k] for k in ("crv", "x", "kty")},
                                  "alg": "ECDH-ES"})

    def epk_with(**extra: str) -> str:
        """Encrypted correctly, so that only the header's extra epk member is wrong."""
        header = jwe_header(EPHEMERAL_SEED)
        return fixed_jwe(pad(plaintext_json.encode("utf-8")), enc_x, EPHEMERAL_SEED, JWE_IV,
                         header={**header, "epk": {**header["epk"], **extra}})
    parts = jwe.split(".")
    tampered = bytearray(b64u_decode(parts[3]))
    tampered[0] ^= 0x01
    return {
        "description": f"VRM protocol v{VERSION} test vectors; see docs/protocol.md. "
                       "Generated by tools/make_vectors.py.",
        "version": VERSION,
        "max_json_depth": MAX_JSON_DEPTH,
        "pad_buckets": list(PAD_BUCKETS),
        "now": NOW,
        "clock_skew": 120,
        "max_message_bytes": MAX_MESSAGE_BYTES,
        "keys": {**{n: _key_entry(n) for n in ("box_intent", "vendor", "other", "stranger")},
                 "vendor_encryption": {"seed": VENDOR_ENC_SEED.hex(), "jwk": enc_private}},
        "valid": valid,
        "invalid": invalid_entries,
        "replay": {"tokens": [good, reused_id], "now": NOW, "reason": "replay",
                   "note": "two different tokens with one id: the first is accepted, the second refused"},
        "replay_scope": {"first": offer_good, "now": NOW,
                         "note": "after `first` (the vector offer), each token separately: an id is "
                                 "unique only within its intent and its signer, so only a second token "
                                 "with the same id, intent and signer is a replay (reason null: accepted)",
                         "cases": [{"name": n, "token": t, "reason": r} for n, t, r in scope]},
        "redelivery": {"tokens": [good, good], "now": NOW, "reason": "replay",
                       "note": "the same token twice (a QoS 1 re-delivery): verify() refuses the second as "
                               "replay; a receiver MAY instead ignore it silently as a duplicate, but never "
                               "accepts it twice"},
        "box": {"now": NOW, "vendor": "acme-bikes", "profile": by_name["vendor_profile"]["token"],
                "intent": by_name["intent"]["token"], "intent_seed": SEEDS["box_intent"].hex(),
                "note": "a box holding the `intent` vector as its own intent (seed `intent_seed`) and "
                        "`profile` pinned; each case on its own, with the intent `intent_status`: "
                        "`reason` is what the box reports (null: stored), `verify_reason` what "
                        "verify() alone reports. A kid no pinned vendor has is unknown_vendor before "
                        "any signature check (docs/protocol.md 11.2)",
                "cases": [{"name": n, "topic": topics.offers(INTENT_ID), "token": t, "intent_status": st,
                           "reason": r, "verify_reason": vr} for n, t, st, r, vr in box_cases]},
        "jwe": {
            "valid": [{"name": "disclosure_plaintext", "recipient_jwk": enc_private,
                       "ephemeral_seed": EPHEMERAL_SEED.hex(), "iv": JWE_IV.hex(),
                       "header_json": header_json(jwe),
                       "jwe": jwe, "plaintext_json": plaintext_json, "plaintext": plaintext,
                       "padded_length": len(pad(plaintext_json.encode("utf-8")))},
                      {"name": "header_members_in_another_order", "recipient_jwk": enc_private,
                       "ephemeral_seed": EPHEMERAL_SEED.hex(), "iv": REORDERED_IV.hex(),
                       "header_json": header_json(reordered),
                       "jwe": reordered, "plaintext_json": plaintext_json, "plaintext": plaintext,
                       "padded_length": len(pad(plaintext_json.encode("utf-8")))}],
            "invalid": [
                {"name": "wrong_recipient_key", "recipient_jwk": wrong_recipient, "jwe": jwe,
                 "reason": "bad_encryption"},
                {"name": "sealed_agreement_wrong_recipient", "recipient_jwk": wrong_recipient,
                 "jwe": by_name["agreement"]["sealed"], "reason": "bad_encryption"},
                {"name": "zip_header", "recipient_jwk": enc_private,
                 "jwe": ".".join([b64u(json.dumps({**json.loads(b64u_decode(parts[0])), "zip": "DEF"},
                                                  separators=(",", ":")).encode())] + parts[1:]),
                 "reason": "bad_encryption"},
                {"name": "tampered_ciphertext", "recipient_jwk": enc_private,
                 "jwe": ".".join(parts[:3] + [b64u(bytes(tampered)), parts[4]]), "reason": "bad_encryption"},
                {"name": "epk_extra_member_kid", "recipient_jwk": enc_private, "jwe": epk_with(kid="eph-1"),
                 "reason": "bad_encryption"},
                {"name": "epk_carries_its_private_key", "recipient_jwk": enc_private,
                 "jwe": epk_with(d=b64u(EPHEMERAL_SEED)), "reason": "bad_encryption"},
            ],
        },
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    text = render()
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        log.info("%s is %s", args.out, "up to date" if same else "OUT OF DATE")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    log.info("wrote %s (%d bytes)", args.out, len(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
