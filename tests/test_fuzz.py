"""Fuzzing every parser that takes network or file input (docs/testing.md lists them).

Each target gets 10,000 hypothesis cases per run. A case is drawn from one integer: it picks a
real seed (signed messages of every type, real config, rules, profile, export and backup files)
and mutates it with a seeded random generator, at the byte level (flips, hostile tokens,
truncation, splices), at the JSON level (values replaced by hostile ones, keys dropped or added)
and, where a signature guards the rest, re-signed with the real key so the case gets past the
first check; some cases are plain random bytes. A parser may raise only its module's own error
type (with a known reason code where it has them) and nothing else. A second batch after a
warm-up, traced with tracemalloc, shows that memory does not grow (generous bound: caches fill).
"""
from __future__ import annotations

import copy
import gc
import json
import os
import random
import re
import tomllib
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jwt
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from device import portability
from device.claims import ClaimError, check_vc_jwt
from device.config import ConfigError, load_config
from device.daemon.sockets import MAX_REQUEST, parse_request
from device.intake import INTAKE_REASONS, Pre, Rejection
from device.market import MarketError
from device.portability import PortabilityError
from device.rules import RulesError, compile_rules, default_rules, validate_rules
from hardware.profile import PROFILE_DIR, ProfileError, load_profile, parse_profile
from tests.intake_box import Box
from tests.vendor_messages import TestVendor
from vendor_kit.catalogue import parse_catalogue
from vendor_kit.identity import VendorIdentity
from vendor_kit.ledger import LEDGER_FILE, Ledger
from vendor_kit.worker import BrokerSettings, VendorWorker
from vrm_protocol import (REASONS, Agreement, Countersignature, DecryptionKey, Disclosure, Identity, Intent,
                          IntentWithdrawal, Item, Offer, ProtocolError, Receipt, ReplayGuard, Revocation,
                          RevocationAck,
                          Terms, TermsResponse, VendorProfile, decrypt_json, encrypt_json, seal, sign,
                          token_hash, topics, unseal, verify)
from vrm_protocol.codec import b64url, b64url_decode, unverified_payload
from vrm_protocol.encryption import _encrypt
from vrm_protocol.messages import terms_digest

pytestmark = pytest.mark.faults   # the fuzz targets are also slow; the regressions at the end are not

CASES = int(os.environ.get("VRM_FUZZ_CASES", 10_000))   # per target and run (fewer only for a quick local look)
MEMORY_BATCH = 1_000      # cases per batch of the memory check (a warm-up batch, then a traced one)
MEMORY_BOUND = 4 << 20    # bytes the traced batch may leave allocated (bounded caches may fill)
NOW = 1_800_000_000
ROOT = Path(__file__).resolve().parent.parent

FUZZ = settings(max_examples=CASES, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck))

# ------------------------------------------------------------------------------ mutators
HOSTILE_BYTES = [b'"', b"{", b"}", b"[", b"]", b",", b":", b".", b"=", b"\\", b"\\u", b"\\ud800", b"\n",
                 b"\r\n", b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"-", b"_", b"+", b"/", b"#", b"null",
                 b"1e999", b"-0", b"NaN", b"Infinity", b"A" * 100, b"[" * 40, b"{\"a\":" * 40, b"'", b"[[x]]",
                 b"\"\"\"", b"= ", b"0x10", b"9" * 30, b"\t", b" ", b"\xef\xbb\xbf"]
HOSTILE_VALUES: list[Any] = [None, True, False, 0, -1, 1, 7, 1.5, -0.0, 2 ** 53 + 1, -2 ** 63, 2 ** 64, 1e308,
                             float("nan"), float("inf"), "", "x", "x" * 2100, "\u0000", "é", "\U0001F600",
                             "../../etc/passwd", "did:key:z6Mk", "a#b", "2026-01-01T00:00:00", "mqtt://x",
                             [], {}, [1, 2], ["a"] * 150, {"k": "v"}, [[[[[[]]]]]], {"a": {"b": {"c": {}}}}]


