"""tests/vectors/v1.json: the reference reproduces every token byte for byte, accepts every valid
vector and refuses every invalid one with its reason code."""
from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

import pytest

from vrm_protocol import (REASONS, DecryptionKey, Identity, ProtocolError, ReplayGuard, decrypt_json,
                          sign, token_hash, topics, verify)
from vrm_protocol.messages import BODY_TYPES, parse_dataclass

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests" / "vectors" / "v1.json").read_text(encoding="utf-8"))
NOW = VECTORS["now"]


def b64u_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def by_name(entries):
    return {e["name"]: e for e in entries}


def test_file_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "tools" / "make_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == (ROOT / "tests" / "vectors" / "v1.json").read_text(encoding="utf-8")


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
    agreement_id = v["agreement"]["token_hash"]
    for name in ("countersignature", "disclosure", "revocation", "revocation_ack"):
        assert v[name]["body"]["agreement"] == agreement_id
    assert v["revocation_ack"]["body"]["revocation"] == v["revocation"]["envelope"]["id"]
    assert v["disclosure"]["body"]["jwe"] == VECTORS["jwe"]["valid"][0]["jwe"]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_is_refused_with_its_reason(vector):
    expect = BODY_TYPES[vector["expect"]] if vector["expect"] else None
    with pytest.raises(ProtocolError) as exc:
        verify(vector["token"], now=vector["now"], replay=ReplayGuard(), expect=expect)
    assert exc.value.reason == vector["reason"]


def test_replay_vector():
    guard = ReplayGuard()
    first, second = VECTORS["replay"]["tokens"]
    verify(first, now=VECTORS["replay"]["now"], replay=guard)
    with pytest.raises(ProtocolError) as exc:
        verify(second, now=VECTORS["replay"]["now"], replay=guard)
    assert exc.value.reason == VECTORS["replay"]["reason"]


def test_jwe_vector_decrypts_to_its_plaintext():
    for vector in VECTORS["jwe"]["valid"]:
        key = DecryptionKey(vector["recipient_jwk"])
        assert key.public.x == by_name(VECTORS["valid"])["vendor_profile"]["body"]["enc_key"]["x"]
        assert decrypt_json(vector["jwe"], key) == vector["plaintext"]
        assert json.loads(vector["plaintext_json"]) == vector["plaintext"]


@pytest.mark.parametrize("vector", VECTORS["jwe"]["invalid"], ids=lambda v: v["name"])
def test_invalid_jwe_vector(vector):
    with pytest.raises(ProtocolError) as exc:
        decrypt_json(vector["jwe"], DecryptionKey(vector["recipient_jwk"]))
    assert exc.value.reason == vector["reason"]


def test_vectors_cover_every_reason_code():
    reasons = ({v["reason"] for v in VECTORS["invalid"]} | {VECTORS["replay"]["reason"]}
               | {v["reason"] for v in VECTORS["jwe"]["invalid"]})
    assert reasons == set(REASONS)
