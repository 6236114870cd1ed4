"""Vendor kit units: identity files, catalogue validation and pricing, pure core handlers,
the SQLite ledger (idempotent claims, real deletion), and the worker's never-crash dispatch."""
from __future__ import annotations

import json
import logging
import stat
import threading
import time
from pathlib import Path

import pytest

from vrm_protocol import (Agreement, Countersignature, Disclosure, Identity, Intent, IntentWithdrawal, Offer,
                          ProtocolError, Revocation, RevocationAck, Terms, encrypt_json, new_id, sign, token_hash,
                          seal, topics, verify)
from vendor_kit import core
from vendor_kit.catalogue import (Catalogue, CatalogueError, CatalogueItem, Condition, Rule, offers_for,
                                  parse_catalogue, price_for)
from vendor_kit.cli import main as cli_main
from vendor_kit.identity import IdentityError, VendorIdentity
from vendor_kit.ledger import LEDGER_FILE, Ledger
from vendor_kit.worker import BrokerSettings, VendorWorker

NOW = 1_800_000_000.0
TERMS = Terms(id="vrm-basic-1", sha256=token_hash("terms text"))
CATALOGUE = {
    "currency": "EUR",
    "region": "GB-LND",
    "accept_terms": ["vrm-basic-1"],
    "offer_validity_s": 3600,
    "items": [
        {"category": "bikes", "name": "City bike", "sku": "BK-1", "price": 400, "delivery_days": 3,
         "attributes": {"gears": 8}},
        {"category": "bikes", "name": "E-bike", "sku": "BK-2", "price": 1500},
        {"category": "tents", "name": "Dome", "sku": "TN-1", "price": 150},
    ],
    "rules": [{"when": {"attribute": "budget_max", "lte": 500}, "discount_percent": 10}],
}


# ------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def vendor() -> VendorIdentity:
    return VendorIdentity.generate("acme", "Acme Bikes", ["bikes", "tents"])


@pytest.fixture
def catalogue() -> Catalogue:
    return parse_catalogue(json.loads(json.dumps(CATALOGUE)))


def make_intent(box: Identity, *, category="bikes", terms=TERMS, attributes=None, now=NOW):
    intent_id = new_id()
    body = Intent(intent=intent_id, category=category, terms=terms, description="a bike",
                  attributes=attributes if attributes is not None else {"budget_max": 2000, "currency": "EUR"})
    token = sign(box, body, now=now, ttl=3600, msg_id=intent_id)
    return verify(token, now=now, expect=Intent), topics.intent(category, intent_id)


def make_agreement(box: Identity, offer: core.OfferRecord, vendor: VendorIdentity, *, fields=("name", "email"),
                   offer_hash=None, vendor_slug=None, terms=TERMS):
    body = Agreement(intent=offer.intent, offer=offer.id, offer_hash=offer_hash or offer.hash,
                     vendor=vendor_slug or vendor.vendor, vendor_did=vendor.did, terms=terms, fields=list(fields),
                     purpose="delivery", duration_days=30)
    return verify(sign(box, body, now=NOW, ttl=3600), now=NOW, expect=Agreement)


def answered(vendor, catalogue, box, **kw):
    msg, topic = make_intent(box, **kw)
    return core.answer_intent(msg, topic, vendor, catalogue, NOW)


def agreed(vendor, catalogue):
    box = Identity.generate()
    answer = answered(vendor, catalogue, box)
    offer = answer.offers[0]
    agreement = core.countersign(make_agreement(box, offer, vendor), vendor, offer, NOW)
    return box, answer, offer, agreement


def disclosure_msg(box, agreement_id, intent, vendor, fields):
    jwe = encrypt_json({"agreement": agreement_id, "fields": fields}, vendor.enc_key)
    token = sign(box, Disclosure(agreement=agreement_id, intent=intent, jwe=jwe), now=NOW, ttl=3600)
    return verify(token, now=NOW, expect=Disclosure)


def revocation_msg(box, agreement_id, intent, delete=True):
    token = sign(box, Revocation(agreement=agreement_id, intent=intent, delete=delete, reason="done"),
                 now=NOW, ttl=3600)
    return verify(token, now=NOW, expect=Revocation)


# ------------------------------------------------------------------------------------ identity
def test_identity_create_load_roundtrip_and_file_modes(tmp_path):
    d = tmp_path / "v"
    made = VendorIdentity.create(d, "acme", "Acme", ["bikes"], url="https://acme.example")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for f in d.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    loaded = VendorIdentity.load(d)
    assert (loaded.did, loaded.enc_key, loaded.categories, loaded.url) == \
           (made.did, made.enc_key, ("bikes",), "https://acme.example")
    assert loaded.signing.seed == made.signing.seed


def test_identity_refuses_overwrite_and_bad_metadata(tmp_path):
    d = tmp_path / "v"
    first = VendorIdentity.create(d, "acme", "Acme", ["bikes"])
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        VendorIdentity.create(d, "acme", "Acme", ["bikes"])
    assert VendorIdentity.load(d).did == first.did
    with pytest.raises(IdentityError, match="slug"):
        VendorIdentity.create(tmp_path / "w", "Acme Inc", "Acme", ["bikes"])
    with pytest.raises(IdentityError, match="no vendor identity"):
        VendorIdentity.load(tmp_path / "missing")


def test_identity_load_detects_swapped_key(tmp_path):
    a = tmp_path / "a"
    VendorIdentity.create(a, "acme", "Acme", ["bikes"])
    VendorIdentity.create(tmp_path / "b", "acme", "Acme", ["bikes"])
    (a / "signing.seed").unlink()
    (a / "signing.seed").write_bytes((tmp_path / "b" / "signing.seed").read_bytes())
    with pytest.raises(IdentityError, match="does not match the did"):
        VendorIdentity.load(a)


