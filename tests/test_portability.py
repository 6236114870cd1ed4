"""Export/import and encrypted backup/restore: round trips, and bad files that change nothing."""
from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from device import portability
from device.portability import PortabilityError, full_dump
from device.store import Store
from vrm_protocol import topics
from test_store import SECRET_VALUES, Clock, populate

PASS = "correct horse battery staple"


@pytest.fixture
def source(tmp_path):
    s = Store.open(tmp_path / "src", clock=Clock())
    populate(s)
    yield s
    s.close()


@pytest.fixture
def target(tmp_path):
    s = Store.open(tmp_path / "dst", clock=Clock())
    yield s
    s.close()


def test_export_import_round_trip(source, target, tmp_path):
    f = tmp_path / "export.json"
    doc = portability.export_to_file(source, f)
    assert oct(f.stat().st_mode & 0o777) == "0o600"
    portability.import_from_file(target, f)
    assert target.snapshot() == source.snapshot()
    src_entries, dst_entries = source.audit.entries(), target.audit.entries()
    assert dst_entries[:-1] == src_entries
    assert dst_entries[-1].event_type == "imported"
    assert dst_entries[-1].data["previous_device"] == source.device_identity.did
    assert target.audit.verify().ok
    assert src_entries[-1].event_type == "export"
    assert doc["device_did"] == source.device_identity.did
    # imported data is readable through the normal API and re-encrypted under the new box's key
    assert SECRET_VALUES[0] in target.get_profile()["email"].value
    assert target.get_intent("intent-0001").identity.did == source.get_intent("intent-0001").identity.did
    # the log keeps verifying as the new box carries on
    target.set_profile_field("new", 1)
    assert target.audit.verify().ok


def test_backup_restore_round_trip(source, target, tmp_path):
    f = tmp_path / "backup.json"
    portability.backup_to_file(source, f, PASS, n=2 ** 14)
    blob = f.read_bytes()
    for value in SECRET_VALUES:
        assert value.encode() not in blob
    assert b"device_seed" not in blob
    portability.restore_from_file(target, f, PASS)
    assert target.snapshot() == source.snapshot()
    assert target.device_identity.did == source.device_identity.did
    assert target.audit.entries()[:-1] == source.audit.entries()
    assert target.audit.entries()[-1].event_type == "restored"
    assert target.audit.verify().ok
    # the restored device key is on disk: a reopened store is the same box
    d = target.data_dir
    target.close()
    with Store.open(d) as again:
        assert again.device_identity.did == source.device_identity.did
        assert again.audit.verify().ok


def _refused(store, action, match):
    before = full_dump(store)
    with pytest.raises(PortabilityError, match=match):
        action()
    assert full_dump(store) == before


def test_bad_backups_leave_the_store_exactly_as_it_was(source, target, tmp_path):
    target.set_profile_field("keep", "me")
    f = tmp_path / "backup.json"
    portability.backup_to_file(source, f, PASS, n=2 ** 14)
    good = json.loads(f.read_text())

    _refused(target, lambda: portability.restore_from_file(target, f, "wrong passphrase", force=True),
             "wrong passphrase")
    tampered = dict(good)
    ct = bytearray(base64.urlsafe_b64decode(good["ciphertext"] + "=="))
    ct[100] ^= 1
    tampered["ciphertext"] = base64.urlsafe_b64encode(bytes(ct)).decode().rstrip("=")
    (tmp_path / "t.json").write_text(json.dumps(tampered))
    _refused(target, lambda: portability.restore_from_file(target, tmp_path / "t.json", PASS, force=True),
             "altered")
    header_changed = {**good, "kdf": {**good["kdf"], "n": 2 ** 15}}
    (tmp_path / "h.json").write_text(json.dumps(header_changed))
    _refused(target, lambda: portability.restore_from_file(target, tmp_path / "h.json", PASS, force=True),
             "wrong passphrase|altered")
    (tmp_path / "huge.json").write_text(json.dumps({**good, "kdf": {**good["kdf"], "n": 2 ** 30}}))
    _refused(target, lambda: portability.restore_from_file(target, tmp_path / "huge.json", PASS, force=True),
             "out of range")
    (tmp_path / "trunc.json").write_text(f.read_text()[:500])
    _refused(target, lambda: portability.restore_from_file(target, tmp_path / "trunc.json", PASS, force=True),
             "not valid JSON")
    _refused(target, lambda: portability.restore_from_file(target, tmp_path / "missing.json", PASS),
             "cannot read")
    # a good backup onto a box in use needs --force
    _refused(target, lambda: portability.restore_from_file(target, f, PASS), "fresh box")
    assert not (target.data_dir / "keys" / "device.key.pending").exists()


def test_bad_exports_leave_the_store_exactly_as_it_was(source, target, tmp_path):
    target.set_profile_field("keep", "me")
    f = tmp_path / "export.json"
    portability.export_to_file(source, f)
    good = json.loads(f.read_text())

    def write(name, obj):
        p = tmp_path / name
        p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return p

    edited = json.loads(json.dumps(good))
    edited["data"]["profile"][0]["value"] = "attacker@example.org"
    p = write("edited.json", edited)
    _refused(target, lambda: portability.import_from_file(target, p, force=True), "signature")

    dropped = json.loads(json.dumps(good))
    del dropped["audit"]["entries"][2]
    p = write("dropped.json", dropped)
    _refused(target, lambda: portability.import_from_file(target, p, force=True), "signature")

    for name, obj, match in (
            ("notjson.json", "{not json", "not valid JSON"),
            ("list.json", [1, 2], "JSON object"),
            ("other.json", {"format": "something"}, "not a VRM box export"),
            ("nan.json", f.read_text().replace('"exported_at": ', '"exported_at": NaN, "x": '), "not valid JSON"),
    ):
        p = write(name, obj)
        _refused(target, lambda: portability.import_from_file(target, p, force=True), match)
    # a good export onto a box in use needs --force
    _refused(target, lambda: portability.import_from_file(target, f), "fresh box")


