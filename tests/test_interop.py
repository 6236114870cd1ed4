"""Interoperability: a vendor built only from docs/protocol.md, with PyJWT and `cryptography`
(not vrm_protocol), talks to the reference implementation in both directions."""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
import time

import base58
import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash

import vrm_protocol
from vrm_protocol import (Agreement, DecryptionKey, EncryptionKey, Identity, Intent, Offer, ProtocolError,
                          ReplayGuard, Terms, encrypt_json, new_id, seal)


# ---------------------------------------------------------------------------- the doc, re-implemented
V = 2   # section 6.2: the protocol version this document describes


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def did_key(public: bytes) -> str:
    """Section 5: did:key:z + base58btc(0xed 0x01 || key)."""
    return "did:key:z" + base58.b58encode(b"\xed\x01" + public).decode()


def kid_of(did: str) -> str:
    return did + "#" + did[len("did:key:"):]


def public_from_did(did: str) -> Ed25519PublicKey:
    raw = base58.b58decode(did[len("did:key:z"):])
    assert raw[:2] == b"\xed\x01" and len(raw) == 34
    return Ed25519PublicKey.from_public_bytes(raw[2:])


class PyJwtVendor:
    """A vendor written from docs/protocol.md: PyJWT for JWS, cryptography for the JWE."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.did = did_key(raw_public(self.key))
        self.enc = X25519PrivateKey.generate()
        self.enc_jwk = {"kty": "OKP", "crv": "X25519",
                        "x": b64u(self.enc.public_key().public_bytes_raw())}

    def sign(self, type_: str, body: dict, *, now: int, ttl: int, headers: dict | None = None) -> str:
        payload = {"v": V, "type": type_, "id": secrets.token_urlsafe(16), "iss": self.did,
                   "iat": now, "exp": now + ttl, **body}
        hdrs = {"kid": kid_of(self.did), "typ": "vrm+jws"} if headers is None else headers
        return jwt.encode(payload, self.key, algorithm="EdDSA", headers=hdrs)

    def decrypt(self, token: str) -> dict:
        """Section 10: a disclosure's values (the padding is JSON whitespace)."""
        return json.loads(self.decrypt_raw(token))

    def unseal(self, sealed: str) -> str:
        """Section 10: a sealed message is a JWE of the JWS, padded with trailing spaces."""
        return self.decrypt_raw(sealed).rstrip(b" ").decode("ascii")

    def decrypt_raw(self, token: str) -> bytes:
        """Section 10: ECDH-ES (direct) + A256GCM over X25519."""
        protected, encrypted_key, iv, ciphertext, tag = token.split(".")
        header = json.loads(b64u_decode(protected))
        assert (header["alg"], header["enc"], encrypted_key) == ("ECDH-ES", "A256GCM", "")
        epk = X25519PublicKey.from_public_bytes(b64u_decode(header["epk"]["x"]))
        cek = concat_kdf(self.enc.exchange(epk), header)
        return AESGCM(cek).decrypt(b64u_decode(iv), b64u_decode(ciphertext) + b64u_decode(tag),
                                   protected.encode("ascii"))


