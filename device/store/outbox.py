"""The outbox: messages the daemon must publish, kept across restarts and crashes.

Why sealed: an agreement or intent token spells out purpose, fields and description, so a
queued payload is as personal as the rows it came from. Why `_reseal_outbox`: erase writes the
messages still to send back in the clear for a moment (the old data key is about to go); the
next open seals them again under the new key.
"""
from __future__ import annotations

import logging

from ..records import OutboxRecord
from .connection import StoreBase

log = logging.getLogger(__name__)


class OutboxStore(StoreBase):
    def queue_outbox(self, topic: str, payload: str | bytes, retain: bool = False,
                     expires_at: int | None = None) -> int:
        """Queue a message for the daemon to publish (survives restarts). Sealed like any
        personal value: an agreement or intent token spells out purpose, fields, description.
        `expires_at`: the signed message's exp, needed when the payload is sealed (a JWE)."""
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8")
        with self._tx():
            cur = self._conn.execute("INSERT INTO outbox(topic, payload, retain, created_at, expires_at)"
                                     " VALUES (?,?,?,?,?)",
                                     (topic, b"", int(bool(retain)), self.now(), expires_at))
            oid = int(cur.lastrowid)
            self._conn.execute("UPDATE outbox SET payload=? WHERE id=?",
                               (self._seal("outbox", "payload", (oid,), payload), oid))
            return oid

    def pending_outbox(self) -> list[OutboxRecord]:
        return [OutboxRecord(r[0], r[1], self._open("outbox", "payload", (r[0],), r[2]), bool(r[3]), r[4], r[5],
                             r[6])
                for r in self._conn.execute(
                    "SELECT id, topic, payload, retain, created_at, sent_at, expires_at FROM outbox"
                    " WHERE sent_at IS NULL ORDER BY id").fetchall()]

    def mark_sent(self, outbox_id: int) -> None:
        with self._tx():
            self._conn.execute("UPDATE outbox SET sent_at=? WHERE id=? AND sent_at IS NULL",
                               (self.now(), int(outbox_id)))

    def _reseal_outbox(self) -> None:
        """Outbox rows left in the clear by an erase (under the old key) are sealed again."""
        rows = self._conn.execute("SELECT id, payload FROM outbox WHERE typeof(payload)='text'").fetchall()
        if not rows:
            return
        with self._tx():
            for oid, payload in rows:
                self._conn.execute("UPDATE outbox SET payload=? WHERE id=?",
                                   (self._seal("outbox", "payload", (oid,), payload), oid))
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no old page image stays in the WAL

