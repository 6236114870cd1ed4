"""Schema versions of store.db, recorded in `PRAGMA user_version`.

Why this shape: an empty database gets the current schema in one step, straight from the one
declaration in schema.py; a box in the field upgrades in place through numbered steps, each
run once inside one transaction with its version bump, so a crash mid-upgrade leaves the old
version intact. To change the schema: change schema.py, add UPGRADES[n] taking version n to
n + 1 (ALTER TABLE ...), and bump SCHEMA_VERSION.
"""
from __future__ import annotations

import logging
import sqlite3

from .schema import ddl

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
# version n -> the statements that take a version-n database to n + 1
UPGRADES: dict[int, list[str]] = {
    # 1 -> 2: offers indexed by (intent, vendor), which also serves lookups by intent alone
    1: ["DROP INDEX IF EXISTS offers_intent",
        "CREATE INDEX offers_intent_vendor ON offers(intent_id, vendor)"],
    # 2 -> 3: the outbox knows when a message expires (a sealed payload cannot say)
    2: ["ALTER TABLE outbox ADD COLUMN expires_at INTEGER"],
}


class SchemaError(Exception):
    """The database was written by a newer version of this software."""


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
            steps, target = (ddl(), SCHEMA_VERSION) if current == 0 else (UPGRADES[current], current + 1)
            for stmt in steps:
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("store schema migrated to version %d", target)
