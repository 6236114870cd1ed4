"""The personal data store: contract API, provenance rules, encryption at rest, keys, schema."""
from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import stat
import subprocess
import sys

import pytest

from device import keystore
from device.keystore import DecryptError, KeyFileError
from device.store.migrations import SCHEMA_VERSION, SchemaError
from device.records import ProfileField
from device.store import REJECTION_WINDOW, ProvenanceError, Store, StoreError
from vrm_protocol import (Agreement, Countersignature, EncryptionKey, Identity, Intent, Item, Offer,
                          Revocation, RevocationAck, Terms, TermsResponse, VendorProfile, sign,
                          token_hash, verify)
from vrm_protocol import replay_key
from vrm_protocol.messages import body_to_dict

NOW = 1_800_000_000
SECRET_VALUES = ("Zanzibar-Quokka-4417", "Tasmania-Wombat-9921", "Helsinki-Narwhal-3381",
                 "Lisbon-Axolotl-5512", "Ontario-Pangolin-7734", "Kyoto-Capybara-2298",
                 "Oslo-Tapir-6650")
TERMS = Terms(id="vrm-basic", sha256="A" * 43)


class Clock:
    """A settable clock so time-dependent behaviour is tested without sleeping."""

    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def populate(store: Store) -> dict:
    """Put one of everything in the store; returns ids and keys the tests need."""
    store.set_profile_field("email", "me@" + SECRET_VALUES[0] + ".example")
    store.set_profile_field("loyalty_no", "ACME-123", provenance="co-managed", source="acme-bikes")
    store.set_profile_field("blood_group", "A+", provenance="read-only", source="dr-jones-clinic")
    store.annotate_profile_field("blood_group", "retest said " + SECRET_VALUES[1])
    store.set_setting("box_id", "box-0123456789abcdef")   # a setting an import carries across
    store.add_stuff("road bike", supplier="acme-bikes", purchase_date="2025-04-01", price=899.0,
                    currency="EUR", warranty_end="2027-04-01", notes=SECRET_VALUES[2])
    store.add_supplier("acme-bikes", "Acme Bikes Ltd", notes=SECRET_VALUES[3])
    store.set_rules({"filters": [{"max_price": 1000}], "note": SECRET_VALUES[4]})

    vendor = Identity.generate()
    vprofile = VendorProfile(vendor="acme-bikes", name="Acme Bikes", categories=["bikes"],
                             enc_key=EncryptionKey(kty="OKP", crv="X25519", x="B" * 43))
    vtoken = sign(vendor, vprofile, now=NOW, ttl=86400)
    assert store.upsert_vendor_profile("acme-bikes", vendor.did, vtoken, body_to_dict(vprofile)) == "new"

    intent_key = Identity.generate()
    intent = Intent(intent="intent-0001", category="bikes", terms=TERMS,
                    description="want a bike " + SECRET_VALUES[5])
    itoken = sign(intent_key, intent, now=NOW, ttl=7 * 86400)
    store.add_intent("intent-0001", "bikes", intent_key.seed, itoken, body_to_dict(intent), NOW + 7 * 86400)

    offer = Offer(intent="intent-0001", vendor="acme-bikes", item=Item(name="Bike"), price=800.0,
                  currency="EUR", valid_until=NOW + 86400,
                  terms_response=TermsResponse(id=TERMS.id, sha256=TERMS.sha256, decision="accept"))
    otoken = sign(vendor, offer, now=NOW, ttl=86400, msg_id="offer-0001")
    assert store.add_offer("offer-0001", "intent-0001", "acme-bikes", vendor.did, otoken,
                           body_to_dict(offer), NOW)
    store.set_offer_status("offer-0001", "accepted")

    agreement = Agreement(intent="intent-0001", offer="offer-0001", offer_hash=token_hash(otoken),
                          vendor="acme-bikes", vendor_did=vendor.did, terms=TERMS,
                          fields=["email"], purpose="delivery " + SECRET_VALUES[6], duration_days=30)
    atoken = sign(intent_key, agreement, now=NOW, ttl=86400)
    aid = token_hash(atoken)
    store.add_agreement(aid, "intent-0001", "offer-0001", "acme-bikes", atoken, body_to_dict(agreement))
    store.set_agreement_status(aid, "confirmed")
    ctoken = sign(vendor, Countersignature(agreement=aid, agreement_hash=aid, intent="intent-0001"), now=NOW, ttl=86400)
    store.add_countersignature(aid, ctoken)
    store.add_disclosure(aid, ["email"], "h.k.iv.ct.tag")
    store.count_rejection("bad_signature", "evil-shop", 3)
    store.add_review("acme-bikes", "fast delivery", rating=5, agreement_id=aid)
    return {"vendor": vendor, "intent_key": intent_key, "agreement_id": aid, "offer_token": otoken}


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    s = Store.open(tmp_path / "box", clock=clock)
    yield s
    s.close()


