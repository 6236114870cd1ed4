"""Schema versions of store.db, applied in order and recorded in `PRAGMA user_version`.

Why numbered steps: a box in the field upgrades in place; each step runs once, inside one
transaction with the version bump, so a crash mid-upgrade leaves the old version intact.
Columns marked "sealed" hold AES-GCM ciphertext (see keystore.Cipher); never add an index on them.
"""
from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger(__name__)


class SchemaError(Exception):
    """The database was written by a newer version of this software."""


_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);                 -- value sealed
CREATE TABLE profile (name TEXT PRIMARY KEY, value BLOB NOT NULL, provenance TEXT NOT NULL,
    source TEXT, annotation BLOB, updated_at INTEGER NOT NULL);                   -- value, annotation sealed
CREATE TABLE stuff (id TEXT PRIMARY KEY, data BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE suppliers (vendor TEXT PRIMARY KEY, name TEXT NOT NULL, notes BLOB,
    created_at INTEGER NOT NULL);
CREATE TABLE claims (id TEXT PRIMARY KEY, issuer TEXT NOT NULL, data BLOB NOT NULL,
    valid_until INTEGER, imported_at INTEGER NOT NULL);
CREATE TABLE intents (intent_id TEXT PRIMARY KEY, category TEXT NOT NULL, seed BLOB NOT NULL,
    token BLOB NOT NULL, body BLOB NOT NULL, status TEXT NOT NULL, expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL);
CREATE TABLE offers (offer_id TEXT PRIMARY KEY, intent_id TEXT NOT NULL, vendor TEXT NOT NULL,
    vendor_did TEXT NOT NULL, token TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL,
    received_at INTEGER NOT NULL, snooze_until INTEGER);
CREATE INDEX offers_intent ON offers(intent_id);
CREATE TABLE vendors (vendor TEXT PRIMARY KEY, did TEXT NOT NULL, profile_token TEXT NOT NULL,
    profile TEXT NOT NULL, pinned_at INTEGER NOT NULL, pending_did TEXT, pending_token TEXT,
    pending_profile TEXT, status TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE rejections (reason TEXT NOT NULL, vendor TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (reason, vendor));
CREATE TABLE rejection_windows (reason TEXT NOT NULL, vendor TEXT NOT NULL,
    window_start INTEGER NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (reason, vendor));
CREATE TABLE agreements (agreement_id TEXT PRIMARY KEY, intent_id TEXT NOT NULL,
    offer_id TEXT NOT NULL, vendor TEXT NOT NULL, token BLOB NOT NULL, body BLOB NOT NULL,
    status TEXT NOT NULL, countersignature TEXT, created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL);
CREATE TABLE disclosures (id TEXT PRIMARY KEY, agreement_id TEXT NOT NULL, vendor TEXT NOT NULL,
    fields BLOB NOT NULL, token TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE revocations (agreement_id TEXT PRIMARY KEY, token TEXT NOT NULL,
    delete_data INTEGER NOT NULL, created_at INTEGER NOT NULL, ack_token TEXT, deleted INTEGER,
    acked_at INTEGER);
CREATE TABLE rules (id INTEGER PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE reviews (id TEXT PRIMARY KEY, vendor TEXT NOT NULL, agreement_id TEXT,
    data BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
    payload TEXT NOT NULL, retain INTEGER NOT NULL, created_at INTEGER NOT NULL, sent_at INTEGER);
CREATE TABLE seen_messages (id TEXT PRIMARY KEY, exp INTEGER NOT NULL);
CREATE TABLE audit (seq INTEGER PRIMARY KEY, created_at INTEGER NOT NULL,
    event_type TEXT NOT NULL, data TEXT NOT NULL, prev_hash TEXT NOT NULL,
    entry_hash TEXT NOT NULL, signature TEXT NOT NULL);
CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), count INTEGER NOT NULL,
    last_hash TEXT NOT NULL, signature TEXT NOT NULL);
-- append-only: the box itself never updates or deletes audit rows (erase drops the table).
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
"""

MIGRATIONS: list[str] = [_V1]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; returns the version found before.

    The version is re-read inside each write transaction, so several processes or threads
    opening a new box at once apply each step exactly once.
    """
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise SchemaError(f"store.db has schema version {found}; this software knows up to "
                          f"{SCHEMA_VERSION}")
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current >= SCHEMA_VERSION:
                conn.execute("COMMIT")
                return found
            for stmt in _statements(MIGRATIONS[current]):
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {current + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("store schema migrated to version %d", current + 1)


def _statements(script: str) -> list[str]:
    """Split a script into statements (executescript would commit on its own)."""
    out, buf = [], ""
    for line in script.splitlines():
        line = line.split("--", 1)[0] if not line.lstrip().startswith("CREATE TRIGGER") else line
        if not line.strip():
            continue
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError("incomplete statement in migration")
    return out
