"""The vendor's SQLite ledger: intents seen, offers sent, agreements, disclosures, revocations.

Why it looks like this:
- Several workers may share one ledger (same directory, MQTT shared subscription), so the
  database runs in WAL mode with a busy timeout, and every decision is one IMMEDIATE
  transaction. `INSERT OR IGNORE` on the intent id decides which worker answers an intent:
  the intent row is committed *before* any offer is published, so an intent is answered at
  most once, across workers and restarts.
- Outgoing messages are written to an `outbox` in the same transaction as the state change
  and marked sent on PUBACK; after a crash or a broker loss the unsent rows are published
  again (same message ids, so a duplicate is harmless to the box).
- Revocation with delete=true removes the disclosure row with `secure_delete` on (freed
  bytes are zeroed) and then truncates the WAL, so the plaintext is gone from the files.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .core import (AgreementRecord, DisclosureRecord, IntentAnswer, IntentRecord, OfferRecord, Outgoing,
                   RevocationRecord, WithdrawalRecord)

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.sqlite"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS intents (
  intent TEXT PRIMARY KEY, category TEXT NOT NULL, signer TEXT NOT NULL, terms_id TEXT NOT NULL,
  terms_sha256 TEXT NOT NULL, attributes TEXT NOT NULL, received_at INTEGER NOT NULL,
  status TEXT NOT NULL, offers INTEGER NOT NULL, client_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS withdrawals (
  intent TEXT PRIMARY KEY, category TEXT NOT NULL, signer TEXT NOT NULL, received_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS offers (
  id TEXT PRIMARY KEY, intent TEXT NOT NULL REFERENCES intents(intent), intent_signer TEXT NOT NULL,
  sku TEXT NOT NULL, name TEXT NOT NULL, price REAL NOT NULL, currency TEXT NOT NULL,
  valid_until INTEGER NOT NULL, terms_id TEXT NOT NULL, terms_sha256 TEXT NOT NULL,
  decision TEXT NOT NULL, token TEXT NOT NULL, created_at INTEGER NOT NULL, client_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS offers_intent ON offers(intent);
CREATE TABLE IF NOT EXISTS agreements (
  id TEXT PRIMARY KEY, intent TEXT NOT NULL, offer TEXT NOT NULL REFERENCES offers(id),
  signer TEXT NOT NULL, fields TEXT NOT NULL, purpose TEXT NOT NULL, duration_days INTEGER NOT NULL,
  terms_id TEXT NOT NULL, terms_sha256 TEXT NOT NULL, received_at INTEGER NOT NULL,
  cs_id TEXT NOT NULL, cs_topic TEXT NOT NULL, cs_token TEXT NOT NULL, cs_exp INTEGER NOT NULL,
  revoked_at INTEGER, revocation TEXT, deleted INTEGER NOT NULL DEFAULT 0, client_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS disclosures (
  agreement TEXT PRIMARY KEY REFERENCES agreements(id), intent TEXT NOT NULL, message TEXT NOT NULL,
  fields TEXT NOT NULL, received_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS revocations (
  id TEXT PRIMARY KEY, agreement TEXT NOT NULL, intent TEXT NOT NULL, delete_data INTEGER NOT NULL,
  reason TEXT, received_at INTEGER NOT NULL, ack_id TEXT NOT NULL, ack_topic TEXT NOT NULL,
  ack_token TEXT NOT NULL, ack_exp INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
  id TEXT PRIMARY KEY, topic TEXT NOT NULL, token TEXT NOT NULL, exp INTEGER NOT NULL,
  retain INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, client_id TEXT NOT NULL,
  sent_at INTEGER);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(sent_at) WHERE sent_at IS NULL;
"""