# ------------------------------------------------------------------ files and keys
def test_open_creates_private_dirs_and_keys(tmp_path):
    d = tmp_path / "box"
    Store.open(d).close()
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "keys").stat().st_mode) == 0o700
    for name in ("data.key", "device.key"):
        assert stat.S_IMODE((d / "keys" / name).stat().st_mode) == 0o600
        assert len((d / "keys" / name).read_bytes()) == 32
    assert stat.S_IMODE((d / "store.db").stat().st_mode) == 0o600
    conn = sqlite3.connect(d / "store.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_device_identity_is_stable_across_opens(tmp_path):
    with Store.open(tmp_path / "box") as s:
        did = s.device_identity.did
    with Store.open(tmp_path / "box") as s:
        assert s.device_identity.did == did


def test_swapped_or_missing_key_file_is_a_clear_error(tmp_path):
    d = tmp_path / "box"
    with Store.open(d) as s:
        s.set_profile_field("name", "Ann")
    original = (d / "keys" / "data.key").read_bytes()
    (d / "keys" / "data.key").write_bytes(os.urandom(32))
    with pytest.raises(KeyFileError, match="does not belong"):
        Store.open(d)
    (d / "keys" / "data.key").unlink()
    with pytest.raises(KeyFileError, match="missing"):
        Store.open(d)
    assert not (d / "keys" / "data.key").exists()  # not silently replaced by a new key
    keystore.write_private_file(d / "keys" / "data.key", original)
    with Store.open(d) as s:
        assert s.get_profile()["name"].value == "Ann"


def test_newer_schema_is_refused(tmp_path):
    d = tmp_path / "box"
    Store.open(d).close()
    conn = sqlite3.connect(d / "store.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError):
        Store.open(d)


# ------------------------------------------------------------------ encryption at rest
def test_no_personal_value_in_raw_database_files(tmp_path, clock):
    d = tmp_path / "box"
    s = Store.open(d, clock=clock)
    populate(s)
    # while open: the WAL holds the recent pages; then after a checkpoint the main file does
    for phase in ("open", "closed"):
        raw = b"".join(p.read_bytes() for p in d.iterdir() if p.name.startswith("store.db"))
        assert len(raw) > 10_000
        for value in SECRET_VALUES:
            assert value.encode() not in raw, (phase, value)
        if phase == "open":
            assert (d / "store.db-wal").exists()
            s.close()
    # the same values do come back through the API
    with Store.open(d, clock=clock) as s:
        assert SECRET_VALUES[0] in s.get_profile()["email"].value
        assert s.list_stuff()[0].notes == SECRET_VALUES[2]
        assert s.get_rules()["note"] == SECRET_VALUES[4]


def test_ciphertext_moved_to_another_row_does_not_decrypt(tmp_path):
    d = tmp_path / "box"
    with Store.open(d) as s:
        s.set_profile_field("a", "alpha")
        s.set_profile_field("b", "beta")
    conn = sqlite3.connect(d / "store.db")
    blob = conn.execute("SELECT value FROM profile WHERE name='a'").fetchone()[0]
    conn.execute("UPDATE profile SET value=? WHERE name='b'", (blob,))
    conn.commit()
    conn.close()
    with Store.open(d) as s:
        with pytest.raises(DecryptError):
            s.get_profile()


# ------------------------------------------------------------------ provenance
def test_read_only_field_cannot_be_edited_or_deleted_only_annotated(store):
    store.set_profile_field("blood_group", "A+", provenance="read-only", source="dr-jones-clinic")
    for prov, src in (("self", None), ("co-managed", "acme-bikes"), ("claim", "x"),
                      ("read-only", "someone-else")):
        with pytest.raises(ProvenanceError):
            store.set_profile_field("blood_group", "B-", provenance=prov, source=src)
    with pytest.raises(ProvenanceError):
        store.delete_profile_field("blood_group")
    store.annotate_profile_field("blood_group", "I was told B-")
    f = store.get_profile()["blood_group"]
    assert (f.value, f.provenance, f.source, f.annotation) == ("A+", "read-only", "dr-jones-clinic",
                                                               "I was told B-")
    # the professional source itself may update it (same source, read-only)
    store.set_profile_field("blood_group", "A-", provenance="read-only", source="dr-jones-clinic")
    assert store.get_profile()["blood_group"].value == "A-"
    assert store.get_profile()["blood_group"].annotation == "I was told B-"


@pytest.mark.slow
def test_read_only_field_cannot_be_edited_through_cli(tmp_path):
    d = tmp_path / "box"
    with Store.open(d) as s:
        s.set_profile_field("blood_group", "A+", provenance="read-only", source="dr-jones-clinic")
    env = {**os.environ, "VRMBOX_DATA_DIR": str(d)}
    out = subprocess.run([sys.executable, "-m", "vrmbox", "profile", "set", "blood_group", "B-",
                          "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1
    assert "read-only" in json.loads(out.stdout)["error"]
    out = subprocess.run([sys.executable, "-m", "vrmbox", "profile", "annotate", "blood_group",
                          "disputed"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    with Store.open(d) as s:
        f = s.get_profile()["blood_group"]
        assert (f.value, f.annotation) == ("A+", "disputed")


def test_co_managed_records_the_vendor_and_claim_needs_a_claim(store):
    with pytest.raises(StoreError):
        store.set_profile_field("loyalty_no", "1", provenance="co-managed")
    store.set_profile_field("loyalty_no", "1", provenance="co-managed", source="acme-bikes")
    assert store.get_profile()["loyalty_no"] == ProfileField("loyalty_no", "1", "co-managed",
                                                             "acme-bikes", None, NOW)
    with pytest.raises(StoreError, match="no verified claim"):
        store.set_profile_field("licence", True, provenance="claim", source="nope")
    last = store.audit.entries()[-1]
    assert last.data == {"field": "loyalty_no", "provenance": "co-managed", "source": "acme-bikes"}


def test_bad_values_change_nothing(store):
    before = store.snapshot(), store.audit.count()
    for args in ((" bad name", 1), ("x", float("nan")), ("x", object()), ("x", 1, "wizard")):
        with pytest.raises(StoreError):
            store.set_profile_field(*args)
    assert (store.snapshot(), store.audit.count()) == before


# ------------------------------------------------------------------ contract API
def test_intents_offers_agreements_round_trip(store, clock):
    ids = populate(store)
    rec = store.get_intent("intent-0001")
    assert rec.identity.did == ids["intent_key"].did
    assert rec.status == "active" and rec.body["category"] == "bikes"
    assert verify(rec.token, now=NOW).body.intent == "intent-0001"
    assert [i.intent_id for i in store.list_intents("active")] == ["intent-0001"]
    store.set_intent_status("intent-0001", "withdrawn")
    assert store.list_intents("active") == []
    assert store.audit.entries()[-1].event_type == "intent_withdrawn"

    assert store.add_offer("offer-0001", "intent-0001", "acme-bikes", "did", ids["offer_token"], {}, NOW) is False
    o = store.get_offer("offer-0001")
    assert (o.status, o.vendor, o.body["price"]) == ("accepted", "acme-bikes", 800.0)
    store.set_offer_status("offer-0001", "snoozed", snooze_until=NOW + 60)
    assert store.get_offer("offer-0001").snooze_until == NOW + 60
    assert store.list_offers(intent_id="intent-0001", status="snoozed")[0].offer_id == "offer-0001"
    seen = dict(store.seen_message_ids(NOW))
    # kept per (intent, signer, id): docs/protocol.md 11.3
    signer = verify(ids["offer_token"], now=NOW).envelope.iss
    assert seen[replay_key("intent-0001", signer, "offer-0001")] == NOW + 86400
    assert store.seen_message_ids(NOW + 10 * 86400) == []

    aid = ids["agreement_id"]
    a = store.get_agreement(aid)
    assert a.status == "active" and a.countersignature and a.body["fields"] == ["email"]
    assert store.list_disclosures(aid)[0].fields == ["email"]
    rtoken = sign(ids["intent_key"], Revocation(agreement=aid, intent="intent-0001", delete=True),
                  now=NOW, ttl=86400)
    store.add_revocation(aid, rtoken, delete=True)
    assert [p.agreement_id for p in store.pending_revocations()] == [aid]
    ack = sign(ids["vendor"], RevocationAck(agreement=aid, intent="intent-0001",
                                            revocation=verify(rtoken, now=NOW).id, deleted=True),
               now=NOW, ttl=86400)
    store.ack_revocation(aid, ack, deleted=True)
    assert store.pending_revocations() == []
    assert store.get_agreement(aid).status == "revoked"
    events = [e.event_type for e in store.audit.entries()]
    for ev in ("intent_published", "intent_withdrawn", "offer_accepted", "agreement_signed",
               "agreement_countersigned", "data_disclosed", "agreement_revoked", "deletion_requested",
               "deletion_acknowledged", "vendor_pinned", "rules_changed"):
        assert ev in events, ev
    disclosed = next(e for e in store.audit.entries() if e.event_type == "data_disclosed")
    assert disclosed.data["fields"] == ["email"] and disclosed.data["vendor"] == "acme-bikes"
    assert disclosed.data["agreement"] == aid
    with pytest.raises(StoreError):
        store.set_agreement_status(aid, "bogus")
    with pytest.raises(StoreError):
        store.add_disclosure("no-such-agreement", ["email"], "t")


def test_vendor_key_change_is_flagged_not_repinned(store):
    populate(store)
    v = store.get_vendor("acme-bikes")
    new = Identity.generate()
    assert store.upsert_vendor_profile("acme-bikes", v.did, "tok2", {"name": "Acme 2"}) == "same"
    assert store.get_vendor("acme-bikes").profile == {"name": "Acme 2"}
    assert store.upsert_vendor_profile("acme-bikes", new.did, "tok3", {"name": "Acme 3"}) == "key_changed"
    n = store.audit.count()
    assert store.upsert_vendor_profile("acme-bikes", new.did, "tok3", {"name": "Acme 3"}) == "key_changed"
    assert store.audit.count() == n  # republication of the same changed key is not re-logged
    v2 = store.get_vendor("acme-bikes")
    assert v2.did == v.did and v2.pending_did == new.did
    store.set_vendor_status("acme-bikes", "blocked")
    assert store.get_vendor("acme-bikes").did == v.did
    store.set_vendor_status("acme-bikes", "trusted")
    assert store.get_vendor("acme-bikes").did == v.did   # trusting never swaps the key
    with pytest.raises(StoreError):
        store.accept_vendor_key("acme-bikes", Identity.generate().did)  # not the key shown
    store.accept_vendor_key("acme-bikes", new.did)
    v3 = store.get_vendor("acme-bikes")
    assert (v3.did, v3.pending_did, v3.status, v3.profile_token) == (new.did, None, "trusted", "tok3")
    assert [x.vendor for x in store.list_vendors()] == ["acme-bikes"]


@pytest.mark.slow
def test_rejection_flood_is_counted_not_logged(store, clock):
    before = store.audit.count()
    for i in range(5000):
        store.count_rejection("bad_signature", "evil-shop")
        store.count_rejection("expired", None)
    assert store.audit.count() == before
    clock.t += REJECTION_WINDOW
    store.count_rejection("bad_signature", "evil-shop")
    new = store.audit.entries(offset=before)
    assert len(new) == 1
    assert new[0].event_type == "offers_rejected"
    assert new[0].data["count"] == 5000 and new[0].data["vendor"] == "evil-shop"
    assert store.flush_rejections() == 2
    counts = {(r, v): c for r, v, c in store.rejection_counts()}
    assert counts == {("bad_signature", "evil-shop"): 5001, ("expired", None): 5000}
    # junk vendor names from the network do not create new pairs
    store.count_rejection("bad_json", "NOT A SLUG/../")
    assert ("bad_json", None) in {(r, v) for r, v, _ in store.rejection_counts()}


def test_settings_stuff_suppliers_reviews_outbox(store):
    assert store.get_setting("missing", 7) == 7
    store.set_setting("companion_only_confirmation", True)
    n = store.audit.count()
    store.set_setting("companion_only_confirmation", True)
    assert store.audit.count() == n
    assert store.get_setting("companion_only_confirmation") is True
    populate(store)
    s = store.list_stuff()[0]
    assert (s.name, s.price, s.warranty_end) == ("road bike", 899.0, "2027-04-01")
    sup = store.list_suppliers()
    assert sup[0].vendor == "acme-bikes" and len(sup[0].agreements) == 1
    assert store.list_reviews()[0].rating == 5
    oid = store.queue_outbox("vrm/v1/x", "payload", retain=True)
    assert [(o.id, o.topic, o.payload, o.retain) for o in store.pending_outbox()] == [
        (oid, "vrm/v1/x", "payload", True)]
    store.mark_sent(oid)
    assert store.pending_outbox() == []


def test_store_is_usable_from_a_second_connection(tmp_path):
    d = tmp_path / "box"
    a, b = Store.open(d), Store.open(d)
    try:
        a.set_profile_field("x", 1)
        b.set_profile_field("y", 2)
        assert set(a.get_profile()) == {"x", "y"}
        assert a.audit.verify().ok and b.audit.verify().count == 2
    finally:
        a.close()
        b.close()


def test_records_are_frozen(store):
    store.set_profile_field("x", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        store.get_profile()["x"].value = 2  # type: ignore[misc]


@pytest.mark.slow
def test_cli_json_commands(tmp_path):
    d = tmp_path / "box"
    run = lambda *a: subprocess.run([sys.executable, "-m", "vrmbox", *a, "--data-dir", str(d),
                                     "--json"], capture_output=True, text=True, timeout=60)
    assert run("stuff", "add", "kettle", "--supplier", "acme-bikes", "--price", "20").returncode == 0
    out = run("stuff", "list")
    assert json.loads(out.stdout)[0]["name"] == "kettle"
    assert run("suppliers", "add", "acme-bikes", "Acme").returncode == 0
    assert json.loads(run("suppliers", "list").stdout)[0]["vendor"] == "acme-bikes"
    assert run("profile", "set", "age", "41", "--json-value").returncode == 0
    assert json.loads(run("profile", "show").stdout)[0]["value"] == 41
    bad = run("suppliers", "add", "Not A Slug", "x")
    assert bad.returncode == 1 and "slug" in json.loads(bad.stdout)["error"]


def test_concurrent_first_opens_agree_on_the_keys(tmp_path):
    """Several threads opening a brand-new box at once end up with one data key and one device key."""
    import threading
    d = tmp_path / "box"
    stores, errors = [], []

    def opener(i):
        try:
            with Store.open(d) as s:  # one Store per thread, closed in its thread
                s.set_profile_field(f"t{i}", i)
                stores.append(s.device_identity.did)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=opener, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(stores) == 6 and len(set(stores)) == 1
    with Store.open(d) as s:
        assert set(s.get_profile()) == {f"t{i}" for i in range(6)}
        assert s.audit.verify().ok


def test_prune_forgets_expired_message_ids_and_old_sent_outbox_rows(tmp_path):
    now = [1_800_000_000]
    s = Store.open(tmp_path / "p", clock=lambda: now[0])
    s.add_offer("offer-id-1", "intent-id-1", "acme", "did:key:z", "a.b.c", {"x": 1}, now[0])
    kept = s.queue_outbox("t/1", "payload")
    sent = s.queue_outbox("t/2", "payload")
    s.mark_sent(sent)
    assert s.prune() == 0
    now[0] += 8 * 86400
    assert s.prune() == 2              # the offer's id (remembered for a day) and the sent row
    assert s.seen_message_ids(0) == []
    assert [r.id for r in s.pending_outbox()] == [kept]
    assert s.get_offer("offer-id-1") is not None   # offers themselves are the person's record
    s.close()


def test_outbox_payloads_are_sealed_at_rest(tmp_path):
    s = Store.open(tmp_path / "o")
    s.queue_outbox("vrm/v1/vendor/acme/agreements", "purpose-deliver-to-my-mothers-house")
    assert [r.payload for r in s.pending_outbox()] == ["purpose-deliver-to-my-mothers-house"]
    s.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "o").glob("store.db*"))
    assert b"mothers-house" not in raw


def test_null_values_are_refused_so_every_export_imports(tmp_path):
    s = Store.open(tmp_path / "n")
    with pytest.raises(StoreError):
        s.set_profile_field("x", None)
    with pytest.raises(StoreError):
        s.set_setting("k", None)
    s.close()


# ------------------------------------------------------------------ schema and key providers
def test_created_tables_have_exactly_the_declared_columns(tmp_path):
    """The DDL and the export spec come from one declaration; the database agrees with both."""
    from device.store.schema import SCHEMA, TABLES
    Store.open(tmp_path / "box").close()
    conn = sqlite3.connect(tmp_path / "box" / "store.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"
                                         " AND name NOT LIKE 'sqlite_%'")}
    assert tables == {t.name for t in SCHEMA} and set(TABLES) < tables
    for table, (pk, cols) in TABLES.items():
        info = conn.execute(f"PRAGMA table_info({table})").fetchall()  # cid, name, type, notnull, dflt, pk
        assert [r[1] for r in info] == [c for c, _ in cols], table
        assert [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]] == list(pk), table
        for (name, kind), r in zip(cols, info):
            if name not in pk:
                assert bool(r[3]) == (not kind.endswith("?")), (table, name)


def passphrase_keys(passphrase: str, vault: dict) -> keystore.PassphraseKeyProvider:
    return keystore.PassphraseKeyProvider(passphrase, vault, n=2 ** 14)


def test_passphrase_key_provider_opens_writes_and_reopens(tmp_path, clock):
    d = tmp_path / "box"
    vault: dict[str, bytes] = {}
    with Store.open(d, clock=clock, keys=passphrase_keys("correct horse battery", vault)) as s:
        populate(s)
        did = s.device_identity.did
    assert not (d / "keys").exists()  # no key sits next to the database
    assert set(vault) == {"salt", "data.key", "device.key"}
    raw = b"".join(p.read_bytes() for p in d.iterdir() if p.name.startswith("store.db"))
    assert all(value.encode() not in raw for value in SECRET_VALUES)  # sealed, as with key files

    with Store.open(d, clock=clock, keys=passphrase_keys("correct horse battery", vault)) as s:
        assert SECRET_VALUES[0] in s.get_profile()["email"].value
        assert s.get_rules()["note"] == SECRET_VALUES[4]
        assert s.device_identity.did == did and s.audit.verify().ok

    before = dict(vault)
    with pytest.raises(KeyFileError, match="does not unlock"):
        Store.open(d, keys=passphrase_keys("correct horse battery!", vault))
    assert vault == before  # a wrong passphrase changes nothing
    swapped = {**vault, "data.key": vault["device.key"], "device.key": vault["data.key"]}
    with pytest.raises(KeyFileError, match="does not unlock"):
        Store.open(d, keys=passphrase_keys("correct horse battery", swapped))
    with pytest.raises(KeyFileError, match="missing"):
        Store.open(d)  # the file provider finds no key, and does not invent one
    assert not (d / "keys" / "data.key").exists()
    with pytest.raises(KeyFileError, match="empty passphrase"):
        passphrase_keys("", vault)


def test_passphrase_key_provider_takes_a_restored_device_key_and_an_erase(tmp_path, clock):
    from device import portability
    from device.erase import erase
    with Store.open(tmp_path / "src", clock=clock) as s:
        populate(s)
        src_did = s.device_identity.did
        portability.backup_to_file(s, tmp_path / "backup.json", "backup passphrase", n=2 ** 14)
    d, vault = tmp_path / "box", {}
    with Store.open(d, clock=clock, keys=passphrase_keys("unlock", vault)) as s:
        portability.restore_from_file(s, tmp_path / "backup.json", "backup passphrase")
        assert s.device_identity.did == src_did
    assert set(vault) == {"salt", "data.key", "device.key"}  # the staged key was settled
    with Store.open(d, clock=clock, keys=passphrase_keys("unlock", vault)) as s:
        assert s.device_identity.did == src_did and s.audit.verify().ok
        assert SECRET_VALUES[0] in s.get_profile()["email"].value

    old = dict(vault)
    result = erase(d, clock=clock, keys=passphrase_keys("unlock", vault))
    assert result.old_device_did == src_did and result.deletion_requests == 1
    assert all(vault[k] != old[k] for k in old)  # new salt, new wrapped keys
    with pytest.raises(KeyFileError):  # the old vault no longer opens the erased box
        Store.open(d, keys=passphrase_keys("unlock", old))
    with Store.open(d, clock=clock, keys=passphrase_keys("unlock", vault)) as s:
        assert s.get_profile() == {} and s.device_identity.did == result.new_device_did != src_did
        assert [e.event_type for e in s.audit.entries()] == ["erase"] and s.audit.verify().ok


def test_docs_list_exactly_the_sealed_and_clear_columns_of_the_schema():
    """docs/store.md tells the person what a copied store.db shows; it must match the schema."""
    import re
    from pathlib import Path
    from device.store.schema import SCHEMA, clear_columns, sealed_columns
    doc = (Path(__file__).resolve().parent.parent / "docs" / "store.md").read_text(encoding="utf-8")
    header = "| table | sealed columns | clear columns |\n|---|---|---|\n"
    assert header in doc
    rows = doc.split(header, 1)[1].split("\n\n", 1)[0].splitlines()
    listed = {}
    for row in rows:
        table, sealed, clear = (cell.strip() for cell in row.strip("|").split("|"))
        listed[table] = (tuple(re.findall(r"`([a-z_]+)`", sealed)), tuple(re.findall(r"`([a-z_]+)`", clear)))
    assert listed == {t.name: (sealed_columns(t.name), clear_columns(t.name)) for t in SCHEMA}
