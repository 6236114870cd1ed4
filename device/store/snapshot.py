"""The whole store as plain rows (export) and back (import, restore), driven by schema.TABLES.

Why one transaction: replace_all checks every row first (checks.check_tables), then swaps data,
audit log and, for a restore, the device key together, so a bad file leaves the store exactly
as it was.
"""
from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

from vrm_protocol import Identity

from ..audit import AuditEntry, canonical_json
from ..keystore import Keys
from .checks import StoreError, check_tables
from .connection import audit_rows_deletable
from .outbox import OutboxStore
from .schema import TABLES

log = logging.getLogger(__name__)


class SnapshotStore(OutboxStore):
    """Built on OutboxStore: this box's unsent messages survive an import."""

    def is_fresh(self) -> bool:
        """True for a box never used or just erased: no data, and a log that is empty or holds
        only the "erase" entry (queued deletion requests in the outbox do not count)."""
        if self._conn.execute("SELECT 1 FROM audit WHERE event_type != 'erase' LIMIT 1").fetchone():
            return False
        return not any(self._conn.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()
                       for t in TABLES if t != "outbox")

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every table, decrypted, as JSON-ready rows in primary-key order."""
        out: dict[str, list[dict[str, Any]]] = {}
        for table, (pk, cols) in TABLES.items():
            names = [c for c, _ in cols]
            rows = []
            for r in self._conn.execute(f"SELECT {', '.join(names)} FROM {table} ORDER BY {', '.join(pk)}"):
                row = dict(zip(names, r))
                key = tuple(row[k] for k in pk)
                for c, kind in cols:
                    base = kind.rstrip("?")
                    if base == "sealed":
                        row[c] = self._open(table, c, key, row[c])
                    elif base == "json" and row[c] is not None:
                        row[c] = json.loads(row[c])
                rows.append(row)
            out[table] = rows
        return out

    def replace_all(self, tables: dict[str, list[dict[str, Any]]], entries: list[AuditEntry],
                    event: tuple[str, dict[str, Any]] | None = None,
                    device_seed: bytes | None = None) -> None:
        """Replace the whole store with `tables` + audit `entries` in ONE transaction.

        Rows are checked first (check_tables); any failure rolls back and leaves the store as
        it was. `event` is appended (signed by this box's key) after the imported entries.
        With `device_seed` (restore of a backup) the device key is swapped too: staged in a
        pending file, adopted after commit (or on next open if we crash in between).
        """
        check_tables(tables)
        new_ident = Identity.from_seed(device_seed) if device_seed is not None else None
        if new_ident is not None:
            self._provider.stage_device_key(device_seed)  # type: ignore[arg-type]
        old_keys = self._keys
        try:
            with self._tx():
                if new_ident is not None:
                    self._keys = Keys(old_keys.data_key, new_ident)
                    self._conn.execute("UPDATE meta SET value=? WHERE key='device_did'", (new_ident.did,))
                with audit_rows_deletable(self._conn):
                    self._conn.execute("DELETE FROM audit")
                self._conn.execute("DELETE FROM audit_head")
                unsent = self.pending_outbox()
                for table in TABLES:
                    self._conn.execute(f"DELETE FROM {table}")
                for table, rows in tables.items():
                    self._insert_rows(table, rows)
                # this box's unsent messages (e.g. deletion requests queued by erase) still go out
                for rec in unsent:  # sealed again: the seal is bound to the new row id
                    self.queue_outbox(rec.topic, rec.payload, rec.retain, rec.expires_at)
                for e in entries:
                    self._conn.execute(
                        "INSERT INTO audit(seq, created_at, event_type, data, prev_hash, entry_hash,"
                        " signature) VALUES (?,?,?,?,?,?,?)",
                        (e.seq, e.created_at, e.event_type, canonical_json(e.data), e.prev_hash,
                         e.entry_hash, e.signature))
                self.audit.resign_head()
                if event:
                    self.audit.append(*event)
        except BaseException:
            self._keys = old_keys
            if new_ident is not None:
                self._provider.settle_device_key(old_keys.device.did)
            raise
        if new_ident is not None:
            self._provider.settle_device_key(new_ident.did)

    def _insert_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        pk, cols = TABLES[table]
        names = [c for c, _ in cols]
        for row in rows:
            key = tuple(row[k] for k in pk)
            values = []
            for c, kind in cols:
                v, base = row[c], kind.rstrip("?")
                if v is not None and base == "sealed":
                    v = self._seal(table, c, key, v)
                elif v is not None and base == "json":
                    v = canonical_json(v)
                values.append(v)
            try:
                self._conn.execute(f"INSERT INTO {table}({', '.join(names)}) VALUES "
                                   f"({', '.join('?' * len(names))})", values)
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"{table}: duplicate or invalid row {key}: {exc}") from exc