def test_malformed_but_validly_signed_export_is_refused(source, target, tmp_path):
    """Even with a valid signature (the person's own edit, re-signed), rows must fit the schema."""
    doc = portability.build_export(source)
    doc["data"]["profile"][0]["provenance"] = "wizard"
    doc["signature"] = base64.urlsafe_b64encode(
        source.device_identity.private_key.sign(portability._doc_digest(doc))).decode().rstrip("=")
    p = tmp_path / "x.json"
    p.write_text(json.dumps(doc))
    _refused(target, lambda: portability.import_from_file(target, p), "malformed")


def test_import_cannot_change_a_read_only_field(source, tmp_path):
    f = tmp_path / "export.json"
    portability.export_to_file(source, f)
    with Store.open(tmp_path / "other") as box:
        box.set_profile_field("blood_group", "0-", provenance="read-only", source="city-hospital")
        _refused(box, lambda: portability.import_from_file(box, f, force=True), "read-only")
    # the same field with the same value and source is fine (e.g. re-importing your own export)
    with Store.open(tmp_path / "same") as box:
        box.set_profile_field("blood_group", "A+", provenance="read-only", source="dr-jones-clinic")
        portability.import_from_file(box, f, force=True)
        assert box.get_profile()["blood_group"].value == "A+"


def test_erased_box_counts_as_fresh_and_keeps_its_outbox(source, tmp_path):
    from device.erase import erase
    f = tmp_path / "export.json"
    portability.export_to_file(source, f)
    d = tmp_path / "erased"
    with Store.open(d) as s:
        s.set_profile_field("x", 1)
        s.queue_outbox(topics.revocations("acme"), "deletion-request-tok")  # kept
        s.queue_outbox(topics.disclosures("acme"), "secret-disclosure")     # not yet sent: dropped
    erase(d)
    raw = b"".join(p.read_bytes() for p in d.glob("store.db*"))
    assert b"deletion-request-tok" not in raw and b"secret-disclosure" not in raw  # sealed anew
    with Store.open(d) as s:
        portability.import_from_file(s, f)
        assert [o.payload for o in s.pending_outbox()] == ["deletion-request-tok"]
        assert s.audit.verify().ok


def _audit_guarded(db) -> None:
    """The append-only triggers are in place (import and erase lift the delete guard only
    inside their one transaction)."""
    conn = sqlite3.connect(db)
    try:
        for stmt in ("DELETE FROM audit", "UPDATE audit SET data='{}'"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(stmt)
    finally:
        conn.close()


def test_audit_stays_append_only_after_import_and_erase(source, target, tmp_path):
    from device.erase import erase
    f = tmp_path / "export.json"
    portability.export_to_file(source, f)
    portability.import_from_file(target, f)
    assert target.audit.count() > 1
    _audit_guarded(target.data_dir / "store.db")
    target.close()
    erase(target.data_dir)
    with Store.open(target.data_dir) as s:
        assert [e.event_type for e in s.audit.entries()] == ["erase"]
    _audit_guarded(target.data_dir / "store.db")


@pytest.mark.slow
def test_cli_export_import_backup_restore(tmp_path):
    src, dst, dst2 = tmp_path / "src", tmp_path / "dst", tmp_path / "dst2"
    with Store.open(src) as s:
        populate(s)
    pf = tmp_path / "pass"
    pf.write_text(PASS + "\n")
    env = {k: v for k, v in os.environ.items() if k != "VRMBOX_PASSPHRASE"}

    def run(*a, env=env):
        return subprocess.run([sys.executable, "-m", "vrmbox", *a, "--json"], capture_output=True,
                              text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)

    assert run("export", str(tmp_path / "e.json"), "--data-dir", str(src)).returncode == 0
    r = run("import", str(tmp_path / "e.json"), "--data-dir", str(dst))
    assert r.returncode == 0, r.stdout + r.stderr
    again = run("import", str(tmp_path / "e.json"), "--data-dir", str(dst))
    assert again.returncode == 1 and "fresh box" in json.loads(again.stdout)["error"]
    nopass = run("backup", str(tmp_path / "b.json"), "--data-dir", str(src))
    assert nopass.returncode == 1 and "passphrase" in json.loads(nopass.stdout)["error"]
    assert run("backup", str(tmp_path / "b.json"), "--data-dir", str(src), "--passphrase-file",
               str(pf)).returncode == 0
    r = run("restore", str(tmp_path / "b.json"), "--data-dir", str(dst2), env={**env, "VRMBOX_PASSPHRASE": PASS})
    assert r.returncode == 0, r.stdout + r.stderr
    with Store.open(src) as a, Store.open(dst2) as b:
        assert a.snapshot() == b.snapshot()
        assert a.device_identity.did == b.device_identity.did
        assert b.audit.verify().ok