def concat_kdf(z: bytes, header: dict) -> bytes:
    def part(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b
    apu = b64u_decode(header.get("apu", ""))
    apv = b64u_decode(header.get("apv", ""))
    other = part(header["enc"].encode()) + part(apu) + part(apv) + struct.pack(">I", 256)
    return ConcatKDFHash(algorithm=hashes.SHA256(), length=32, otherinfo=other).derive(z)


def encrypt_from_doc(data: dict, recipient_x: str, **party_info: bytes) -> str:
    eph = X25519PrivateKey.generate()
    z = eph.exchange(X25519PublicKey.from_public_bytes(b64u_decode(recipient_x)))
    header = {"alg": "ECDH-ES", "enc": "A256GCM", **{k: b64u(v) for k, v in party_info.items()},
              "epk": {"kty": "OKP", "crv": "X25519", "x": b64u(eph.public_key().public_bytes_raw())}}
    protected = b64u(json.dumps(header).encode())
    iv = secrets.token_bytes(12)
    sealed = AESGCM(concat_kdf(z, header)).encrypt(iv, json.dumps(data).encode(), protected.encode())
    return ".".join([protected, "", b64u(iv), b64u(sealed[:-16]), b64u(sealed[-16:])])


# ---------------------------------------------------------------------------- fixtures
SHA = b64u(hashlib.sha256(b"terms").digest())


def offer_body(intent_id: str, now: int) -> dict:
    return {"intent": intent_id, "vendor": "pyjwt-shop",
            "item": {"name": "Road bike", "sku": "rb-1", "attributes": {"gears": 22, "colours": ["red"]}},
            "price": 1299.99, "currency": "EUR", "valid_until": now + 3600,
            "terms_response": {"id": "basic", "sha256": SHA, "decision": "accept"}, "delivery_days": 5}


@pytest.fixture
def vendor() -> PyJwtVendor:
    return PyJwtVendor()


# ---------------------------------------------------------------------------- vendor -> box
def test_box_accepts_a_pyjwt_offer(vendor):
    now = int(time.time())
    intent_id = new_id()
    token = vendor.sign("offer", offer_body(intent_id, now), now=now, ttl=3600)
    msg = vrm_protocol.verify(token, now=time.time(), replay=ReplayGuard(), expect=Offer)
    assert msg.envelope.iss == vendor.did
    assert msg.body.intent == intent_id and msg.body.price == 1299.99
    assert msg.body.item.attributes == {"gears": 22, "colours": ["red"]}
    assert msg.body.terms_response.decision == "accept"


def test_box_accepts_pyjwt_default_typ_and_no_typ(vendor):
    """PyJWT writes typ "JWT" unless told otherwise; typ is free-form, so both are accepted."""
    now = int(time.time())
    body = offer_body(new_id(), now)
    for headers in ({"kid": kid_of(vendor.did)}, {"kid": kid_of(vendor.did), "typ": None}):
        token = vendor.sign("offer", body, now=now, ttl=3600, headers=headers)
        header = json.loads(b64u_decode(token.split(".")[0]))
        assert header["alg"] == "EdDSA" and header["kid"] == kid_of(vendor.did)
        vrm_protocol.verify(token, now=now, expect=Offer)


def test_box_accepts_a_pyjwt_profile_and_countersignature(vendor):
    now = int(time.time())
    profile = vendor.sign("vendor_profile", {"vendor": "pyjwt-shop", "name": "PyJWT Shop",
                                             "categories": ["bicycles"], "enc_key": vendor.enc_jwk},
                          now=now, ttl=30 * 86400)
    msg = vrm_protocol.verify(profile, now=now)
    assert msg.body.enc_key == EncryptionKey(**vendor.enc_jwk)
    agreement_id = new_id()
    agreement_hash = b64u(hashlib.sha256(b"some agreement token").digest())
    cs = vendor.sign("countersignature", {"agreement": agreement_id, "agreement_hash": agreement_hash,
                                          "intent": new_id()}, now=now, ttl=600)
    assert vrm_protocol.verify(cs, now=now).body.agreement == agreement_id


def test_box_still_refuses_bad_pyjwt_messages(vendor):
    now = int(time.time())
    body = offer_body(new_id(), now)
    cases = {
        "bad_field": vendor.sign("offer", {**body, "price": "1299.99"}, now=now, ttl=60),
        "key_mismatch": jwt.encode({"v": V, "type": "offer", "id": new_id(), "iss": did_key(b"\x00" * 32),
                                    "iat": now, "exp": now + 60, **body}, vendor.key, algorithm="EdDSA",
                                   headers={"kid": kid_of(vendor.did)}),
        "bad_alg": jwt.encode({"v": V, "type": "offer", "iss": vendor.did, **body},
                              raw_public(vendor.key), algorithm="HS256", headers={"kid": kid_of(vendor.did)}),
        "bad_header": vendor.sign("offer", body, now=now, ttl=60,
                                  headers={"kid": kid_of(vendor.did), "cty": "json"}),
    }
    for reason, token in cases.items():
        with pytest.raises(ProtocolError) as exc:
            vrm_protocol.verify(token, now=now, expect=Offer)
        assert exc.value.reason == reason


# ---------------------------------------------------------------------------- box -> vendor
def test_pyjwt_verifies_a_box_intent():
    now = time.time()
    box = Identity.generate()
    intent_id = new_id()
    intent = Intent(intent=intent_id, category="bicycles", terms=Terms(id="basic", sha256=SHA),
                    description="gravel bike", attributes={"budget_max": 1500, "currency": "EUR"})
    token = vrm_protocol.sign(box, intent, now=now, ttl=3600, msg_id=intent_id)

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["typ"] == "vrm+jws"
    did = header["kid"].split("#", 1)[0]
    assert header["kid"] == kid_of(did)
    claims = jwt.decode(token, public_from_did(did), algorithms=["EdDSA"], issuer=did,
                        options={"require": ["exp", "iat", "iss"]})
    assert claims["v"] == V and claims["type"] == "intent" and claims["id"] == intent_id
    assert claims["category"] == "bicycles" and claims["terms"] == {"id": "basic", "sha256": SHA}
    assert claims["attributes"] == {"budget_max": 1500, "currency": "EUR"}

    other = Ed25519PrivateKey.generate()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other.public_key(), algorithms=["EdDSA"])


