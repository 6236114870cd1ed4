"""Vendors as the box knows them (trust on first use, pinned keys, allow/block/trust) and the
counts of what was refused from them.

Why rejections live here: they are counted per vendor, and a flood must cost counters, not audit
entries: one "offers_rejected" summary per (reason, vendor) per REJECTION_WINDOW.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from ..audit import canonical_json
from ..records import VENDOR_STATUSES, VendorRecord
from .checks import MAX_NAME, StoreError, check_json_value, is_slug
from .connection import StoreBase

log = logging.getLogger(__name__)

REJECTION_WINDOW = 3600          # one "offers_rejected" summary per (reason, vendor) per hour
MAX_REJECTION_PAIRS = 500        # beyond this many (reason, vendor) pairs, count under vendor None


class VendorStore(StoreBase):
    # ---------------------------------------------------------------- vendors
    _VENDOR_COLS = "vendor, did, profile_token, profile, pinned_at, pending_did, status"

    @staticmethod
    def _vendor(r: tuple[Any, ...]) -> VendorRecord:
        return VendorRecord(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6])

    def get_vendor(self, vendor: str) -> VendorRecord | None:
        row = self._conn.execute(f"SELECT {self._VENDOR_COLS} FROM vendors WHERE vendor=?",
                                 (vendor,)).fetchone()
        return self._vendor(row) if row else None

    def list_vendors(self) -> list[VendorRecord]:
        return [self._vendor(r) for r in
                self._conn.execute(f"SELECT {self._VENDOR_COLS} FROM vendors ORDER BY vendor")]

    def upsert_vendor_profile(self, vendor: str, did: str, token: str, profile: dict[str, Any]) -> str:
        """Trust on first use: "new" (pinned), "same", or "key_changed" (not re-pinned; the
        changed key waits in pending_did until the person accepts it via set_vendor_status)."""
        check_json_value(profile, "profile")
        now = self.now()
        with self._tx():
            row = self._conn.execute("SELECT did, pending_did FROM vendors WHERE vendor=?",
                                     (vendor,)).fetchone()
            if row is None:
                self._conn.execute(
                    "INSERT INTO vendors(vendor, did, profile_token, profile, pinned_at, status,"
                    " updated_at) VALUES (?,?,?,?,?,?,?)",
                    (vendor, did, token, canonical_json(profile), now, "allowed", now))
                self.audit.append("vendor_pinned", {"vendor": vendor, "did": did})
                return "new"
            if row[0] == did:
                self._conn.execute("UPDATE vendors SET profile_token=?, profile=?, updated_at=? "
                                   "WHERE vendor=?", (token, canonical_json(profile), now, vendor))
                return "same"
            self._conn.execute("UPDATE vendors SET pending_did=?, pending_token=?, pending_profile=?,"
                               " updated_at=? WHERE vendor=?",
                               (did, token, canonical_json(profile), now, vendor))
            if row[1] != did:  # audit each new key once, not every republication
                self.audit.append("vendor_key_changed", {"vendor": vendor, "pinned_did": row[0],
                                                         "new_did": did})
            return "key_changed"

    def set_vendor_status(self, vendor: str, status: str) -> None:
        """allowed|blocked|trusted. Never changes the pinned key (see accept_vendor_key)."""
        if status not in VENDOR_STATUSES:
            raise StoreError(f"vendor status must be one of {list(VENDOR_STATUSES)}")
        now = self.now()
        with self._tx():
            row = self._conn.execute("SELECT status FROM vendors WHERE vendor=?", (vendor,)).fetchone()
            if not row:
                raise StoreError(f"no vendor {vendor}")
            self._conn.execute("UPDATE vendors SET status=?, updated_at=? WHERE vendor=?",
                               (status, now, vendor))
            if row[0] != status:
                self.audit.append("vendor_status_changed", {"vendor": vendor, "status": status})

    def accept_vendor_key(self, vendor: str, did: str) -> None:
        """Re-pin a vendor to the changed key it published — only the exact key the person saw
        (`did`), so a later impostor's key cannot slip in with the same click."""
        now = self.now()
        with self._tx():
            row = self._conn.execute("SELECT pending_did FROM vendors WHERE vendor=?", (vendor,)).fetchone()
            if not row:
                raise StoreError(f"no vendor {vendor}")
            if not row[0]:
                raise StoreError(f"vendor {vendor} has no changed key waiting")
            if row[0] != did:
                raise StoreError(f"the key waiting for {vendor} is {row[0]}, not {did}")
            self._conn.execute(
                "UPDATE vendors SET did=pending_did, profile_token=pending_token, profile=pending_profile,"
                " pinned_at=?, pending_did=NULL, pending_token=NULL, pending_profile=NULL, updated_at=?"
                " WHERE vendor=?", (now, now, vendor))
            self.audit.append("vendor_key_accepted", {"vendor": vendor, "did": did})

    # ---------------------------------------------------------------- rejected offers
    def count_rejection(self, reason: str, vendor: str | None, n: int = 1) -> None:
        """Count refused messages. The audit log gets one "offers_rejected" summary per
        (reason, vendor) per REJECTION_WINDOW, written when the window is over (or on
        flush_rejections), so a flood costs counters, not log entries."""
        reason = reason if isinstance(reason, str) and 0 < len(reason) <= MAX_NAME else "other"
        v = vendor if is_slug(vendor) else ""
        n = max(0, int(n))
        now = self.now()
        window = now - now % REJECTION_WINDOW
        with self._tx():
            if v and not self._conn.execute("SELECT 1 FROM rejections WHERE reason=? AND vendor=?",
                                            (reason, v)).fetchone():
                if self._conn.execute("SELECT COUNT(*) FROM rejections").fetchone()[0] >= MAX_REJECTION_PAIRS:
                    v = ""
            self._conn.execute("INSERT INTO rejections(reason, vendor, count) VALUES (?,?,?) "
                               "ON CONFLICT(reason, vendor) DO UPDATE SET count=count+excluded.count",
                               (reason, v, n))
            row = self._conn.execute("SELECT window_start, count FROM rejection_windows WHERE "
                                     "reason=? AND vendor=?", (reason, v)).fetchone()
            if row and row[0] == window:
                self._conn.execute("UPDATE rejection_windows SET count=count+? WHERE reason=? AND "
                                   "vendor=?", (n, reason, v))
                return
            if row:
                self._summarise(reason, v, row[0], row[1])
            self._conn.execute("INSERT OR REPLACE INTO rejection_windows(reason, vendor, window_start,"
                               " count) VALUES (?,?,?,?)", (reason, v, window, n))

    def _summarise(self, reason: str, vendor: str, window_start: int, count: int) -> None:
        self.audit.append("offers_rejected", {"reason": reason, "vendor": vendor or None,
                                              "count": count, "window_start": window_start,
                                              "window_end": window_start + REJECTION_WINDOW})

    def flush_rejections(self) -> int:
        """Write the summaries of all open windows now (before export, backup, shutdown)."""
        with self._tx():
            rows = self._conn.execute("SELECT reason, vendor, window_start, count FROM "
                                      "rejection_windows ORDER BY reason, vendor").fetchall()
            for reason, vendor, start, count in rows:
                self._summarise(reason, vendor, start, count)
            self._conn.execute("DELETE FROM rejection_windows")
        return len(rows)

    def rejection_counts(self) -> list[tuple[str, str | None, int]]:
        return [(r, v or None, c) for r, v, c in self._conn.execute(
            "SELECT reason, vendor, count FROM rejections ORDER BY reason, vendor")]

