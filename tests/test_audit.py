"""The audit log: every kind of tampering is found and the first bad entry is named."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from device.audit import GENESIS_HASH, compute_hash, verify_chain
from device.store import Store, StoreError
from vrm_protocol import Identity

N = 8


@pytest.fixture
def box(tmp_path):
    d = tmp_path / "box"
    with Store.open(d) as s:
        for i in range(N):
            s.set_profile_field(f"f{i}", i)
        assert s.audit.verify().ok
    return d


def raw(d):
    """A raw connection as an attacker with write access to store.db (but no keys) has it."""
    conn = sqlite3.connect(d / "store.db", isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    return conn


def verify(d):
    with Store.open(d) as s:
        return s.audit.verify()


def rows(conn):
    return conn.execute("SELECT seq, created_at, event_type, data, prev_hash, entry_hash, signature"
                        " FROM audit ORDER BY seq").fetchall()


def test_append_only_triggers_refuse_update_and_delete(box):
    conn = sqlite3.connect(box / "store.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET data='{}' WHERE seq=1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE seq=1")


def test_entry_fields_and_chain(box):
    with Store.open(box) as s:
        e = s.audit.entries()
        assert [x.seq for x in e] == list(range(1, N + 1))
        assert e[0].prev_hash == GENESIS_HASH and e[1].prev_hash == e[0].entry_hash
        assert e[2].entry_hash == compute_hash(3, e[2].created_at, e[2].event_type, e[2].data, e[2].prev_hash)
        assert s.audit.head().count == N


def test_modified_entry(box):
    conn = raw(box)
    conn.execute("UPDATE audit SET data=? WHERE seq=3", (json.dumps({"field": "other"}),))
    r = verify(box)
    assert (r.ok, r.first_bad) == (False, 3) and "hash" in r.reason


def test_modified_and_rehashed_without_the_key(box):
    """Rebuild the chain from entry 4 on with a key of one's own: signatures give it away."""
    conn = raw(box)
    attacker = Identity.generate()
    rs = rows(conn)
    prev = rs[2][5]
    for seq, created, ev, data, _p, _h, _sig in rs[3:]:
        if seq == 4:
            data = json.dumps({"field": "forged"})
        h = compute_hash(seq, created, ev, json.loads(data), prev)
        sig = __import__("base64").urlsafe_b64encode(attacker.private_key.sign(bytes.fromhex(h))).decode().rstrip("=")
        conn.execute("UPDATE audit SET data=?, prev_hash=?, entry_hash=?, signature=? WHERE seq=?",
                     (data, prev, h, sig, seq))
        prev = h
    r = verify(box)
    assert (r.ok, r.first_bad) == (False, 4) and "signature" in r.reason


def test_removed_entry(box):
    conn = raw(box)
    conn.execute("DELETE FROM audit WHERE seq=5")
    r = verify(box)
    assert (r.ok, r.first_bad) == (False, 5)


def test_removed_and_renumbered(box):
    conn = raw(box)
    conn.execute("DELETE FROM audit WHERE seq=5")
    for seq in range(6, N + 1):
        conn.execute("UPDATE audit SET seq=? WHERE seq=?", (seq - 1, seq))
    r = verify(box)
    assert (r.ok, r.first_bad) == (False, 5)


def test_inserted_entry(box):
    conn = raw(box)
    for seq in range(N, 3, -1):
        conn.execute("UPDATE audit SET seq=? WHERE seq=?", (seq + 1, seq))
    prev = conn.execute("SELECT entry_hash FROM audit WHERE seq=3").fetchone()[0]
    h = compute_hash(4, 1, "offer_declined", {}, prev)
    conn.execute("INSERT INTO audit VALUES (4, 1, 'offer_declined', '{}', ?, ?, 'AAAA')", (prev, h))
    r = verify(box)
    assert (r.ok, r.first_bad) == (False, 4)


def test_reordered_entries(box):
    conn = raw(box)
    conn.execute("UPDATE audit SET seq=-1 WHERE seq=6")
    conn.execute("UPDATE audit SET seq=6 WHERE seq=7")
    conn.execute("UPDATE audit SET seq=7 WHERE seq=-1")
    r = verify(box)
    assert (r.ok, r.first_bad) == (False, 6)


def test_bad_signature(box):
    conn = raw(box)
    other = conn.execute("SELECT signature FROM audit WHERE seq=1").fetchone()[0]
    conn.execute("UPDATE audit SET signature=? WHERE seq=7", (other,))
    r = verify(box)
    assert (r.ok, r.first_bad) == (False, 7) and "signature" in r.reason