def _retry_locked(fn: Callable[[], None], timeout: float = BUSY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class Ledger:
    """One connection to the vendor's ledger. Thread-safe by a lock (paho calls from its thread)."""

    def __init__(self, path: Path | str, client_id: str = "cli") -> None:
        self.path = Path(path)
        self.client_id = client_id
        if not self.path.exists():  # personal data inside: never world-readable, not even briefly
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA secure_delete = ON")
        self._db.execute("PRAGMA foreign_keys = ON")
        _retry_locked(self._setup)

    def _setup(self) -> None:
        # Switching to WAL needs an exclusive lock and SQLite does not always wait for it (busy
        # handler skipped), so two workers opening a new ledger at once need the retry around this.
        if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            self._db.execute("PRAGMA journal_mode = WAL")
        with self._tx():
            if self._db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                for stmt in filter(str.strip, _SCHEMA.split(";")):  # not executescript: it COMMITs
                    self._db.execute(stmt)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @classmethod
    def in_dir(cls, directory: Path | str, client_id: str = "cli") -> "Ledger":
        return cls(Path(directory) / LEDGER_FILE, client_id)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: takes the write lock up front, so read-then-write is atomic."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -------------------------------------------------------------------------- outbox
    def _enqueue(self, db: sqlite3.Connection, out: Outgoing, now: int) -> None:
        db.execute("INSERT OR IGNORE INTO outbox (id, topic, token, exp, retain, created_at, client_id) "
                   "VALUES (?,?,?,?,?,?,?)", (out.msg_id, out.topic, out.token, out.exp, int(out.retain),
                                              now, self.client_id))

    def mark_sent(self, msg_id: str, now: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET sent_at = ? WHERE id = ? AND sent_at IS NULL", (now, msg_id))

    def unsent(self, now: int, grace_s: int = 30) -> list[Outgoing]:
        """Unexpired messages not yet acknowledged by the broker: ours, or another worker's
        older than `grace_s` (it may have died between commit and publish)."""
        rows = self._all("SELECT * FROM outbox WHERE sent_at IS NULL AND exp > ? AND "
                         "(client_id = ? OR created_at <= ?) ORDER BY created_at",
                         now, self.client_id, now - grace_s)
        return [Outgoing(r["id"], r["topic"], r["token"], r["exp"], bool(r["retain"])) for r in rows]

    # -------------------------------------------------------------------------- intents
    def intent(self, intent_id: str) -> IntentRecord | None:
        r = self._one("SELECT * FROM intents WHERE intent = ?", intent_id)
        if r is None:
            return None
        return IntentRecord(intent=r["intent"], category=r["category"], signer=r["signer"],
                            terms_id=r["terms_id"], terms_sha256=r["terms_sha256"],
                            attributes=json.loads(r["attributes"]), received_at=r["received_at"],
                            status=r["status"])

    def withdrawal_signer(self, intent_id: str) -> str | None:
        r = self._one("SELECT signer FROM withdrawals WHERE intent = ?", intent_id)
        return r["signer"] if r else None

    def claim_intent(self, answer: IntentAnswer, now: int) -> bool:
        """Record the intent and its offers; False if another worker (or an earlier run) has."""
        i = answer.intent
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO intents (intent, category, signer, terms_id, terms_sha256, attributes, "
                "received_at, status, offers, client_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (i.intent, i.category, i.signer, i.terms_id, i.terms_sha256, json.dumps(i.attributes),
                 i.received_at, i.status, len(answer.offers), self.client_id))
            if cur.rowcount == 0:
                return False
            for o in answer.offers:
                db.execute("INSERT INTO offers (id, intent, intent_signer, sku, name, price, currency, valid_until, "
                           "terms_id, terms_sha256, decision, token, created_at, client_id) "
                           "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           (o.id, o.intent, o.intent_signer, o.sku, o.name, o.price, o.currency, o.valid_until,
                            o.terms_id, o.terms_sha256, o.decision, o.token, now, self.client_id))
                self._enqueue(db, o.outgoing(), now)
        return True

    def record_withdrawal(self, w: WithdrawalRecord) -> None:
        """Mark a known intent withdrawn (and drop its unsent offers), or remember the
        withdrawal until the intent arrives."""
        with self._tx() as db:
            cur = db.execute("UPDATE intents SET status = 'withdrawn' WHERE intent = ? AND signer = ?",
                             (w.intent, w.signer))
            if cur.rowcount:
                db.execute("DELETE FROM outbox WHERE sent_at IS NULL AND id IN "
                           "(SELECT id FROM offers WHERE intent = ?)", (w.intent,))
            else:
                db.execute("INSERT OR IGNORE INTO withdrawals (intent, category, signer, received_at) "
                           "VALUES (?,?,?,?)", (w.intent, w.category, w.signer, w.received_at))

    # -------------------------------------------------------------------------- offers
    def offer(self, offer_id: str) -> OfferRecord | None:
        r = self._one("SELECT * FROM offers WHERE id = ?", offer_id)
        if r is None:
            return None
        return OfferRecord(id=r["id"], intent=r["intent"], intent_signer=r["intent_signer"], sku=r["sku"],
                           name=r["name"], price=r["price"], currency=r["currency"], valid_until=r["valid_until"],
                           terms_id=r["terms_id"], terms_sha256=r["terms_sha256"], decision=r["decision"],
                           token=r["token"])

    # -------------------------------------------------------------------------- agreements
    def agreement(self, agreement_id: str) -> AgreementRecord | None:
        r = self._one("SELECT * FROM agreements WHERE id = ?", agreement_id)
        if r is None:
            return None
        return AgreementRecord(id=r["id"], intent=r["intent"], offer=r["offer"], signer=r["signer"],
                               fields=tuple(json.loads(r["fields"])), purpose=r["purpose"],
                               duration_days=r["duration_days"], terms_id=r["terms_id"],
                               terms_sha256=r["terms_sha256"], received_at=r["received_at"],
                               countersignature=Outgoing(r["cs_id"], r["cs_topic"], r["cs_token"], r["cs_exp"]),
                               revoked_at=r["revoked_at"])

    def store_agreement(self, a: AgreementRecord, now: int) -> Outgoing:
        """Store a countersigned agreement; for one stored before, the countersignature sent then."""
        cs = a.countersignature
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO agreements (id, intent, offer, signer, fields, purpose, duration_days, "
                "terms_id, terms_sha256, received_at, cs_id, cs_topic, cs_token, cs_exp, client_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (a.id, a.intent, a.offer, a.signer, json.dumps(list(a.fields)), a.purpose, a.duration_days,
                 a.terms_id, a.terms_sha256, a.received_at, cs.msg_id, cs.topic, cs.token, cs.exp,
                 self.client_id))
            if cur.rowcount:
                self._enqueue(db, cs, now)
                return cs
            r = db.execute("SELECT cs_id, cs_topic, cs_token, cs_exp FROM agreements WHERE id = ?",
                           (a.id,)).fetchone()
            return Outgoing(r["cs_id"], r["cs_topic"], r["cs_token"], r["cs_exp"])

    # -------------------------------------------------------------------------- disclosures
    def store_disclosure(self, d: DisclosureRecord) -> bool:
        """Store (or replace) the disclosed fields, unless the agreement was revoked meanwhile."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR REPLACE INTO disclosures (agreement, intent, message, fields, received_at) "
                "SELECT ?,?,?,?,? WHERE EXISTS (SELECT 1 FROM agreements WHERE id = ? AND revoked_at IS NULL)",
                (d.agreement, d.intent, d.message, json.dumps(d.fields), d.received_at, d.agreement))
            return cur.rowcount > 0

    # -------------------------------------------------------------------------- revocations
    def revoke(self, r: RevocationRecord, now: int) -> Outgoing:
        """End the agreement, delete the disclosed data if asked, queue the ack: one transaction.
        A revocation seen before gets the ack sent then."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO revocations (id, agreement, intent, delete_data, reason, received_at, "
                "ack_id, ack_topic, ack_token, ack_exp) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (r.id, r.agreement, r.intent, int(r.delete), r.reason, r.received_at, r.ack.msg_id,
                 r.ack.topic, r.ack.token, r.ack.exp))
            if not cur.rowcount:
                row = db.execute("SELECT ack_id, ack_topic, ack_token, ack_exp FROM revocations WHERE id = ?",
                                 (r.id,)).fetchone()
                return Outgoing(row["ack_id"], row["ack_topic"], row["ack_token"], row["ack_exp"])
            if r.delete:
                db.execute("DELETE FROM disclosures WHERE agreement = ?", (r.agreement,))
            db.execute("UPDATE agreements SET revoked_at = COALESCE(revoked_at, ?), "
                       "revocation = COALESCE(revocation, ?), deleted = MAX(deleted, ?) WHERE id = ?",
                       (r.received_at, r.id, int(r.delete), r.agreement))
            self._enqueue(db, r.ack, now)
        if r.delete:
            self._purge_wal()
        return r.ack

    def _purge_wal(self) -> None:
        """Deleted rows are zeroed in the database (secure_delete); the WAL still holds the
        old page images until it is checkpointed and truncated."""
        with self._lock:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning("WAL checkpoint blocked by a reader; deleted data leaves the WAL at the next checkpoint")

    # -------------------------------------------------------------------------- listings (CLI)
    def list_intents(self) -> list[dict[str, Any]]:
        return [{"intent": r["intent"], "category": r["category"], "status": r["status"],
                 "offers": r["offers"], "received_at": r["received_at"], "client_id": r["client_id"],
                 "attributes": json.loads(r["attributes"])}
                for r in self._all("SELECT * FROM intents ORDER BY received_at, intent")]

    def list_offers(self) -> list[dict[str, Any]]:
        return [{"id": r["id"], "intent": r["intent"], "sku": r["sku"], "name": r["name"], "price": r["price"],
                 "currency": r["currency"], "valid_until": r["valid_until"], "terms": r["terms_id"],
                 "decision": r["decision"], "created_at": r["created_at"], "client_id": r["client_id"],
                 "sent": r["sent_at"] is not None}
                for r in self._all("SELECT offers.*, outbox.sent_at FROM offers LEFT JOIN outbox "
                                   "ON outbox.id = offers.id ORDER BY offers.created_at, offers.id")]

    def list_agreements(self) -> list[dict[str, Any]]:
        return [{"id": r["id"], "intent": r["intent"], "offer": r["offer"], "sku": r["sku"],
                 "signer": r["signer"], "fields": json.loads(r["fields"]), "purpose": r["purpose"],
                 "duration_days": r["duration_days"], "terms": r["terms_id"], "received_at": r["received_at"],
                 "countersignature": r["cs_id"], "revoked_at": r["revoked_at"], "deleted": bool(r["deleted"]),
                 "client_id": r["client_id"]}
                for r in self._all("SELECT agreements.*, offers.sku FROM agreements JOIN offers "
                                   "ON offers.id = agreements.offer ORDER BY agreements.received_at, agreements.id")]

    def list_disclosures(self) -> list[dict[str, Any]]:
        return [{"agreement": r["agreement"], "intent": r["intent"], "message": r["message"],
                 "purpose": r["purpose"], "fields": json.loads(r["fields"]), "received_at": r["received_at"]}
                for r in self._all("SELECT disclosures.*, agreements.purpose FROM disclosures JOIN agreements "
                                   "ON agreements.id = disclosures.agreement ORDER BY disclosures.received_at")]
