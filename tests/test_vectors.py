"""tests/vectors/v<VERSION>.json: the reference reproduces every token byte for byte, accepts every valid
vector and refuses every invalid one with its reason code."""
from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

import pytest

from vrm_protocol import (REASONS, DecryptionKey, Identity, ProtocolError, ReplayGuard, decrypt_json,
                          sign, token_hash, topics, unseal, verify)
from vrm_protocol.encryption import PAD_BUCKETS, _decrypt
from vrm_protocol.messages import BODY_TYPES, VERSION, parse_dataclass

ROOT = Path(__file__).resolve().parent.parent
VECTOR_FILE = ROOT / "tests" / "vectors" / f"v{VERSION}.json"
VECTORS = json.loads(VECTOR_FILE.read_text(encoding="utf-8"))
NOW = VECTORS["now"]


def b64u_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def by_name(entries):
    return {e["name"]: e for e in entries}


def test_file_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "tools" / "make_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == VECTOR_FILE.read_text(encoding="utf-8")
    assert VECTORS["version"] == VERSION and VECTORS["pad_buckets"] == list(PAD_BUCKETS)


def test_every_message_type_has_a_vector():
    assert {v["type"] for v in VECTORS["valid"]} == set(BODY_TYPES)


def test_keys_match_their_seeds():
    for name, key in VECTORS["keys"].items():
        if name == "vendor_encryption":
            continue
        ident = Identity.from_seed(bytes.fromhex(key["seed"]))
        assert (ident.public_bytes.hex(), ident.did, ident.kid) == (key["public_key"], key["did"], key["kid"])
    assert VECTORS["keys"]["box_intent"]["seed"] == "01" * 32
    assert VECTORS["keys"]["vendor"]["seed"] == "02" * 32


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_signing_reproduces_the_token(vector):
    ident = Identity.from_seed(bytes.fromhex(vector["seed"]))
    assert (ident.did, ident.kid) == (vector["did"], vector["kid"])
    env = vector["envelope"]
    body = parse_dataclass(BODY_TYPES[vector["type"]], vector["body"])
    token = sign(ident, body, now=env["iat"], ttl=env["exp"] - env["iat"], msg_id=env["id"])
    assert token == vector["token"]
    # the documented layout: the exact header and payload bytes, signed with plain Ed25519
    h, p, s = token.split(".")
    assert b64u_decode(h).decode() == vector["header_json"]
    assert b64u_decode(p).decode() == vector["payload_json"]
    assert json.loads(vector["payload_json"]) == {**env, **vector["body"]}
    assert ident.private_key.sign(f"{h}.{p}".encode()) == b64u_decode(s)


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vector_verifies(vector):
    cls = BODY_TYPES[vector["type"]]
    msg = verify(vector["token"], now=NOW, replay=ReplayGuard(), expect=cls)
    env = vector["envelope"]
    assert (msg.envelope.v, msg.envelope.type, msg.envelope.id, msg.envelope.iss, msg.envelope.iat,
            msg.envelope.exp) == (env["v"], env["type"], env["id"], env["iss"], env["iat"], env["exp"])
    assert msg.body == parse_dataclass(cls, vector["body"])
    assert msg.hash == token_hash(vector["token"]) == vector["token_hash"]


def test_vectors_are_chained_like_the_flow():
    v = by_name(VECTORS["valid"])
    intent_id = v["intent"]["body"]["intent"]
    assert v["intent"]["envelope"]["id"] == intent_id
    assert v["intent"]["topic"] == topics.intent("bicycles", intent_id)
    assert v["offer"]["topic"] == topics.offers(intent_id)
    assert v["offer"]["envelope"]["exp"] == v["offer"]["body"]["valid_until"]
    assert v["offer"]["body"]["terms_response"]["sha256"] == v["intent"]["body"]["terms"]["sha256"]
    agreement = v["agreement"]["body"]
    assert agreement["offer"] == v["offer"]["envelope"]["id"]
    assert agreement["offer_hash"] == v["offer"]["token_hash"]
    assert agreement["vendor_did"] == v["vendor_profile"]["did"]
    assert v["agreement"]["did"] == v["intent"]["did"]  # the intent key signs the agreement
    agreement_id = v["agreement"]["envelope"]["id"]          # v2: the agreement id is its message id
    for name in ("countersignature", "disclosure", "revocation", "revocation_ack"):
        assert v[name]["body"]["agreement"] == agreement_id
    assert v["countersignature"]["body"]["agreement_hash"] == v["agreement"]["token_hash"]
    assert v["revocation_ack"]["body"]["revocation"] == v["revocation"]["envelope"]["id"]
    assert v["disclosure"]["body"]["jwe"] == VECTORS["jwe"]["valid"][0]["jwe"]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_is_refused_with_its_reason(vector):
    expect = BODY_TYPES[vector["expect"]] if vector["expect"] else None
    with pytest.raises(ProtocolError) as exc:
        verify(vector["token"], now=vector["now"], replay=ReplayGuard(), expect=expect)
    assert exc.value.reason == vector["reason"]


@pytest.mark.parametrize("case", ["replay", "redelivery"])
def test_replay_vectors(case):
    guard = ReplayGuard()
    first, second = VECTORS[case]["tokens"]
    assert (first == second) == (case == "redelivery")
    verify(first, now=VECTORS[case]["now"], replay=guard)
    with pytest.raises(ProtocolError) as exc:
        verify(second, now=VECTORS[case]["now"], replay=guard)
    assert exc.value.reason == VECTORS[case]["reason"]


@pytest.mark.parametrize("name", ["agreement", "revocation"])
def test_sealed_vectors_unseal_to_their_token(name):
    vector = by_name(VECTORS["valid"])[name]
    key = DecryptionKey(VECTORS["keys"]["vendor_encryption"]["jwk"])
    assert unseal(vector["sealed"], key) == vector["token"]
    padded = _decrypt(vector["sealed"], key)
    assert len(padded) in PAD_BUCKETS and padded.rstrip(b" ") == vector["token"].encode()
    assert vector["body"].get("purpose", vector["body"].get("reason")) not in vector["sealed"]
    with pytest.raises(ProtocolError) as exc:
        unseal(vector["sealed"], DecryptionKey.generate())
    assert exc.value.reason == "bad_encryption"


def test_jwe_vector_decrypts_to_its_plaintext():
    for vector in VECTORS["jwe"]["valid"]:
        key = DecryptionKey(vector["recipient_jwk"])
        assert key.public.x == by_name(VECTORS["valid"])["vendor_profile"]["body"]["enc_key"]["x"]
        assert decrypt_json(vector["jwe"], key) == vector["plaintext"]
        assert json.loads(vector["plaintext_json"]) == vector["plaintext"]
        assert len(_decrypt(vector["jwe"], key)) == vector["padded_length"] in PAD_BUCKETS


@pytest.mark.parametrize("vector", VECTORS["jwe"]["invalid"], ids=lambda v: v["name"])
def test_invalid_jwe_vector(vector):
    with pytest.raises(ProtocolError) as exc:
        decrypt_json(vector["jwe"], DecryptionKey(vector["recipient_jwk"]))
    assert exc.value.reason == vector["reason"]


def test_vectors_cover_every_reason_code():
    reasons = ({v["reason"] for v in VECTORS["invalid"]} | {VECTORS["replay"]["reason"]}
               | {v["reason"] for v in VECTORS["jwe"]["invalid"]})
    assert reasons == set(REASONS)