def test_truncated_tail(box):
    conn = raw(box)
    conn.execute("DELETE FROM audit WHERE seq >= 7")
    r = verify(box)
    assert (r.ok, r.first_bad) == (False, 7) and "truncated" in r.reason


def test_tampered_or_missing_head(box):
    conn = raw(box)
    conn.execute("UPDATE audit_head SET count=count+1")
    assert not verify(box).ok
    conn.execute("DELETE FROM audit_head")
    r = verify(box)
    assert not r.ok and "head" in r.reason


def test_handover_chain_verifies_and_a_forged_handover_does_not():
    """Entries signed by an old key are accepted only behind a handover signed by the new key."""
    old, new, mallory = Identity.generate(), Identity.generate(), Identity.generate()
    from device.audit import AuditHead, AuditEntry, head_bytes
    from vrm_protocol.codec import b64url as _b64

    def mk(entries, seq, ev, data, key):
        prev = entries[-1].entry_hash if entries else GENESIS_HASH
        h = compute_hash(seq, 0, ev, data, prev)
        entries.append(AuditEntry(seq, 0, ev, data, prev, h, _b64(key.private_key.sign(bytes.fromhex(h)))))

    def head(entries, key):
        return AuditHead(len(entries), entries[-1].entry_hash,
                         _b64(key.private_key.sign(head_bytes(len(entries), entries[-1].entry_hash))))

    log: list = []
    mk(log, 1, "profile_changed", {}, old)
    mk(log, 2, "imported", {"previous_device": old.did}, new)
    mk(log, 3, "profile_changed", {}, new)
    assert verify_chain(log, head(log, new), new.did).ok
    assert verify_chain(log, head(log, new), mallory.did).first_bad == 2  # wrong anchor
    forged: list = []
    mk(forged, 1, "profile_changed", {}, mallory)
    mk(forged, 2, "imported", {"previous_device": mallory.did}, mallory)
    r = verify_chain(forged, head(forged, mallory), new.did)
    assert not r.ok and r.first_bad == 2  # the unproven handover; older signers unknown


@pytest.mark.slow
def test_cli_verify_names_first_bad_entry_and_show_pages(box):
    base = [sys.executable, "-m", "vrmbox", "audit"]
    ok = subprocess.run(base + ["verify", "--data-dir", str(box)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "OK" in ok.stdout
    page = subprocess.run(base + ["show", "--offset", "2", "--limit", "3", "--json", "--data-dir", str(box)],
                          capture_output=True, text=True, timeout=60)
    doc = json.loads(page.stdout)
    assert [e["seq"] for e in doc["entries"]] == [3, 4, 5] and doc["total"] == N
    conn = raw(box)
    conn.execute("UPDATE audit SET created_at=created_at+1 WHERE seq=4")
    bad = subprocess.run(base + ["verify", "--data-dir", str(box)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "first bad entry 4" in bad.stderr
    js = subprocess.run(base + ["verify", "--json", "--data-dir", str(box)], capture_output=True, text=True,
                        timeout=60)
    assert js.returncode != 0 and json.loads(js.stdout)["first_bad"] == 4


def test_change_and_entry_commit_together(tmp_path):
    """A failed change leaves neither data nor an audit entry behind."""
    with Store.open(tmp_path / "box") as s:
        s.set_profile_field("x", 1)
        with pytest.raises(StoreError, match="no intent"):
            s.set_intent_status("no-such-intent", "withdrawn")
        n = s.audit.count()
        with pytest.raises(RuntimeError, match="boom"):
            with s._tx():
                s.set_profile_field("y", 2)
                raise RuntimeError("boom")
        assert s.audit.count() == n and "y" not in s.get_profile()
        assert s.audit.verify().ok


def test_wiping_the_whole_log_and_its_head_is_detected(tmp_path):
    import sqlite3
    from device.store import Store
    s = Store.open(tmp_path / "w")
    s.set_profile_field("email", "a@b.c")
    s.close()
    conn = sqlite3.connect(tmp_path / "w" / "store.db")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    conn.execute("DELETE FROM audit")
    conn.execute("DELETE FROM audit_head")
    conn.commit()
    conn.close()
    with Store.open(tmp_path / "w") as s:
        result = s.audit.verify()
    assert not result.ok and "head" in result.reason


def test_a_new_store_verifies_with_an_empty_signed_log(tmp_path):
    from device.store import Store
    with Store.open(tmp_path / "n") as s:
        assert s.audit.verify().ok and s.audit.head().count == 0
