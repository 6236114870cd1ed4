"""The person's own records: stuff they own or use, their suppliers, their reviews, and the
verified claims (credentials) that back profile fields.

Why sealed whole: each record is one sealed JSON value, so nothing about it but its id, vendor
slug and times is readable without the data key (docs/store.md).
"""
from __future__ import annotations

import logging
import sqlite3

from vrm_protocol import new_id

from ..records import ClaimRecord, ReviewRecord, StuffRecord, SupplierRecord
from .checks import StoreError, check_json_value, is_slug
from .vendors import VendorStore

log = logging.getLogger(__name__)


class PersonalStore(VendorStore):
    """Built on VendorStore: a supplier without a row of its own is named by its vendor profile."""

    def add_stuff(self, name: str, supplier: str | None = None, purchase_date: str | None = None,
                  price: float | None = None, currency: str | None = None,
                  warranty_end: str | None = None, notes: str | None = None) -> StuffRecord:
        if not isinstance(name, str) or not 0 < len(name) <= 200:
            raise StoreError("stuff name must be 1-200 characters")
        if price is not None and (isinstance(price, bool) or not isinstance(price, (int, float))):
            raise StoreError("price must be a number")
        sid, now = new_id(), self.now()
        data = {"name": name, "supplier": supplier, "purchase_date": purchase_date,
                "price": price, "currency": currency, "warranty_end": warranty_end, "notes": notes}
        check_json_value(data, "stuff")
        with self._tx():
            self._conn.execute("INSERT INTO stuff(id, data, created_at) VALUES (?,?,?)",
                               (sid, self._seal("stuff", "data", (sid,), data), now))
            self.audit.append("stuff_added", {"id": sid})
        return StuffRecord(sid, created_at=now, **data)

    def list_stuff(self) -> list[StuffRecord]:
        out = []
        for sid, data, created in self._conn.execute("SELECT id, data, created_at FROM stuff "
                                                     "ORDER BY created_at, id").fetchall():
            d = self._open("stuff", "data", (sid,), data)
            out.append(StuffRecord(sid, created_at=created, **{k: d.get(k) for k in
                       ("name", "supplier", "purchase_date", "price", "currency", "warranty_end", "notes")}))
        return out

    def add_supplier(self, vendor: str, name: str, notes: str | None = None) -> None:
        """Register (or update) an organisation that holds data about the person."""
        if not is_slug(vendor):
            raise StoreError("supplier id must be a lower-case slug ([a-z0-9._-])")
        if not isinstance(name, str) or not 0 < len(name) <= 200:
            raise StoreError("supplier name must be 1-200 characters")
        with self._tx():
            row = self._conn.execute("SELECT created_at FROM suppliers WHERE vendor=?", (vendor,)).fetchone()
            self._conn.execute(
                "INSERT OR REPLACE INTO suppliers(vendor, name, notes, created_at) VALUES (?,?,?,?)",
                (vendor, name, None if notes is None else self._seal("suppliers", "notes", (vendor,), notes),
                 row[0] if row else self.now()))
            self.audit.append("supplier_added" if not row else "supplier_changed", {"vendor": vendor})

    def list_suppliers(self) -> list[SupplierRecord]:
        """Registered suppliers plus every vendor with an agreement, each with agreements in force."""
        in_force: dict[str, list[str]] = {}
        for aid, vendor in self._conn.execute(
                "SELECT agreement_id, vendor FROM agreements WHERE status IN ('confirmed', 'active')"
                " ORDER BY created_at, agreement_id"):
            in_force.setdefault(vendor, []).append(aid)
        out: dict[str, SupplierRecord] = {}
        for vendor, name, notes, created in self._conn.execute(
                "SELECT vendor, name, notes, created_at FROM suppliers ORDER BY vendor").fetchall():
            out[vendor] = SupplierRecord(vendor, name, self._open("suppliers", "notes", (vendor,), notes),
                                         created, in_force.get(vendor, []))
        for vendor, aids in in_force.items():
            if vendor not in out:
                v = self.get_vendor(vendor)
                name = (v.profile.get("name") if v else None) or vendor
                out[vendor] = SupplierRecord(vendor, str(name), None, 0, aids)
        return [out[k] for k in sorted(out)]

    def add_review(self, vendor: str, text: str, rating: int | None = None,
                   agreement_id: str | None = None) -> ReviewRecord:
        if not isinstance(text, str) or len(text) > 5000:
            raise StoreError("review text must be at most 5000 characters")
        if rating is not None and (not isinstance(rating, int) or not 1 <= rating <= 5):
            raise StoreError("rating must be 1..5")
        rid, now = new_id(), self.now()
        with self._tx():
            self._conn.execute("INSERT INTO reviews(id, vendor, agreement_id, data, created_at)"
                               " VALUES (?,?,?,?,?)",
                               (rid, vendor, agreement_id,
                                self._seal("reviews", "data", (rid,), {"text": text, "rating": rating}), now))
            self.audit.append("review_written", {"id": rid, "vendor": vendor})
        return ReviewRecord(rid, vendor, agreement_id, rating, text, now)

    def list_reviews(self) -> list[ReviewRecord]:
        out = []
        for rid, vendor, aid, data, created in self._conn.execute(
                "SELECT id, vendor, agreement_id, data, created_at FROM reviews ORDER BY created_at, id").fetchall():
            d = self._open("reviews", "data", (rid,), data)
            out.append(ReviewRecord(rid, vendor, aid, d.get("rating"), d.get("text", ""), created))
        return out

    # ---------------------------------------------------------------- claims
    def add_claim(self, claim: ClaimRecord) -> None:
        """Store an already verified credential (see device/claims.py for the checks)."""
        data = {"types": claim.types, "subject": claim.subject, "valid_from": claim.valid_from,
                "jwt": claim.jwt}
        check_json_value(data, "claim")
        with self._tx():
            try:
                self._conn.execute("INSERT INTO claims(id, issuer, data, valid_until, imported_at)"
                                   " VALUES (?,?,?,?,?)",
                                   (claim.id, claim.issuer, self._seal("claims", "data", (claim.id,), data),
                                    claim.valid_until, claim.imported_at))
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"claim {claim.id} already imported") from exc
            self.audit.append("claim_imported", {"id": claim.id, "issuer": claim.issuer,
                                                 "types": claim.types})

    def list_claims(self) -> list[ClaimRecord]:
        out = []
        for cid, issuer, data, until, imported in self._conn.execute(
                "SELECT id, issuer, data, valid_until, imported_at FROM claims ORDER BY imported_at, id").fetchall():
            d = self._open("claims", "data", (cid,), data)
            out.append(ClaimRecord(cid, issuer, d["types"], d["subject"], d.get("valid_from"), until,
                                   d["jwt"], imported))
        return out

