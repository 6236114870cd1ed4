"""Erase the box (ETSI EN 303 645 provision 5.11): tell vendors first, then destroy data and keys.

Order, and why:
1. While the keys still exist, sign a `Revocation(delete=True)` with each active agreement's
   intent key and queue it (plus the withdrawal of every active intent) in the outbox.
   The tokens are complete signed messages, so the keys are not needed to send them later.
2. Destroy the keys (shred the key files, or the provider's equivalent). From here on the sealed rows are unreadable even if a later step
   is interrupted (crypto-erase); re-running `erase` finishes the job.
3. Delete every row except unsent outbox rows, drop the old audit log, VACUUM and truncate the
   WAL (secure_delete is on), so not even ciphertext stays behind.
4. Open a new, empty store (new data key, new device key); its log starts with one "erase"
   entry recording how many deletion requests were queued.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vrm_protocol import EncryptionKey, IntentWithdrawal, ProtocolError, Revocation, sign, topics
from vrm_protocol.codec import unverified_payload
from vrm_protocol.encryption import seal
from vrm_protocol.messages import parse_dataclass

from . import keystore
from .keystore import KeyProvider
from .store import DB_FILE, Store
from .store.connection import audit_rows_deletable
from .store.schema import ALL_TABLES

log = logging.getLogger(__name__)

REVOCATION_TTL = 30 * 24 * 3600   # vendors may be offline for a while; the request stays valid
ERASABLE_AGREEMENTS = ("confirmed", "active")


@dataclass(frozen=True)
class EraseResult:
    deletion_requests: int
    withdrawals: int
    old_device_did: str | None
    new_device_did: str


def queue_deletion_requests(store: Store, now: float) -> tuple[int, int]:
    """Step 1: signed deletion requests for active agreements, withdrawals for active intents."""
    requests = withdrawals = 0
    for a in store.list_agreements():
        if a.status not in ERASABLE_AGREEMENTS:
            continue
        intent = store.get_intent(a.intent_id)
        if intent is None:
            log.warning("agreement %s has no intent key; cannot sign its deletion request", a.agreement_id)
            continue
        token = sign(intent.identity, Revocation(agreement=a.agreement_id, intent=a.intent_id, delete=True,
                                                 reason="erase"), now=now, ttl=REVOCATION_TTL)
        exp = unverified_payload(token)["exp"]      # before sealing hides it
        vendor = store.get_vendor(a.vendor)
        if vendor is not None and vendor.profile.get("enc_key"):   # v2: only the vendor reads it
            try:
                token = seal(token, parse_dataclass(EncryptionKey, vendor.profile["enc_key"]))
            except (ProtocolError, ValueError) as exc:   # a profile we cannot encrypt to: signed only
                log.warning("cannot seal the deletion request to %s: %s", a.vendor, exc)
        store.queue_outbox(topics.revocations(a.vendor), token, retain=False, expires_at=exp)
        requests += 1
    for i in store.list_intents(status="active"):
        token = sign(i.identity, IntentWithdrawal(intent=i.intent_id, category=i.category), now=now,
                     ttl=REVOCATION_TTL)
        store.queue_outbox(topics.intent(i.category, i.intent_id), "", retain=True)  # clear retained
        store.queue_outbox(topics.withdrawal(i.category, i.intent_id), token, retain=False)
        withdrawals += 1
    return requests, withdrawals


def _messages_to_keep(store: Store) -> dict[int, str]:
    """Unsent messages that tell vendors to forget (deletion requests, withdrawals, retained
    clears), by outbox id. Unsent agreements and disclosures die with the box."""
    keep = {}
    for rec in store.pending_outbox():
        vendor_topic = topics.parse_vendor_topic(rec.topic)
        intent_topic = topics.parse_intent_topic(rec.topic)
        if (vendor_topic and vendor_topic[1] == "revocations") or \
                (intent_topic and (intent_topic[0] == "withdrawal" or rec.payload == "")):
            keep[rec.id] = rec.payload
    return keep


def _unseal_outbox(db: Path, keep: dict[int, str]) -> None:
    """Step 1b: the old data key is about to go, so the messages still to send are written back
    in the clear (they hold ids and signatures, no personal value; Store.open seals them again
    with the new key) and every other unsent message is dropped — in one transaction, so a crash
    leaves either the sealed outbox or this one."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for (oid,) in conn.execute("SELECT id FROM outbox WHERE sent_at IS NULL").fetchall():
            if oid in keep:
                conn.execute("UPDATE outbox SET payload=? WHERE id=?", (keep[oid], oid))
            else:
                conn.execute("DELETE FROM outbox WHERE id=?", (oid,))
        conn.execute("COMMIT")
    finally:
        conn.close()


def _wipe_database(db: Path) -> None:
    """Step 3: keep only unsent outbox rows; drop everything else and compact the file."""
    if not db.exists():
        return
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("BEGIN IMMEDIATE")
        with audit_rows_deletable(conn):
            for table in ALL_TABLES:
                if table == "outbox":
                    conn.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL")
                else:
                    conn.execute(f"DELETE FROM {table}")
        conn.execute("COMMIT")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def erase(data_dir: Path, clock: Callable[[], float] = time.time,
          keys: KeyProvider | None = None) -> EraseResult:
    """Erase everything in `data_dir` (the caller has asked for confirmation). `keys` is the
    store's key provider (default: the files in `data_dir/keys/`); it destroys the old keys and
    creates the new ones."""
    data_dir = Path(data_dir)
    provider = keys if keys is not None else keystore.FileKeyProvider(data_dir)
    requests = withdrawals = 0
    old_did: str | None = None
    keep: dict[int, str] | None = None
    if (data_dir / DB_FILE).exists():
        try:
            store = Store.open(data_dir, clock=clock, keys=provider)
        except (keystore.KeyFileError, sqlite3.DatabaseError, ValueError) as exc:
            # keys already gone (an interrupted erase) or unreadable: nothing can be signed
            log.warning("store cannot be opened (%s); erasing without deletion requests", exc)
        else:
            try:
                old_did = store.device_identity.did
                requests, withdrawals = queue_deletion_requests(store, clock())
                keep = _messages_to_keep(store)
            finally:
                store.close()
            if keep is not None:
                _unseal_outbox(data_dir / DB_FILE, keep)
    provider.destroy()
    _wipe_database(data_dir / DB_FILE)
    with Store.open(data_dir, clock=clock, keys=provider) as fresh:
        fresh.record_event("erase", {"deletion_requests_queued": requests,
                                     "intent_withdrawals_queued": withdrawals,
                                     "erased_device": old_did})
        new_did = fresh.device_identity.did
    log.info("erased the box; %d deletion requests queued", requests)
    return EraseResult(requests, withdrawals, old_did, new_did)