def test_token_hash_matches_the_doc():
    box = Identity.generate()
    token = vrm_protocol.sign(box, Intent(intent=new_id(), category="bicycles",
                                          terms=Terms(id="basic", sha256=SHA)), now=time.time(), ttl=60)
    assert vrm_protocol.token_hash(token) == b64u(hashlib.sha256(token.encode("ascii")).digest())


# ---------------------------------------------------------------------------- disclosures
def test_doc_vendor_decrypts_a_box_disclosure(vendor):
    data = {"agreement": SHA, "fields": {"email": "pat@example.org", "name": "Zoë"}}
    token = encrypt_json(data, EncryptionKey(**vendor.enc_jwk))
    assert vendor.decrypt(token) == data
    assert len(vendor.decrypt_raw(token)) == 512          # padded to the first size bucket


def test_doc_vendor_unseals_and_verifies_a_box_agreement(vendor):
    """Section 8.5/10: sign, then encrypt; the vendor decrypts, strips the padding, verifies."""
    now = int(time.time())
    box = Identity.generate()
    agreement = Agreement(intent=new_id(), offer=new_id(), offer_hash=SHA, vendor="pyjwt-shop",
                          vendor_did=vendor.did, terms=Terms(id="basic", sha256=SHA), fields=["email"],
                          purpose="deliver the bike", duration_days=30)
    token = vrm_protocol.sign(box, agreement, now=now, ttl=600)
    sealed = seal(token, EncryptionKey(**vendor.enc_jwk))
    assert "deliver" not in sealed and len(sealed.split(".")) == 5
    inner = vendor.unseal(sealed)
    assert inner == token
    did = jwt.get_unverified_header(inner)["kid"].split("#", 1)[0]
    claims = jwt.decode(inner, public_from_did(did), algorithms=["EdDSA"])
    assert claims["purpose"] == "deliver the bike" and claims["fields"] == ["email"]


@pytest.mark.parametrize("party_info", [{}, {"apu": b"box", "apv": b"acme"}])
def test_box_decrypts_a_jwe_built_from_the_doc(party_info):
    key = DecryptionKey.generate()
    data = {"agreement": SHA, "fields": {"postal_address": "1 High Street"}}
    assert vrm_protocol.decrypt_json(encrypt_from_doc(data, key.public.x, **party_info), key) == data
    with pytest.raises(ProtocolError) as exc:
        vrm_protocol.decrypt_json(encrypt_from_doc(data, key.public.x, **party_info), DecryptionKey.generate())
    assert exc.value.reason == "bad_encryption"