def test_cli_init_json_and_refusal(tmp_path, capsys):
    d = tmp_path / "v"
    assert cli_main(["init", "--dir", str(d), "--vendor", "acme", "--name", "Acme", "--categories",
                     "bikes, tents", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ident = VendorIdentity.load(d)
    assert out == {"vendor": "acme", "did": ident.did, "enc_key": ident.enc_key.as_jwk()}
    assert ident.categories == ("bikes", "tents")
    assert cli_main(["init", "--dir", str(d), "--vendor", "acme", "--name", "Acme", "--categories", "bikes"]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert VendorIdentity.load(d).did == ident.did


# ------------------------------------------------------------------------------------ catalogue
def _broken(**changes):
    data = json.loads(json.dumps(CATALOGUE))
    for path, value in changes.items():
        target = data
        *parents, last = path.split("__")
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return data


@pytest.mark.parametrize("changes, message", [
    ({"currency": KeyError}, "catalogue: field 'currency' is required"),
    ({"currency": "euro"}, "catalogue: field 'currency' 'euro'"),
    ({"items__1__price": KeyError}, "items[1] (sku 'BK-2'): field 'price' is required"),
    ({"items__1__price": -5}, "items[1] (sku 'BK-2'): field 'price' must be >= 0"),
    ({"items__1__price": "cheap"}, "items[1] (sku 'BK-2'): field 'price' must be a number"),
    ({"items__0__prise": 3}, "items[0] (sku 'BK-1'): unknown field(s) prise"),
    ({"items__2__sku": "BK-1"}, "items[2] (sku 'BK-1'): field 'sku' 'BK-1' is used by an earlier item"),
    ({"items__0__category": "Bikes!"}, "items[0] (sku 'BK-1'): field 'category' 'Bikes!'"),
    ({"items__0__delivery_days": 1.5}, "items[0] (sku 'BK-1'): field 'delivery_days'"),
    ({"items__0__attributes": {"x": {"nested": 1}}}, "items[0] (sku 'BK-1'): attributes.x"),
    ({"items__1__name": KeyError}, "items[1] (sku 'BK-2'): field 'name' is required"),
    ({"items": []}, "catalogue: field 'items' must be a non-empty list"),
    ({"accept_terms": "all"}, "field 'accept_terms'"),
    ({"offer_validity_s": 5}, "field 'offer_validity_s'"),
    ({"rules__0__when": {"attribute": "budget_max", "lte": 5, "gte": 1}}, "rules[0].when: needs exactly one operator"),
    ({"rules__0__when": {"attribute": "budget_max", "lte": "five"}}, "rules[0].when: operator 'lte' needs a number"),
    ({"rules__0__discount_percent": 150}, "rules[0]: field 'discount_percent' must be <= 100"),
    ({"rules__0__discount_percent": KeyError}, "rules[0]: needs 'discount_percent' and/or 'add'"),
])
def test_catalogue_validation_names_entry_and_field(changes, message):
    with pytest.raises(CatalogueError) as err:
        parse_catalogue(_broken(**changes))
    assert message in str(err.value)


def test_catalogue_loads_yaml_json_and_example(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(CATALOGUE))
    assert Catalogue.load(tmp_path / "c.json") == parse_catalogue(CATALOGUE)
    example = Catalogue.load(Path(__file__).parent.parent / "examples" / "catalogue.yaml")
    assert example.currency == "EUR" and len(example.items) == 3 and example.accepts("vrm-basic-1")
    (tmp_path / "bad.yaml").write_text("currency: EUR\nitems: [\n")
    with pytest.raises(CatalogueError, match="not valid YAML"):
        Catalogue.load(tmp_path / "bad.yaml")
    with pytest.raises(CatalogueError, match="cannot read"):
        Catalogue.load(tmp_path / "nope.yaml")


# ------------------------------------------------------------------------------------ pricing
BIKE = CatalogueItem(category="bikes", name="Bike", sku="B", price=100.0)


def test_price_rules_apply_in_order():
    discount = Rule(Condition("budget_max", "lte", 500), discount_percent=10)
    surcharge = Rule(Condition("postcode_district", "prefix", "SW"), add=5)
    attrs = {"budget_max": 500, "postcode_district": "sw1a"}
    assert price_for(BIKE, attrs, [discount, surcharge]) == 95.0       # 100*0.9 + 5
    assert price_for(BIKE, attrs, [surcharge, discount]) == 94.5       # (100+5)*0.9
    assert price_for(BIKE, {"budget_max": 501, "postcode_district": "N1"}, [discount, surcharge]) == 100.0
    assert price_for(BIKE, {}, [discount, surcharge]) == 100.0          # absent attribute: no match
    assert price_for(BIKE, {"budget_max": "500"}, [discount]) == 100.0  # a string is not a number


def test_price_rule_category_limit_floor_and_rounding():
    tents_only = Rule(Condition("season", "in", ["winter"]), discount_percent=50, category="tents")
    assert price_for(BIKE, {"season": "winter"}, [tents_only]) == 100.0
    tent = CatalogueItem(category="tents", name="T", sku="T", price=99.99)
    assert price_for(tent, {"season": "winter"}, [tents_only]) == 50.0  # 49.995 rounded
    assert price_for(BIKE, {"x": 1}, [Rule(Condition("x", "eq", 1), add=-500)]) == 0.0


def test_offers_respect_category_and_budget(catalogue):
    box = Identity.generate()
    msg, _ = make_intent(box, attributes={"budget_max": 500, "currency": "EUR"})
    assert [(i.sku, p) for i, p in offers_for(catalogue, msg.body)] == [("BK-1", 360.0)]
    msg, _ = make_intent(box, attributes={"budget_max": 500, "currency": "USD"})  # other currency: no cut
    assert [i.sku for i, _ in offers_for(catalogue, msg.body)] == ["BK-1", "BK-2"]
    msg, _ = make_intent(box, attributes={})
    assert [i.sku for i, _ in offers_for(catalogue, msg.body)] == ["BK-1", "BK-2"]


# ------------------------------------------------------------------------------------ core: intents
def test_answer_intent_signs_verifiable_offers(vendor, catalogue):
    box = Identity.generate()
    answer = answered(vendor, catalogue, box)
    assert answer.intent.status == "answered" and answer.intent.signer == box.did
    assert [o.sku for o in answer.offers] == ["BK-1", "BK-2"]
    for rec in answer.offers:
        out = rec.outgoing()
        assert out.topic == topics.offers(answer.intent.intent)
        offer = verify(out.token, now=NOW, expect=Offer)
        assert offer.envelope.iss == vendor.did and offer.id == rec.id
        assert offer.envelope.exp == offer.body.valid_until == int(NOW) + 3600
        assert offer.body.terms_response.decision == "accept"
        assert offer.body.terms_response.sha256 == TERMS.sha256
        assert offer.body.currency == "EUR" and offer.body.region == "GB-LND"
    assert verify(answer.offers[0].token, now=NOW).body.item.attributes == {"gears": 8}


def test_unaccepted_terms_get_explicit_rejection(vendor, catalogue):
    other = Terms(id="take-everything-1", sha256=token_hash("x"))
    answer = answered(vendor, catalogue, Identity.generate(), terms=other)
    assert answer.offers and {verify(o.token, now=NOW).body.terms_response.decision for o in answer.offers} == {"reject"}


def test_intent_on_wrong_topic_or_category_refused(vendor, catalogue):
    box = Identity.generate()
    msg, _ = make_intent(box)
    with pytest.raises(ProtocolError, match="another topic"):
        core.answer_intent(msg, topics.intent("bikes", new_id()), vendor, catalogue, NOW)
    msg, topic = make_intent(box, category="cars")
    with pytest.raises(ProtocolError, match="not one of ours"):
        core.answer_intent(msg, topic, vendor, catalogue, NOW)


def test_intent_withdrawn_before_arrival_gets_no_offers(vendor, catalogue):
    box = Identity.generate()
    msg, topic = make_intent(box)
    assert core.answer_intent(msg, topic, vendor, catalogue, NOW, withdrawn_by=box.did).offers == ()
    # a withdrawal by someone else's key changes nothing
    answer = core.answer_intent(msg, topic, vendor, catalogue, NOW, withdrawn_by=Identity.generate().did)
    assert answer.intent.status == "answered" and len(answer.offers) == 2


def test_withdrawal_must_come_from_intent_key(vendor, catalogue):
    box = Identity.generate()
    answer = answered(vendor, catalogue, box)
    i = answer.intent
    body = IntentWithdrawal(intent=i.intent, category=i.category)
    stranger = verify(sign(Identity.generate(), body, now=NOW, ttl=60), now=NOW)
    with pytest.raises(ProtocolError) as err:
        core.accept_withdrawal(stranger, topics.withdrawal(i.category, i.intent), i, NOW)
    assert err.value.reason == "key_mismatch"
    ok = verify(sign(box, body, now=NOW, ttl=60), now=NOW)
    assert core.accept_withdrawal(ok, topics.withdrawal(i.category, i.intent), i, NOW).signer == box.did


# ------------------------------------------------------------------------------------ core: agreements
def test_countersign_valid_agreement(vendor, catalogue):
    box, answer, offer, agreement = agreed(vendor, catalogue)
    cs = verify(agreement.countersignature.token, now=NOW, expect=Countersignature)
    assert cs.envelope.iss == vendor.did
    assert cs.body.agreement == agreement.id and cs.body.intent == offer.intent
    assert agreement.countersignature.topic == topics.countersignatures(offer.intent)
    assert agreement.fields == ("name", "email") and agreement.signer == box.did


def test_agreement_with_wrong_offer_hash_refused(vendor, catalogue):
    box = Identity.generate()
    offer = answered(vendor, catalogue, box).offers[0]
    msg = make_agreement(box, offer, vendor, offer_hash=token_hash("another offer"))
    with pytest.raises(ProtocolError, match="offer_hash does not match") as err:
        core.countersign(msg, vendor, offer, NOW)
    assert err.value.reason == "bad_field"


def test_agreement_for_wrong_vendor_refused(vendor, catalogue):
    box = Identity.generate()
    offer = answered(vendor, catalogue, box).offers[0]
    with pytest.raises(ProtocolError, match="addressed to vendor other"):
        core.countersign(make_agreement(box, offer, vendor, vendor_slug="other"), vendor, offer, NOW)
    impostor = VendorIdentity.generate("acme", "Acme", ["bikes"])  # same slug, other key
    with pytest.raises(ProtocolError, match="addressed to vendor acme"):
        core.countersign(make_agreement(box, offer, impostor), vendor, offer, NOW)


def test_agreement_from_wrong_signer_refused(vendor, catalogue):
    box = Identity.generate()
    offer = answered(vendor, catalogue, box).offers[0]
    with pytest.raises(ProtocolError, match="not signed by the key that signed the intent") as err:
        core.countersign(make_agreement(Identity.generate(), offer, vendor), vendor, offer, NOW)
    assert err.value.reason == "key_mismatch"


def test_agreement_on_unknown_or_rejected_or_expired_offer_refused(vendor, catalogue):
    box = Identity.generate()
    offer = answered(vendor, catalogue, box).offers[0]
    with pytest.raises(ProtocolError, match="never sent"):
        core.countersign(make_agreement(box, offer, vendor), vendor, None, NOW)
    with pytest.raises(ProtocolError, match="expired"):
        core.countersign(make_agreement(box, offer, vendor), vendor, offer, NOW + 7200)
    other = Terms(id="take-everything-1", sha256=token_hash("x"))
    rejected = answered(vendor, catalogue, box, terms=other).offers[0]
    with pytest.raises(ProtocolError, match="rejected terms"):
        core.countersign(make_agreement(box, rejected, vendor, terms=other), vendor, rejected, NOW)
    with pytest.raises(ProtocolError, match="terms differ"):
        core.countersign(make_agreement(box, offer, vendor, terms=other), vendor, offer, NOW)


# ------------------------------------------------------------------------------------ core: disclosures
def test_disclosure_decrypted_within_agreement(vendor, catalogue):
    box, _, offer, agreement = agreed(vendor, catalogue)
    msg = disclosure_msg(box, agreement.id, offer.intent, vendor, {"name": "Alice"})
    rec = core.open_disclosure(msg, vendor, agreement, NOW)
    assert rec.fields == {"name": "Alice"} and rec.agreement == agreement.id
    assert "Alice" not in repr(rec)


def test_disclosure_with_fields_outside_agreement_refused(vendor, catalogue):
    box, _, offer, agreement = agreed(vendor, catalogue)
    msg = disclosure_msg(box, agreement.id, offer.intent, vendor, {"name": "Alice", "phone": "+44 1"})
    with pytest.raises(ProtocolError, match="outside the agreement: phone"):
        core.open_disclosure(msg, vendor, agreement, NOW)


def test_disclosure_refusals(vendor, catalogue):
    box, _, offer, agreement = agreed(vendor, catalogue)
    stranger = disclosure_msg(Identity.generate(), agreement.id, offer.intent, vendor, {"name": "A"})
    with pytest.raises(ProtocolError, match="not signed by the agreement's key"):
        core.open_disclosure(stranger, vendor, agreement, NOW)
    with pytest.raises(ProtocolError, match="not countersigned"):
        core.open_disclosure(disclosure_msg(box, agreement.id, offer.intent, vendor, {}), vendor, None, NOW)
    mixed = disclosure_msg(box, agreement.id, offer.intent, vendor, {"name": "A"})
    other_vendor = VendorIdentity.generate("acme", "Acme", ["bikes"])
    with pytest.raises(ProtocolError) as err:
        core.open_disclosure(mixed, other_vendor, agreement, NOW)    # not encrypted to this key
    assert err.value.reason == "bad_encryption"
    jwe = encrypt_json({"agreement": token_hash("other"), "fields": {}}, vendor.enc_key)
    swapped = verify(sign(box, Disclosure(agreement=agreement.id, intent=offer.intent, jwe=jwe), now=NOW, ttl=60),
                     now=NOW)
    with pytest.raises(ProtocolError, match="encrypted agreement id differs"):
        core.open_disclosure(swapped, vendor, agreement, NOW)
    revoked = core.AgreementRecord(**{**agreement.__dict__, "revoked_at": int(NOW)})
    with pytest.raises(ProtocolError, match="revoked"):
        core.open_disclosure(mixed, vendor, revoked, NOW)


def test_revocation_ack(vendor, catalogue):
    box, _, offer, agreement = agreed(vendor, catalogue)
    msg = revocation_msg(box, agreement.id, offer.intent)
    rec = core.acknowledge_revocation(msg, vendor, agreement, NOW)
    ack = verify(rec.ack.token, now=NOW, expect=RevocationAck)
    assert ack.envelope.iss == vendor.did and ack.body.revocation == msg.id and ack.body.deleted is True
    assert rec.ack.topic == topics.revocation_acks(offer.intent)
    with pytest.raises(ProtocolError, match="not signed"):
        core.acknowledge_revocation(revocation_msg(Identity.generate(), agreement.id, offer.intent), vendor,
                                    agreement, NOW)


# ------------------------------------------------------------------------------------ ledger
def test_intent_claimed_once_across_connections_and_reopen(tmp_path, vendor, catalogue):
    answer = answered(vendor, catalogue, Identity.generate())
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def claim(n: int) -> None:
        with Ledger(tmp_path / LEDGER_FILE, client_id=f"w{n}") as led:
            barrier.wait()
            results.append(led.claim_intent(answer, int(NOW)))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [False, False, False, True]
    with Ledger(tmp_path / LEDGER_FILE) as led:
        assert not led.claim_intent(answer, int(NOW))
        assert len(led.list_offers()) == 2 and led.list_intents()[0]["status"] == "answered"
        assert led.offer(answer.offers[0].id) == answer.offers[0]
        assert {o.msg_id for o in led.unsent(int(NOW), grace_s=0)} == {o.id for o in answer.offers}
        led.mark_sent(answer.offers[0].id, int(NOW))
        assert {o.msg_id for o in led.unsent(int(NOW), grace_s=0)} == {answer.offers[1].id}


def test_many_processes_opening_a_new_ledger_at_once(tmp_path):
    """Workers started together all open a fresh ledger; switching to WAL must not fail one."""
    import subprocess
    import sys
    code = ("import sys, time; from vendor_kit.ledger import Ledger\n"
            "time.sleep(max(0, float(sys.argv[1]) - time.time()))\n"   # all start together, after imports
            "for p in sys.argv[2:]: Ledger(p).close()")
    paths = [str(tmp_path / f"l{i}.sqlite") for i in range(15)]
    start = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", code, start, *paths], cwd=Path(__file__).parent.parent,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=30)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    with Ledger(paths[0]) as led:
        assert led.list_intents() == []


def test_withdrawal_before_intent_is_remembered(tmp_path, vendor, catalogue):
    box = Identity.generate()
    msg, topic = make_intent(box)
    with Ledger(tmp_path / LEDGER_FILE) as led:
        w = core.WithdrawalRecord(msg.body.intent, "bikes", box.did, int(NOW))
        led.record_withdrawal(w)
        assert led.withdrawal_signer(msg.body.intent) == box.did
        answer = core.answer_intent(msg, topic, vendor, catalogue, NOW, led.withdrawal_signer(msg.body.intent))
        assert led.claim_intent(answer, int(NOW)) and led.list_offers() == []


def test_revocation_with_delete_removes_data_from_the_files(tmp_path, vendor, catalogue):
    box, _, offer, agreement = agreed(vendor, catalogue)
    secret = "Alice Q. Uniquename-7731"
    path = tmp_path / LEDGER_FILE
    with Ledger(path) as led:
        led.claim_intent(core.IntentAnswer(core.IntentRecord(offer.intent, "bikes", box.did, TERMS.id,
                                                             TERMS.sha256, {}, int(NOW), "answered"),
                                           (offer,)), int(NOW))
        led.store_agreement(agreement, int(NOW))
        rec = core.open_disclosure(disclosure_msg(box, agreement.id, offer.intent, vendor, {"name": secret}),
                                   vendor, led.agreement(agreement.id), NOW)
        assert led.store_disclosure(rec)
        assert led.list_disclosures()[0]["fields"] == {"name": secret}
        raw = b"".join(p.read_bytes() for p in tmp_path.glob(LEDGER_FILE + "*"))
        assert secret.encode() in raw  # the check below can fail
        rev = core.acknowledge_revocation(revocation_msg(box, agreement.id, offer.intent), vendor,
                                          led.agreement(agreement.id), NOW)
        ack = led.revoke(rev, int(NOW))
        assert led.list_disclosures() == []
        assert led.list_agreements()[0]["deleted"] is True
        assert led.revoke(rev, int(NOW)) == ack          # redelivered: same ack, nothing new
        raw = b"".join(p.read_bytes() for p in tmp_path.glob(LEDGER_FILE + "*"))
        assert secret.encode() not in raw
        # a late disclosure for the revoked agreement is not stored
        assert not led.store_disclosure(rec)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_store_agreement_twice_returns_first_countersignature_and_one_agreement_per_offer(
        tmp_path, vendor, catalogue):
    box, answer, offer, agreement = agreed(vendor, catalogue)
    with Ledger(tmp_path / LEDGER_FILE) as led:
        led.claim_intent(answer, int(NOW))
        first = led.store_agreement(agreement, int(NOW))
        again = core.countersign(make_agreement(box, offer, vendor), vendor, offer, NOW)  # same offer, new token
        assert led.store_agreement(agreement, int(NOW)) == first
        with pytest.raises(ProtocolError, match="already has an agreement"):
            led.store_agreement(again, int(NOW))
        assert len(led.list_agreements()) == 1
        other = core.countersign(make_agreement(box, answer.offers[1], vendor), vendor, answer.offers[1], NOW)
        assert led.store_agreement(other, int(NOW)) == other.countersignature   # another offer: fine


# ------------------------------------------------------------------------------------ worker shell
def test_worker_handle_never_raises_and_logs_reason(tmp_path, vendor, catalogue, caplog):
    with Ledger(tmp_path / LEDGER_FILE) as led:
        w = VendorWorker(vendor, catalogue, led, BrokerSettings(host="127.0.0.1", port=1, client_id="t"),
                         clock=lambda: NOW)
        caplog.set_level(logging.WARNING)
        w.handle(topics.agreements("acme"), b"not a jws")
        w.handle(topics.intent("bikes", "x" * 10), b"\xff" * 10)
        w.handle(topics.disclosures("acme"), b"a.b.c")
        box = Identity.generate()
        offerless = sign(box, Agreement(intent=new_id(), offer=new_id(), offer_hash=token_hash("x"), vendor="acme",
                                        vendor_did=vendor.did, terms=TERMS, fields=["name"], purpose="p",
                                        duration_days=1), now=NOW, ttl=60)
        w.handle(topics.agreements("acme"), offerless.encode())           # v2: an agreement is sealed
        w.handle(topics.agreements("acme"), seal(offerless, vendor.enc_key).encode())
        w.handle(topics.intent("bikes", "abcdefgh"), b"")   # cleared retained intent: silently ignored
        reasons = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(reasons) == 5
        assert ": bad_encryption: " in reasons[0]                       # not sealed
        assert all(": bad_encoding: " in r for r in reasons[1:3])
        assert ": bad_encryption: " in reasons[3]                       # a plain JWS is not sealed
        assert "bad_field" in reasons[4] and "never sent" in reasons[4]
        assert led.list_agreements() == []


# ------------------------------------------------------------------------------------ review fixes
def _ledger_with_disclosure(path, vendor, catalogue, secret, duration_days=30):
    """A ledger holding one countersigned agreement and its disclosure {"name": secret}."""
    box = Identity.generate()
    answer = answered(vendor, catalogue, box)
    offer = answer.offers[0]
    body = Agreement(intent=offer.intent, offer=offer.id, offer_hash=offer.hash, vendor=vendor.vendor,
                     vendor_did=vendor.did, terms=TERMS, fields=["name"], purpose="delivery",
                     duration_days=duration_days)
    agreement = core.countersign(verify(sign(box, body, now=NOW, ttl=3600), now=NOW, expect=Agreement),
                                 vendor, offer, NOW)
    led = Ledger(path)
    led.claim_intent(answer, int(NOW))
    led.store_agreement(agreement, int(NOW))
    rec = core.open_disclosure(disclosure_msg(box, agreement.id, offer.intent, vendor, {"name": secret}),
                               vendor, led.agreement(agreement.id), NOW)
    assert led.store_disclosure(rec)
    return led, box, answer, agreement


def _file_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.glob(LEDGER_FILE + "*"))


def test_item9_huge_integer_attributes_do_not_crash_pricing(catalogue):
    huge = 10 ** 400   # math.isfinite(huge) raises OverflowError
    assert Condition("budget_max", "lte", 700).matches({"budget_max": huge}) is False
    assert Condition("budget_max", "gte", 700).matches({"budget_max": huge}) is True
    assert Condition("n", "eq", 1).matches({"n": huge}) is False
    intent = Intent(intent=new_id(), category="bikes", terms=TERMS, attributes={"budget_max": huge})
    assert [i.sku for i, _ in offers_for(catalogue, intent)] == ["BK-1", "BK-2"]   # no budget cut
    tiny = Intent(intent=new_id(), category="bikes", terms=TERMS, attributes={"budget_max": -huge})
    assert offers_for(catalogue, tiny) == []
    with pytest.raises(CatalogueError, match="items\\[1\\] \\(sku 'BK-2'\\): field 'price' must be <="):
        parse_catalogue(_broken(items__1__price=huge))
    with pytest.raises(CatalogueError, match="rules\\[0\\]: field 'add' must be <="):
        parse_catalogue(_broken(rules__0__add=huge))
    assert parse_catalogue(_broken(rules__0__when={"attribute": "budget_max", "lte": huge})).rules[0].when.value == huge


@pytest.mark.parametrize("changes, message", [
    ({"items__1__price": 1e16}, "items[1] (sku 'BK-2'): field 'price' must be <= 1000000000000000"),
    ({"rules__0__add": -2e15}, "rules[0]: field 'add' must be >= -1000000000000000"),
    ({"region": "x" * 2001}, "catalogue: field 'region' is longer than 2000"),
    ({"items__0__attributes": {"a": ["y" * 1999] * 60}}, "items[0] (sku 'BK-1'): an offer for this item would"),
    ({"items__0__attributes": {1: "x"}}, "items[0] (sku 'BK-1'): field 'attributes': names must be strings"),
    ({"rules__0__category": "bike"}, "rules[0]: field 'category' 'bike' is not the category of any item"),
])
def test_lesser_catalogue_gaps_are_load_errors(changes, message):
    with pytest.raises(CatalogueError) as err:
        parse_catalogue(_broken(**changes))
    assert message in str(err.value)


def test_lesser_catalogue_non_string_yaml_keys_are_errors(tmp_path):
    (tmp_path / "c.yaml").write_text("currency: EUR\nitems:\n - {category: bikes, name: B, sku: S, price: 1, "
                                     "attributes: {1: x}}\n")
    with pytest.raises(CatalogueError, match="names must be strings"):
        Catalogue.load(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("currency: EUR\n2024-01-01: x\nitems:\n - {category: bikes, name: B, "
                                     "sku: S, price: 1}\n")
    with pytest.raises(CatalogueError, match="unknown field\\(s\\) 2024-01-01"):
        Catalogue.load(tmp_path / "d.yaml")


def test_lesser_offer_priced_past_the_protocol_bound_is_not_made(vendor):
    cat = parse_catalogue({"currency": "EUR", "items": [{"category": "bikes", "name": "B", "sku": "S",
                                                         "price": 9e14}],
                           "rules": [{"when": {"attribute": "x", "eq": 1}, "add": 9e14}]})
    msg, topic = make_intent(Identity.generate(), attributes={"x": 1})
    assert core.answer_intent(msg, topic, vendor, cat, NOW).offers == ()   # 1.8e15: every box would refuse it


def test_lesser_eq_and_in_do_not_confuse_booleans_with_numbers():
    assert not Condition("vip", "eq", 1).matches({"vip": True})
    assert not Condition("vip", "eq", True).matches({"vip": 1})
    assert Condition("vip", "eq", True).matches({"vip": True})
    assert Condition("vip", "ne", 1).matches({"vip": True})
    assert not Condition("k", "in", [0]).matches({"k": False})
    assert Condition("k", "in", [0, False]).matches({"k": False})
    assert Condition("k", "in", [1.0]).matches({"k": 1})                  # 1 and 1.0 are the same number
    assert not Condition("k", "eq", [1, 2]).matches({"k": [True, 2]})


def test_item3_disclosure_after_the_agreed_period_is_refused(vendor, catalogue):
    box, _, offer, agreement = agreed(vendor, catalogue)        # duration_days=30
    late = NOW + 31 * 86400
    token = sign(box, Disclosure(agreement=agreement.id, intent=offer.intent,
                                 jwe=encrypt_json({"agreement": agreement.id, "fields": {"name": "A"}}, vendor.enc_key)),
                 now=late, ttl=3600)
    with pytest.raises(ProtocolError, match="30-day period") as err:
        core.open_disclosure(verify(token, now=late, expect=Disclosure), vendor, agreement, late)
    assert err.value.reason == "expired"


def test_item3_expired_disclosures_are_purged_from_the_files(tmp_path, vendor, catalogue):
    secret = "Expiring Q. Person-5521"
    led, box, answer, agreement = _ledger_with_disclosure(tmp_path / LEDGER_FILE, vendor, catalogue, secret,
                                                          duration_days=2)
    with led:
        assert led.purge_expired(int(NOW) + 86400) == 0                  # still within the period
        assert secret.encode() in _file_bytes(tmp_path)
        assert led.purge_expired(int(NOW) + 2 * 86400 + 1) == 1
        assert led.list_disclosures() == [] and led.list_agreements()[0]["deleted"] is True
        assert secret.encode() not in _file_bytes(tmp_path)
        assert not led.purge_pending()


def test_item2_blocked_checkpoint_neither_stalls_nor_acks_before_the_data_is_gone(tmp_path, vendor, catalogue):
    import sqlite3
    secret = "Blocked Q. Checkpoint-9137"
    led, box, answer, agreement = _ledger_with_disclosure(tmp_path / LEDGER_FILE, vendor, catalogue, secret)
    reader = sqlite3.connect(tmp_path / LEDGER_FILE, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM intents").fetchone()    # an open read transaction pins the WAL
        rev = core.acknowledge_revocation(revocation_msg(box, agreement.id, answer.intent.intent), vendor,
                                          led.agreement(agreement.id), NOW)
        result: list = []
        t = threading.Thread(target=lambda: result.append(led.revoke(rev, int(NOW))), daemon=True)
        started = time.monotonic()
        t.start()
        t.join(5)
        assert not t.is_alive(), "revoke waited for the reader (checkpoint with the 30 s busy timeout)"
        assert time.monotonic() - started < 2
        assert result == [None]                                  # ack held: the data is still in the WAL
        assert led.list_disclosures() == [] and secret.encode() in _file_bytes(tmp_path)
        assert rev.ack.msg_id not in {o.msg_id for o in led.unsent(int(NOW))}
        assert led.purge_pending() and led.purge_wal() is None   # still blocked
        assert led.revoke(rev, int(NOW)) is None                 # a repeat does not leak the ack either
        reader.execute("COMMIT")
    finally:
        reader.close()
    assert led.purge_wal() == [rev.ack]
    assert secret.encode() not in _file_bytes(tmp_path)
    assert not led.purge_pending()
    assert rev.ack.msg_id in {o.msg_id for o in led.unsent(int(NOW))}
    assert led.revoke(rev, int(NOW)) == rev.ack
    led.close()


def test_item4_one_revocation_per_agreement_and_lesser_reused_revocation_id(tmp_path, vendor, catalogue):
    led, box, answer, first = _ledger_with_disclosure(tmp_path / LEDGER_FILE, vendor, catalogue, "Ann")
    with led:
        second_offer = answer.offers[1]
        second = core.countersign(make_agreement(box, second_offer, vendor), vendor, second_offer, NOW)
        led.store_agreement(second, int(NOW))
        led.store_disclosure(core.open_disclosure(disclosure_msg(box, second.id, second_offer.intent, vendor,
                                                                 {"name": "Bob"}), vendor, second, NOW))
        rev_id = new_id()

        def revocation(agreement, msg_id):
            token = sign(box, Revocation(agreement=agreement.id, intent=agreement.intent, delete=True), now=NOW,
                         ttl=3600, msg_id=msg_id)
            return core.acknowledge_revocation(verify(token, now=NOW, expect=Revocation), vendor,
                                               led.agreement(agreement.id), NOW)

        ack = led.revoke(revocation(first, rev_id), int(NOW))
        assert ack is not None
        with pytest.raises(ProtocolError, match="already revoked by revocation"):
            led.revoke(revocation(first, new_id()), int(NOW))       # no second ack for the same agreement
        assert led.revoke(revocation(first, rev_id), int(NOW)) == ack
        # the same revocation id on the other agreement: that one is revoked and deleted too
        other = led.revoke(revocation(second, rev_id), int(NOW))
        assert other is not None and other != ack
        assert verify(other.token, now=NOW).body.agreement == second.id
        assert led.list_disclosures() == []
        assert [a["deleted"] for a in led.list_agreements()] == [True, True]


def test_item4_prune_forgets_expired_rows_but_keeps_agreements(tmp_path, vendor, catalogue):
    led, box, answer, agreement = _ledger_with_disclosure(tmp_path / LEDGER_FILE, vendor, catalogue, "Ann")
    with led:
        for _ in range(3):   # withdrawals for random intent ids, from any key
            led.record_withdrawal(core.WithdrawalRecord(new_id(), "bikes", Identity.generate().did, int(NOW),
                                                        int(NOW) + 60))
        lone = answered(vendor, catalogue, Identity.generate())   # offers nobody agreed to
        led.claim_intent(lone, int(NOW))

        def count(table):
            return led._one(f"SELECT count(*) AS n FROM {table}")["n"]
        assert (count("withdrawals"), count("intents"), count("offers"), count("outbox")) == (3, 2, 4, 5)
        assert led.prune(int(NOW)) == {"withdrawals": 0, "outbox": 0, "offers": 0, "intents": 0}
        later = int(NOW) + 2 * 3600 + 3600    # past every exp (intent 1 h, offers 1 h, withdrawals 60 s)
        counts = led.prune(later)
        assert counts == {"withdrawals": 3, "outbox": 3, "offers": 3, "intents": 1}
        assert led.offer(agreement.offer) is not None and led.intent(agreement.intent) is not None
        assert [a["id"] for a in led.list_agreements()] == [agreement.id]
        assert led.list_offers()[0]["sent"] is False and len(led.list_offers()) == 1


def test_item5_withdrawal_is_checked_inside_the_claim_and_kept_per_signer(tmp_path, vendor, catalogue):
    box, stranger = Identity.generate(), Identity.generate()
    msg, topic = make_intent(box)
    intent_id = msg.body.intent
    with Ledger(tmp_path / LEDGER_FILE) as led:
        answer = core.answer_intent(msg, topic, vendor, catalogue, NOW)   # computed before the withdrawal lands
        assert answer.offers
        led.record_withdrawal(core.WithdrawalRecord(intent_id, "bikes", stranger.did, int(NOW)))
        led.record_withdrawal(core.WithdrawalRecord(intent_id, "bikes", box.did, int(NOW)))
        assert led.claim_intent(answer, int(NOW))
        assert led.list_offers() == [] and led.unsent(int(NOW)) == []
        assert led.list_intents()[0]["status"] == "withdrawn"
        # claim() says what was recorded: withdrawn, so nothing to publish
        msg2, topic2 = make_intent(box)
        led.record_withdrawal(core.WithdrawalRecord(msg2.body.intent, "bikes", box.did, int(NOW)))
        recorded = led.claim(core.answer_intent(msg2, topic2, vendor, catalogue, NOW), int(NOW))
        assert recorded is not None and recorded.intent.status == "withdrawn" and recorded.offers == ()
        # a stranger's withdrawal alone withdraws nothing
        msg3, topic3 = make_intent(box)
        led.record_withdrawal(core.WithdrawalRecord(msg3.body.intent, "bikes", stranger.did, int(NOW)))
        assert led.claim(core.answer_intent(msg3, topic3, vendor, catalogue, NOW), int(NOW)).intent.status == "answered"


def test_ledger_v1_is_migrated(tmp_path, vendor, catalogue):
    import sqlite3
    db = sqlite3.connect(tmp_path / LEDGER_FILE, isolation_level=None)
    db.executescript("""
      CREATE TABLE intents (intent TEXT PRIMARY KEY, category TEXT NOT NULL, signer TEXT NOT NULL,
        terms_id TEXT NOT NULL, terms_sha256 TEXT NOT NULL, attributes TEXT NOT NULL, received_at INTEGER NOT NULL,
        status TEXT NOT NULL, offers INTEGER NOT NULL, client_id TEXT NOT NULL);
      CREATE TABLE withdrawals (intent TEXT PRIMARY KEY, category TEXT NOT NULL, signer TEXT NOT NULL,
        received_at INTEGER NOT NULL);
      CREATE TABLE revocations (id TEXT PRIMARY KEY, agreement TEXT NOT NULL, intent TEXT NOT NULL,
        delete_data INTEGER NOT NULL, reason TEXT, received_at INTEGER NOT NULL, ack_id TEXT NOT NULL,
        ack_topic TEXT NOT NULL, ack_token TEXT NOT NULL, ack_exp INTEGER NOT NULL);
      INSERT INTO withdrawals VALUES ('intent-0001', 'bikes', 'did:key:zA', 1800000000);
      INSERT INTO revocations VALUES ('rev-00001', 'agr', 'intent-0002', 1, NULL, 1800000000, 'ack-0001', 't', 'tok', 1);
      PRAGMA user_version = 1;""")
    db.close()
    with Ledger(tmp_path / LEDGER_FILE) as led:
        assert led.withdrawal_signer("intent-0001") == "did:key:zA"
        assert led.revocation_id("agr") == "rev-00001"
        assert led._one("PRAGMA user_version")[0] == 5   # v1 -> v2 -> v3 (receipts) -> v4 (send order) -> v5 (re-arms)
        box = Identity.generate()
        msg, topic = make_intent(box)
        assert led.claim(core.answer_intent(msg, topic, vendor, catalogue, NOW), int(NOW)).offers


def test_lesser_share_group_name_is_validated():
    for bad in ("a/b", "g+", "#", "", "x" * 65):
        with pytest.raises(ValueError, match="share group"):
            BrokerSettings.from_url("mqtt://localhost:1883", share_group=bad)
    assert BrokerSettings.from_url("mqtt://localhost:1883", share_group="acme-1.b_2").share_group == "acme-1.b_2"


def test_lesser_replay_window_stays_cheap_when_full(vendor, catalogue, tmp_path):
    with Ledger(tmp_path / LEDGER_FILE) as led:
        w = VendorWorker(vendor, catalogue, led, BrokerSettings(host="127.0.0.1", port=1, client_id="t"))
        guard = w._replay
        for n in range(200_000):
            guard.check_and_remember(f"id{n:08d}", int(NOW) + 3600 + n, NOW)
        started = time.monotonic()
        for n in range(300):    # full of unexpired ids: each new one evicts the soonest-expiring
            guard.check_and_remember(f"new{n:08d}", int(NOW) + 7200, NOW)
        assert time.monotonic() - started < 0.5
        assert len(guard) == 200_000 and "new00000299" in guard and "id00000000" not in guard
        with pytest.raises(ProtocolError, match="seen before"):
            guard.check_and_remember("new00000299", int(NOW) + 7200, NOW)
        guard.prune(NOW + 10 ** 6)
        assert len(guard) == 0


def test_item6_share_group_also_reads_retained_intents_with_a_plain_subscription(vendor, catalogue, tmp_path):
    from vendor_kit.worker import SUB_PLAIN, SUB_SHARED
    with Ledger(tmp_path / LEDGER_FILE) as led:
        plain = VendorWorker(vendor, catalogue, led, BrokerSettings(host="127.0.0.1", client_id="t"))
        assert plain._subscription_plan() == [(SUB_PLAIN, [topics.intents("bikes"), topics.withdrawals("bikes"),
                                                           topics.receipts("bikes"),
                                                           topics.intents("tents"), topics.withdrawals("tents"),
                                                           topics.receipts("tents"),
                                                           topics.vendor_inbox("acme")])]
        grouped = VendorWorker(vendor, catalogue, led, BrokerSettings(host="127.0.0.1", client_id="t",
                                                                      share_group="g"))
        plan = dict(grouped._subscription_plan())
        assert plan[SUB_PLAIN] == [topics.intents("bikes"), topics.intents("tents")]
        assert all(t.startswith("$share/g/") for t in plan[SUB_SHARED]) and len(plan[SUB_SHARED]) == 7


def test_item1_request_stop_is_signal_safe(vendor, catalogue, tmp_path):
    """A signal lands while the main thread holds the stop Event's lock (inside wait()): the
    handler must not need that lock."""
    with Ledger(tmp_path / LEDGER_FILE) as led:
        w = VendorWorker(vendor, catalogue, led, BrokerSettings(host="127.0.0.1", port=1, client_id="t"))
        with w._stop._cond:                      # what Event.wait() holds
            done = threading.Event()
            t = threading.Thread(target=lambda: (w.request_stop("test"), done.set()), daemon=True)
            t.start()
            t.join(2)
            assert not t.is_alive(), "request_stop blocked on the Event's lock"
        assert w._stopping()


def test_item1_ledger_waits_are_interruptible_and_close_does_not_hang(tmp_path, vendor, catalogue, monkeypatch):
    import sqlite3

    from vendor_kit import ledger as ledger_module
    met_the_lock = threading.Event()      # a write attempt found the other worker's lock: it waits now
    is_busy = ledger_module._is_busy

    def noticing_busy(exc: sqlite3.OperationalError) -> bool:
        busy = is_busy(exc)
        if busy:
            met_the_lock.set()
        return busy
    monkeypatch.setattr(ledger_module, "_is_busy", noticing_busy)
    path = tmp_path / LEDGER_FILE
    led = Ledger(path)
    met_the_lock.clear()                   # opening the ledger is not the write under test
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")                       # another worker holds the write lock
    answer = answered(vendor, catalogue, Identity.generate())
    errors: list = []

    def claim() -> None:
        try:
            led.claim_intent(answer, int(NOW))
        except sqlite3.OperationalError as exc:
            errors.append(exc)
    t = threading.Thread(target=claim, daemon=True)
    t.start()
    assert met_the_lock.wait(10), "the claim never reached the other worker's lock"
    assert t.is_alive()                                    # waiting, as it should, for the other worker
    started = time.monotonic()
    led.interrupt()
    t.join(2)
    assert not t.is_alive() and time.monotonic() - started < 1
    assert errors and "interrupted" in str(errors[0])
    led.close()
    other.execute("ROLLBACK")
    other.close()
    with Ledger(path) as again:
        assert again.list_intents() == []                  # nothing half-written