def hostile(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(HOSTILE_VALUES))   # a fresh copy: mutations never share it


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op, pos = rng.randrange(8), rng.randrange(len(out) + 1)
        at = min(pos, len(out) - 1)
        if op == 0 and out:
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1 and out:
            out[at] = rng.randrange(256)
        elif op == 2:
            out[pos:pos] = rng.choice(HOSTILE_BYTES)
        elif op == 3:
            del out[pos:pos + rng.randint(1, 16)]
        elif op == 4:
            del out[pos:]
        elif op == 5:
            out[pos:pos] = out[pos:pos + rng.randint(1, 32)]
        elif op == 6:
            out[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 7 and out:  # a printable character (keeps text formats text)
            out[at] = rng.randrange(32, 127)
    return bytes(out)


def mutate_json(value: Any, rng: random.Random, keys: list[str] | None = None) -> Any:
    """A copy of `value` with one to three changes somewhere inside it."""
    value = json.loads(json.dumps(value))
    for _ in range(rng.randint(1, 3)):
        value = _mutate_at(value, rng, keys or [])
    return value


def _mutate_at(value: Any, rng: random.Random, keys: list[str]) -> Any:
    if rng.random() < 0.25 or not isinstance(value, (dict, list)) or not value:
        if isinstance(value, dict) and rng.random() < 0.5:
            value[rng.choice(keys + ["x", "", "__proto__"])] = hostile(rng)
            return value
        return hostile(rng) if rng.random() < 0.8 else _retyped(value)
    if isinstance(value, dict):
        k = rng.choice(list(value))
        r = rng.random()
        if r < 0.15:
            del value[k]
        elif r < 0.25:
            value[rng.choice(keys + ["extra", "x" * 70])] = hostile(rng)
        else:
            value[k] = _mutate_at(value[k], rng, keys)
        return value
    i = rng.randrange(len(value))
    r = rng.random()
    if r < 0.15:
        del value[i]
    elif r < 0.25:
        value.append(hostile(rng))
    else:
        value[i] = _mutate_at(value[i], rng, keys)
    return value


def _retyped(value: Any) -> Any:
    """The same content as another JSON type: 3 -> "3", "3" -> 3, x -> [x]."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return [value]
    return str(value) if not isinstance(value, (dict, list)) else json.dumps(value)


def dump(value: Any, rng: random.Random) -> bytes:
    text = json.dumps(value, ensure_ascii=rng.random() < 0.5, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass")


def to_toml(doc: Any) -> str:
    """A JSON-like value written as TOML (tables as [sections], lists of tables as [[arrays]]), so
    mutated configs and profiles are valid TOML and reach the parser's own checks. None (no TOML
    equivalent) drops the key; a non-table document becomes one key."""
    if not isinstance(doc, dict):
        doc = {"value": doc}
    top = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items()
           if v is not None and not isinstance(v, dict) and not _tables(v)]
    for k, v in doc.items():
        if isinstance(v, dict):
            top.append(f"[{_toml_key(k)}]")
            top += [f"{_toml_key(kk)} = {_toml_value(vv)}" for kk, vv in v.items() if vv is not None]
        elif _tables(v):
            for t in v:
                top.append(f"[[{_toml_key(k)}]]")
                top += [f"{_toml_key(kk)} = {_toml_value(vv)}" for kk, vv in t.items() if vv is not None]
    return "\n".join(top) + "\n"


def _tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(t, dict) for t in v)


def _toml_key(k: str) -> str:
    return json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, (int, str)):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    return '""'


def keys_of(value: Any) -> list[str]:
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += [k, *keys_of(v)]
    elif isinstance(value, list):
        for v in value:
            out += keys_of(v)
    return sorted(set(out))


def jws(identity: Identity, h: str, payload: bytes) -> str:
    """A compact JWS of arbitrary payload bytes, really signed (so it gets past the signature)."""
    signing_input = f"{h}.{b64url(payload)}"
    return f"{signing_input}.{b64url(identity.private_key.sign(signing_input.encode('ascii')))}"


@dataclass
class Target:
    """One parser: `case(n)` builds the n-th input; `run(case)` feeds it and checks the contract."""

    case: Callable[[int], Any]
    run: Callable[[Any], None]


def fuzz_and_trace(target: Target, n: int) -> None:
    """The hypothesis case (n is its integer)."""
    target.run(target.case(n))


def assert_memory_flat(target: Target) -> None:
    for n in range(MEMORY_BATCH):              # warm-up: caches fill here
        target.run(target.case(n))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(MEMORY_BATCH, 2 * MEMORY_BATCH):
            target.run(target.case(n))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < MEMORY_BOUND, f"{grown} bytes still allocated after {MEMORY_BATCH} cases"


def token_case(seeds: list[tuple[Identity, str]], n: int) -> bytes:
    """A case for a JWS parser: random bytes, a byte-mutated seed, or a seed whose payload (or
    header) was mutated and really re-signed by the seed's signer."""
    rng = random.Random(n)
    signer, token = rng.choice(seeds)
    mode = rng.random()
    if mode < 0.1:
        return rng.randbytes(rng.randrange(0, 300))
    if mode < 0.4:
        return mutate_bytes(token.encode(), rng)
    h, p, _ = token.split(".")
    payload = json.loads(b64url_decode(p))
    if mode < 0.85:
        new = dump(mutate_json(payload, rng, keys_of(payload)), rng)
        return jws(signer, h, new).encode()
    if mode < 0.95:
        return jws(signer, h, mutate_bytes(b64url_decode(p), rng)).encode()
    header = json.loads(b64url_decode(h))
    new_header = dump(mutate_json(header, rng, ["alg", "kid", "typ", "crit", "jwk"]), rng)
    return jws(signer, b64url(new_header), b64url_decode(p)).encode()


