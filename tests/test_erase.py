"""Erase: vendors are told first (signed deletion requests), then data and keys are gone."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

from device.erase import erase
from device.store import Store
import pytest

from test_store import NOW, Clock, populate
from vrm_protocol import IntentWithdrawal, Revocation, topics, verify

# values populate() leaves in clear columns or audit data (the sealed ones are checked as
# ciphertext); none of them is in a message that erase keeps in the outbox
CLEAR_VALUES = (b"dr-jones-clinic", b"evil-shop", b"Acme Bikes Ltd", b"offer-0001", b"stuff_added")


def _raw_files(d):
    """Every byte under the data dir: database, WAL and key files."""
    return b"".join(p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file())


def test_erase_queues_signed_deletion_requests_then_removes_everything(tmp_path):
    d = tmp_path / "box"
    clock = Clock()
    with Store.open(d, clock=clock) as s:
        ids = populate(s)
        old_did = s.device_identity.did
        old_data_key = (d / "keys" / "data.key").read_bytes()
        s.queue_outbox("vrm/v1/already", "sent")
        s.mark_sent(s.pending_outbox()[0].id)
    sealed_email = sqlite3.connect(d / "store.db").execute(
        "SELECT value FROM profile WHERE name='email'").fetchone()[0]
    # what a copied card shows before the erase: clear columns and audit data, ciphertext
    before = _raw_files(d)
    for present in CLEAR_VALUES + (sealed_email, old_data_key):
        assert present in before, present

    result = erase(d, clock=clock)
    assert result.deletion_requests == 1 and result.old_device_did == old_did

    with Store.open(d, clock=clock) as s:
        out = s.pending_outbox()
        revs = [o for o in out if o.topic == topics.revocations("acme-bikes")]
        assert len(revs) == 1
        msg = verify(revs[0].payload, now=NOW)
        assert isinstance(msg.body, Revocation) and msg.body.delete is True
        assert msg.body.agreement == ids["agreement_id"]
        assert msg.envelope.iss == ids["intent_key"].did  # signed by the agreement's intent key
        wd = [o for o in out if o.topic == topics.withdrawal("bikes", "intent-0001")]
        assert isinstance(verify(wd[0].payload, now=NOW).body, IntentWithdrawal)
        assert any(o.topic == topics.intent("bikes", "intent-0001") and o.retain and o.payload == ""
                   for o in out)
        assert all(o.topic != "vrm/v1/already" for o in out)

        assert s.get_profile() == {} and s.list_intents() == [] and s.list_agreements() == []
        assert s.list_stuff() == [] and s.get_rules() is None and s.list_vendors() == []
        assert s.device_identity.did != old_did
        assert (d / "keys" / "data.key").read_bytes() != old_data_key
        entries = s.audit.entries()
        assert [e.event_type for e in entries] == ["erase"]
        assert entries[0].data["deletion_requests_queued"] == 1
        assert s.audit.verify().ok
        assert s.is_fresh()
    after = _raw_files(d)
    for gone in CLEAR_VALUES + (sealed_email, old_data_key):
        assert gone not in after, gone
    conn = sqlite3.connect(d / "store.db")
    assert conn.execute("SELECT COUNT(*) FROM offers").fetchone()[0] == 0


def test_interrupted_erase_can_be_finished(tmp_path):
    """Keys already shredded (crash after step 2): the store cannot open, erase still completes."""
    d = tmp_path / "box"
    with Store.open(d) as s:
        populate(s)
    (d / "keys" / "data.key").unlink()
    result = erase(d)
    assert result.deletion_requests == 0
    with Store.open(d) as s:
        assert s.get_profile() == {} and s.audit.verify().ok


@pytest.mark.slow
def test_cli_erase_needs_confirmation(tmp_path):
    d = tmp_path / "box"
    with Store.open(d) as s:
        s.set_profile_field("name", "Ann")
    base = [sys.executable, "-m", "vrmbox", "erase", "--data-dir", str(d), "--json"]
    r = subprocess.run(base, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    with Store.open(d) as s:
        assert s.get_profile()["name"].value == "Ann"
    r = subprocess.run(base + ["--yes"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True
    with Store.open(d) as s:
        assert s.get_profile() == {}