def expect_protocol_error(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ProtocolError as exc:
        assert exc.reason in REASONS
        return None


# ------------------------------------------------------------------------------ seeds
TERMS_TEXT = "No tracking. No resale."
TERMS = Terms(id="vrm-basic-1", sha256=terms_digest(TERMS_TEXT), text=TERMS_TEXT)


@pytest.fixture(scope="module")
def protocol_seeds() -> dict[str, Any]:
    """One real signed message of every type, and real JWEs (a sealed agreement, a disclosure)."""
    box, vendor, enc = Identity.generate(), Identity.generate(), DecryptionKey.generate()
    intent_id, offer_id, agreement_id, revocation_id = "intent-0001-fuzz", "offer-0001-fuzz", \
        "agree-0001-fuzz", "revoke-0001-fuzz"
    offer = Offer(intent=intent_id, vendor="acme", price=749.0, currency="EUR", valid_until=NOW + 3600,
                  item=Item(name="City bike", sku="ceb-500", brand="Acme", description="500 Wh",
                            attributes={"battery_wh": 500, "weight_kg": 22.5, "colours": ["grey", "green"]}),
                  terms_response=TermsResponse(id=TERMS.id, sha256=TERMS.sha256, decision="accept"),
                  delivery_days=3, region="GB")
    offer_token = sign(vendor, offer, now=NOW, ttl=3600, msg_id=offer_id)
    agreement = Agreement(intent=intent_id, offer=offer_id, offer_hash=token_hash(offer_token), vendor="acme",
                          vendor_did=vendor.did, terms=TERMS, fields=["email", "postal_address"],
                          purpose="delivery", duration_days=30)
    agreement_token = sign(box, agreement, now=NOW, ttl=3600, msg_id=agreement_id)
    jwe = encrypt_json({"agreement": agreement_id, "fields": {"email": "pat@example.org"}}, enc.public)
    bodies = {
        VendorProfile: (vendor, VendorProfile(vendor="acme", name="Acme", categories=["bikes"], enc_key=enc.public,
                                              url="https://acme.example", accreditations=["iso-9001"])),
        Intent: (box, Intent(intent=intent_id, category="bikes", terms=TERMS, description="a city bike",
                             attributes={"budget_max": 800, "postcode_district": "SW1A"})),
        IntentWithdrawal: (box, IntentWithdrawal(intent=intent_id, category="bikes")),
        Countersignature: (vendor, Countersignature(agreement=agreement_id,
                                                    agreement_hash=token_hash(agreement_token), intent=intent_id)),
        Disclosure: (box, Disclosure(agreement=agreement_id, intent=intent_id, jwe=jwe)),
        Revocation: (box, Revocation(agreement=agreement_id, intent=intent_id, delete=True, reason="done")),
        RevocationAck: (vendor, RevocationAck(agreement=agreement_id, intent=intent_id, revocation=revocation_id,
                                              deleted=True)),
        Receipt: (box, Receipt(intent=intent_id, category="bikes", offers=[token_hash(offer_token)] * 8)),
    }
    tokens = [(vendor, offer_token), (box, agreement_token)]
    tokens += [(who, sign(who, body, now=NOW, ttl=3600)) for who, body in bodies.values()]
    for _, t in tokens:   # every seed is valid as it is
        verify(t, now=NOW)
    assert {verify(t, now=NOW).body.TYPE for _, t in tokens} == {c.TYPE for c in (Offer, Agreement, *bodies)}
    sealed = [seal(t, enc.public) for _, t in tokens]
    return {"tokens": tokens, "enc": enc, "sealed": sealed, "jwe": jwe}


# ------------------------------------------------------------------------------ vrm_protocol
@pytest.mark.slow
def test_verify_every_message_type(protocol_seeds):
    """verify: only ProtocolError with a known reason; with and without the expected type."""
    seeds = protocol_seeds["tokens"]
    types = [None, Offer, Agreement, VendorProfile, Intent, IntentWithdrawal, Countersignature, Disclosure,
             Revocation, RevocationAck, Receipt]
    guard = ReplayGuard(max_entries=500)

    def run(case: tuple[bytes, type | None]) -> None:
        token, expect = case
        msg = expect_protocol_error(lambda: verify(token, now=NOW, replay=guard, expect=expect))
        if msg is not None:
            assert expect is None or isinstance(msg.body, expect)

    target = Target(lambda n: (token_case(seeds, n), types[n % len(types)]), run)
    given(st.integers(0, 2 ** 63))(FUZZ(lambda n: fuzz_and_trace(target, n)))()
    assert_memory_flat(target)


@pytest.mark.slow
def test_jwe_unseal_and_decrypt(protocol_seeds):
    """unseal (sealed agreements and revocations) and decrypt_json (disclosures): ProtocolError only.
    Mutations of the JWE text, and plaintexts mutated then really encrypted to the key."""
    enc, jwes = protocol_seeds["enc"], protocol_seeds["sealed"] + [protocol_seeds["jwe"]]
    plain = [t for _, t in protocol_seeds["tokens"]]
    secret = {"agreement": "agree-0001-fuzz", "fields": {"email": "pat@example.org"}}

    def case(n: int) -> bytes | str:
        rng = random.Random(n)
        mode = rng.random()
        if mode < 0.1:
            return rng.randbytes(rng.randrange(0, 300))
        if mode < 0.6:
            return mutate_bytes(rng.choice(jwes).encode(), rng)
        if mode < 0.8:   # a sealed message whose inside is not a JWS / not ASCII
            return _encrypt(mutate_bytes(rng.choice(plain).encode(), rng), enc.public)
        data = mutate_json(secret, rng, ["agreement", "fields", "email"])
        return encrypt_json(data, enc.public) if isinstance(data, dict) else \
            _encrypt(dump(data, rng), enc.public)

    def run(token: bytes | str) -> None:
        expect_protocol_error(lambda: unseal(token, enc))
        obj = expect_protocol_error(lambda: decrypt_json(token, enc))
        assert obj is None or isinstance(obj, dict)

    target = Target(case, run)
    given(st.integers(0, 2 ** 63))(FUZZ(lambda n: fuzz_and_trace(target, n)))()
    assert_memory_flat(target)


@pytest.mark.slow
def test_unverified_payload(protocol_seeds):
    """Reads our own stored tokens; on anything else it answers {} and never raises."""
    seeds = protocol_seeds["tokens"]

    def run(token: bytes) -> None:
        assert isinstance(unverified_payload(token.decode("latin-1")), dict)

    target = Target(lambda n: token_case(seeds, n), run)
    given(st.integers(0, 2 ** 63))(FUZZ(lambda n: fuzz_and_trace(target, n)))()
    assert_memory_flat(target)


@pytest.mark.slow
def test_topic_parsers():
    """parse_box_topic / parse_vendor_topic / parse_intent_topic: a tuple of strings or None."""
    seeds = [topics.offers("intent-0001"), topics.countersignatures("intent-0001"), topics.revocation_acks("i1"),
             topics.vendor_profile("acme"), topics.agreements("acme"), topics.disclosures("acme"),
             topics.revocations("acme"), topics.intent("bikes", "intent-0001"), topics.withdrawal("bikes", "i")]

    def case(n: int) -> str:
        rng = random.Random(n)
        if rng.random() < 0.1:
            return rng.randbytes(rng.randrange(0, 80)).decode("latin-1")
        return mutate_bytes(rng.choice(seeds).encode(), rng).decode("utf-8", "replace")

    def run(topic: str) -> None:
        box, vendor, intent = (topics.parse_box_topic(topic), topics.parse_vendor_topic(topic),
                               topics.parse_intent_topic(topic))
        assert box is None or (box[1] in topics.BOX_KINDS and isinstance(box[0], str))
        assert vendor is None or (vendor[1] in (*topics.VENDOR_KINDS, "profile") and isinstance(vendor[0], str))
        assert intent is None or (intent[0] in ("intent", "withdrawal") and all(isinstance(x, str) for x in intent))

    target = Target(case, run)
    given(st.integers(0, 2 ** 63))(FUZZ(lambda n: fuzz_and_trace(target, n)))()
    assert_memory_flat(target)


# ------------------------------------------------------------------------------ the box
@pytest.mark.slow
def test_intake_precheck(tmp_path):
    """Intake.precheck on topic + payload (a real store in tmp): None, a Pre, or a Rejection with
    a known reason; it never raises. Seeds: a known vendor's real offers, profile, replies."""
    b = Box(tmp_path / "box")
    try:
        r = b.market.add_intent("bikes", {"budget_max": 800}, "a city bike")
        b.intake.refresh()
        intent = b.store.get_intent(r["intent"])
        vendor = TestVendor("acme")
        b.feed(topics.vendor_profile("acme"), vendor.profile())
        now = b.intake.clock()
        seeds = [(vendor.identity, topics.offers(intent.intent_id), vendor.offer(intent.token, now=now)),
                 (vendor.identity, topics.vendor_profile("acme"), vendor.profile(now=now + 1)),
                 (vendor.identity, topics.countersignatures(intent.intent_id),
                  vendor.offer(intent.token, now=now)),
                 (Identity.generate(), topics.offers(intent.intent_id), vendor.offer(intent.token, now=now))]
        tokens = [(who, token) for who, _, token in seeds]
        all_topics = [t for _, t, _ in seeds] + [topics.revocation_acks(intent.intent_id), topics.offers("nope0000")]
        reasons = set(REASONS) | set(INTAKE_REASONS)

        def case(n: int) -> tuple[str, bytes]:
            rng = random.Random(n)
            topic = rng.choice(all_topics)
            if rng.random() < 0.1:
                topic = mutate_bytes(topic.encode(), rng).decode("utf-8", "replace")
            return topic, token_case(tokens, n)

        def run(c: tuple[str, bytes]) -> None:
            out = b.intake.precheck(*c)
            assert out is None or isinstance(out, Pre) or (isinstance(out, Rejection) and out.reason in reasons), out

        target = Target(case, run)
        given(st.integers(0, 2 ** 63))(FUZZ(lambda n: fuzz_and_trace(target, n)))()
        assert_memory_flat(target)
    finally:
        b.store.close()


@pytest.mark.slow
def test_config_file(tmp_path):
    """load_config on a TOML file (the shipped example, mutated): ConfigError only."""
    example = (ROOT / "config" / "vrmbox.example.toml").read_text()
    # the example without its comments, and with its commented-out keys switched on
    plain, switched_on, seen, section = [], [], set(), ""
    for line in example.splitlines():
        if line.startswith("["):
            section = line
        if not line.startswith("#"):
            plain.append(line)
        key = (section, line.lstrip("# ").split(" = ")[0])
        if re.match(r"(# )?[A-Za-z0-9_]+ = ", line) and key not in seen:   # a key commented out, once
            seen.add(key)
            switched_on.append(line.lstrip("# ") if line.startswith("# ") else line)
        elif line.startswith("["):
            switched_on.append(line)
    seeds = ["\n".join(plain).encode(), "\n".join(switched_on).encode()]
    tables = [tomllib.loads(s.decode()) for s in seeds]
    keys = keys_of(tables)
    path = tmp_path / "config.toml"

    def case(n: int) -> bytes:
        rng = random.Random(n)
        mode = rng.random()
        if mode < 0.05:
            return rng.randbytes(rng.randrange(0, 200))
        if mode < 0.4:
            return mutate_bytes(rng.choice(seeds), rng)
        return to_toml(mutate_json(rng.choice(tables), rng, keys)).encode("utf-8", "surrogatepass")

    def run(data: bytes) -> None:
        path.write_bytes(data)
        try:
            load_config(path, env={"HOME": str(tmp_path)})
        except ConfigError:
            pass

    target = Target(case, run)
    given(st.integers(0, 2 ** 63))(FUZZ(lambda n: fuzz_and_trace(target, n)))()
    assert_memory_flat(target)


RULES_SEED = {
    "version": 1,
    "filters": {"max_price": {"amount": 1000, "currency": "EUR"}, "currencies": ["EUR", "GBP"],
                "regions": ["GB", "GB-LND"], "min_validity_s": 3600, "max_delivery_days": 7,
                "require_terms_accepted": True, "vendors_allow": ["acme"], "vendors_block": ["shady"],
                "categories": ["bikes"],
                "attributes": [{"path": "item.attributes.gears", "op": "ge", "value": 7},
                               {"path": "item.brand", "op": "in", "value": ["Acme", "Brompton"]},
                               {"path": "item.attributes.colour", "op": "exists"}]},
    "weights": {"price": 1.0, "known_supplier": 0.5, "reputation": 0.5, "delivery": 0.2,
                "brands_liked": 0.3, "brands_disliked": 0.5,
                "attributes": [{"path": "item.attributes.weight_kg", "prefer": "low", "weight": 0.4},
                               {"path": "item.attributes.colour", "prefer": "equals", "value": "green",
                                "weight": 0.1}]},
    "brands": {"liked": ["Acme"], "disliked": ["Cheapo"]},
}


@pytest.mark.slow
def test_rules(tmp_path):
    """validate_rules + compile_rules on rules documents (the defaults and a full one, mutated,
    and as files: bytes mutated then read as JSON): RulesError only."""
    seeds = [default_rules(), RULES_SEED]
    for s in seeds:
        compile_rules(validate_rules(s))
    keys = sorted(set(keys_of(seeds)) | {"attributes", "prefer", "brands", "liked", "disliked", "op", "path",
                                          "value", "conditions", "eq", "in", "item.attributes.gears"})

    def case(n: int) -> Any:
        rng = random.Random(n)
        seed = rng.choice(seeds)
        if rng.random() < 0.2:  # a rules file: bytes mutated, then read as the CLI would (JSON)
            try:
                return json.loads(mutate_bytes(json.dumps(seed).encode(), rng))
            except ValueError:
                return hostile(rng)
        return mutate_json(seed, rng, keys)

    def run(data: Any) -> None:
        try:
            compile_rules(validate_rules(data))
        except RulesError:
            pass

    target = Target(case, run)
    given(st.integers(0, 2 ** 63))(FUZZ(lambda n: fuzz_and_trace(target, n)))()
    assert_memory_flat(target)


@pytest.fixture(scope="module")
def export_seed(tmp_path_factory):
    from device.store import Store
    path = tmp_path_factory.mktemp("export")
    store = Store.open(path / "src")
    try:
        store.set_profile_field("email", "pat@example.org")   # a little of everything, kept small:
        store.add_supplier("acme-bikes", "Acme Bikes Ltd")      # each case re-signs and checks it all
        store.set_rules({"filters": [{"max_price": 1000}]})
        doc = portability.build_export(store)
        identity = store.device_identity
        backup = portability.build_backup(store, "correct horse", n=2)
    finally:
        store.close()
    return {"doc": doc, "identity": identity, "backup": backup, "dir": path}


def _resigned(doc: Any, identity: Identity) -> Any:
    if isinstance(doc, dict):
        try:
            doc["signature"] = b64url(identity.private_key.sign(portability._doc_digest(doc)))
        except (TypeError, ValueError):
            pass
    return doc


@pytest.mark.slow
def test_export_files(export_seed):
    """read_json_file + check_export (import files): PortabilityError only. Mutated documents
    are re-signed with the box's key, so they get past the signature to the tables and audit."""
    doc, identity, path = export_seed["doc"], export_seed["identity"], export_seed["dir"] / "x.json"
    keys = keys_of(doc)
    text = json.dumps(doc).encode()
    portability.check_export(json.loads(text))

    def case(n: int) -> bytes:
        rng = random.Random(n)
        mode = rng.random()
        if mode < 0.05:
            return rng.randbytes(rng.randrange(0, 300))
        if mode < 0.3:
            return mutate_bytes(text, rng)
        return json.dumps(_resigned(mutate_json(doc, rng, keys), identity)).encode()

    def run(data: bytes) -> None:
        path.write_bytes(data)
        try:
            portability.check_export(portability.read_json_file(path))
        except PortabilityError:
            pass

    target = Target(case, run)
    given(st.integers(0, 2 ** 63))(FUZZ(lambda n: fuzz_and_trace(target, n)))()
    assert_memory_flat(target)


@pytest.mark.slow
def test_backup_files(export_seed):
    """read_json_file + open_backup (restore files): PortabilityError only. The seed uses a small
    scrypt cost; mutations keep the KDF parameters small, so the cases stay fast."""
    backup, path = export_seed["backup"], export_seed["dir"] / "b.json"
    text = json.dumps(backup).encode()
    portability.open_backup(json.loads(text), "correct horse")
    keys = keys_of(backup)

    def case(n: int) -> bytes:
        rng = random.Random(n)
        mode = rng.random()
        if mode < 0.05:
            return rng.randbytes(rng.randrange(0, 300))
        if mode < 0.5:
            return mutate_bytes(text, rng)
        obj = mutate_json(backup, rng, keys)
        if isinstance(obj, dict) and isinstance(obj.get("kdf"), dict):
            for k in ("n", "r", "p"):   # keep the work small (the bounds themselves are unit-tested)
                v = obj["kdf"].get(k)
                if isinstance(v, int) and not isinstance(v, bool) and v > 64:
                    obj["kdf"][k] = v % 64
        return json.dumps(obj).encode()

    def run(data: bytes) -> None:
        path.write_bytes(data)
        try:
            portability.open_backup(portability.read_json_file(path), "correct horse")
        except PortabilityError:
            pass

    target = Target(case, run)
    given(st.integers(0, 2 ** 63))(FUZZ(lambda n: fuzz_and_trace(target, n)))()
    assert_memory_flat(target)


@pytest.mark.slow
def test_imported_credentials():
    """check_vc_jwt (imported VC-JWTs): ClaimError only; mutated payloads re-signed by the issuer."""
    issuer = Identity.generate()
    v1 = {"iss": issuer.did, "sub": "did:example:me", "nbf": NOW - 3600, "exp": NOW + 86400,
          "vc": {"@context": ["https://www.w3.org/2018/credentials/v1"],
                 "type": ["VerifiableCredential", "DrivingLicenceCredential"],
                 "credentialSubject": {"id": "did:example:me", "drivingLicence": {"valid": True}}}}
    v2 = {"@context": ["https://www.w3.org/ns/credentials/v2"], "type": ["VerifiableCredential"],
          "issuer": issuer.did, "validFrom": "2026-01-01T00:00:00Z", "validUntil": "2028-01-01T00:00:00Z",
          "credentialSubject": {"id": "did:example:me", "age_over_18": True}}
    seeds = [(issuer, jwt.encode(p, issuer.private_key, algorithm="EdDSA", headers={"kid": issuer.kid}))
             for p in (v1, v2)]
    for _, t in seeds:
        check_vc_jwt(t, now=NOW, trusted_issuers=[issuer.did])

    def run(token: bytes) -> None:
        try:
            check_vc_jwt(token.decode("latin-1"), now=NOW, trusted_issuers=[issuer.did])
        except ClaimError:
            pass

    target = Target(lambda n: token_case(seeds, n), run)
    given(st.integers(0, 2 ** 63))(FUZZ(lambda n: fuzz_and_trace(target, n)))()
    assert_memory_flat(target)


@pytest.mark.slow
def test_control_request_line():
    """The control socket's request line (daemon/sockets.parse_request): MarketError only."""
    seeds = [b'{"op": "status"}\n', b'{"op": "offers", "args": {"intent": "abc"}}\n',
             b'{"op": "accept", "args": {"offer": "x", "fields": ["email"]}}\n', b'{"op": "subscribe"}\n']

    def case(n: int) -> bytes:
        rng = random.Random(n)
        mode = rng.random()
        if mode < 0.1:
            return rng.randbytes(rng.randrange(0, 200))
        if mode < 0.12:
            return b"[" * rng.randrange(1000, MAX_REQUEST)
        if mode < 0.6:
            return mutate_bytes(rng.choice(seeds), rng)
        return dump(mutate_json(json.loads(rng.choice(seeds)), rng, ["op", "args", "intent"]), rng)

    def run(line: bytes) -> None:
        try:
            op, args = parse_request(line)
        except MarketError:
            return
        assert isinstance(op, str) and isinstance(args, dict)

    target = Target(case, run)
    given(st.integers(0, 2 ** 63))(FUZZ(lambda n: fuzz_and_trace(target, n)))()
    assert_memory_flat(target)


@pytest.mark.slow
def test_hardware_profile_files(tmp_path):
    """load_profile on TOML files (the shipped profiles, mutated) and parse_profile on mutated
    tables: ProfileError only."""
    seeds = [p.read_bytes() for p in sorted(PROFILE_DIR.glob("*.toml"))]
    tables = [tomllib.loads(s.decode()) for s in seeds]
    keys = keys_of(tables)
    path = tmp_path / "board.toml"

    def case(n: int) -> tuple[str, Any]:
        rng = random.Random(n)
        mode = rng.random()
        if mode < 0.4:
            return "file", mutate_bytes(rng.choice(seeds), rng)
        if mode < 0.7:
            return "file", to_toml(mutate_json(rng.choice(tables), rng, keys)).encode("utf-8", "surrogatepass")
        return "table", mutate_json(rng.choice(tables), rng, keys)

    def run(c: tuple[str, Any]) -> None:
        kind, data = c
        try:
            if kind == "file":
                path.write_bytes(data)
                load_profile(path)
            elif isinstance(data, dict):
                parse_profile(data, "fuzz")
        except ProfileError:
            pass

    target = Target(case, run)
    given(st.integers(0, 2 ** 63))(FUZZ(lambda n: fuzz_and_trace(target, n)))()
    assert_memory_flat(target)


# ------------------------------------------------------------------------------ the vendor kit
CATALOGUE = {"currency": "EUR", "region": "GB-LND", "accept_terms": ["vrm-basic-1"], "offer_validity_s": 3600,
             "items": [{"category": "bikes", "name": "City bike", "sku": "BK-1", "price": 400, "delivery_days": 3,
                        "attributes": {"gears": 8}}]}


@pytest.mark.slow
def test_vendor_kit_receive(tmp_path):
    """What a vendor worker receives (VendorWorker._dispatch: verify, unseal, then the vendor_kit
    core handlers) on every topic it listens to: ProtocolError only."""
    ident = VendorIdentity.generate("acme", "Acme Bikes", ["bikes"])
    box = Identity.generate()
    with Ledger(tmp_path / LEDGER_FILE) as led:
        w = VendorWorker(ident, parse_catalogue(json.loads(json.dumps(CATALOGUE))), led,
                         BrokerSettings(host="127.0.0.1", port=1, client_id="fuzz"), clock=lambda: NOW)
        intent_id = "intent-0001-fuzz"
        intent = sign(box, Intent(intent=intent_id, category="bikes", terms=TERMS, attributes={"budget_max": 900}),
                      now=NOW, ttl=3600, msg_id=intent_id)
        [answer] = [o for o in w._dispatch(topics.intent("bikes", intent_id), intent.encode())
                    if topics.parse_box_topic(o.topic)]
        offer = answer.token
        agreement = sign(box, Agreement(intent=intent_id, offer=unverified_payload(offer)["id"],
                                        offer_hash=token_hash(offer), vendor="acme", vendor_did=ident.did,
                                        terms=TERMS, fields=["email"], purpose="delivery", duration_days=30),
                         now=NOW, ttl=3600)
        agreement_id = unverified_payload(agreement)["id"]
        jwe = encrypt_json({"agreement": agreement_id, "fields": {"email": "pat@example.org"}}, ident.enc_key)
        seeds = [  # (topic, signer, signed token, sealed?)
            (topics.intent("bikes", intent_id), box, intent, False),
            (topics.withdrawal("bikes", intent_id), box,
             sign(box, IntentWithdrawal(intent=intent_id, category="bikes"), now=NOW, ttl=3600), False),
            (topics.agreements("acme"), box, agreement, True),
            (topics.disclosures("acme"), box,
             sign(box, Disclosure(agreement=agreement_id, intent=intent_id, jwe=jwe), now=NOW, ttl=3600), False),
            (topics.revocations("acme"), box,
             sign(box, Revocation(agreement=agreement_id, intent=intent_id, delete=True), now=NOW, ttl=3600), True),
            (topics.receipt("bikes", intent_id), box,
             sign(box, Receipt(intent=intent_id, category="bikes", offers=[token_hash(offer)] * 8), now=NOW,
                  ttl=3600), False),
        ]

        def case(n: int) -> tuple[str, bytes]:
            rng = random.Random(n)
            topic, signer, token, sealed = rng.choice(seeds)
            inner = token_case([(signer, token)], n)
            if sealed and rng.random() < 0.7:
                inner = seal(inner.decode("latin-1"), ident.enc_key).encode() if inner.isascii() else inner
            return topic, inner

        def run(c: tuple[str, bytes]) -> None:
            expect_protocol_error(lambda: w._dispatch(*c))

        target = Target(case, run)
        given(st.integers(0, 2 ** 63))(FUZZ(lambda n: fuzz_and_trace(target, n)))()
        assert_memory_flat(target)


# ------------------------------------------------------------------------------ regressions
@pytest.mark.parametrize("segment", ["AAAA\n", "AAA\n", "eyJhIjoxfQ\n", "AAAA\r\n"])
def test_a_base64url_segment_with_a_trailing_newline_is_bad_encoding(segment):
    """`$` in the alphabet check let a trailing newline through to the decoder (refused there
    only by the padding arithmetic); the check itself refuses it now (\\Z)."""
    with pytest.raises(ProtocolError) as err:
        b64url_decode(segment)
    assert err.value.reason == "bad_encoding"


def test_a_token_ending_in_a_newline_is_refused_before_anything_is_decoded(protocol_seeds):
    _, token = protocol_seeds["tokens"][0]
    with pytest.raises(ProtocolError) as err:
        verify(token + "\n", now=NOW)
    assert (err.value.reason, err.value.detail) == ("bad_encoding", "segments are unpadded base64url")


@pytest.mark.parametrize("line, message", [
    (b"[" * (MAX_REQUEST + 1), "request too large"),
    (b"\xff\xfe{}\n", "request is not JSON"),
    (b"[" * 100_000, "request is not JSON"),
    (b'{"op": 1}\n', "request must be"),
    (b'{"op": "offers", "args": [1]}\n', "args must be an object"),
])
def test_control_request_line_refusals(line, message):
    with pytest.raises(MarketError, match=message):
        parse_request(line)


@pytest.mark.parametrize("field, value", [("intent", "abcdefgh\n"), ("category", "bikes\n"),
                                          ("offers", ["A" * 43 + "\n"])])
def test_an_id_slug_or_hash_ending_in_a_newline_is_refused(field, value):
    """From a review: `$` in the field patterns let one trailing newline through."""
    fields = {"intent": "abcdefgh", "category": "bikes", "offers": ["A" * 43]}
    Receipt(**fields).check()
    with pytest.raises(ProtocolError):
        Receipt(**{**fields, field: value}).check()
