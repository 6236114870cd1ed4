"""The market side of the store: intents (with their keys), offers, agreements, disclosures,
revocations, the person's ranking rules, and the message ids kept against replays.

Why together: these rows reference each other (offer -> intent, agreement -> offer, revocation
-> agreement) and change together in one transaction with the message each change implies.
"""
from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

from vrm_protocol import Identity, new_id, replay_key
from vrm_protocol.codec import b64url, b64url_decode, unverified_payload

from ..audit import canonical_json
from ..records import (AGREEMENT_STATUSES, INTENT_STATUSES, OFFER_STATUSES, AgreementRecord,
                       AgreementState, DisclosureRecord, IntentRecord, IntentState, OfferRecord)
from .checks import StoreError, check_json_value
from .connection import StoreBase

log = logging.getLogger(__name__)


def _token_exp(token: str, fallback: int) -> int:
    """The exp of an already-verified compact JWS (for replay seeding); fallback if unreadable."""
    exp = unverified_payload(token).get("exp")
    return exp if isinstance(exp, int) and not isinstance(exp, bool) else fallback


def _token_id(token: str) -> str | None:
    mid = unverified_payload(token).get("id")
    return mid if isinstance(mid, str) and len(mid) <= 64 else None


class MarketStore(StoreBase):
    # ---------------------------------------------------------------- intents
    def add_intent(self, intent_id: str, category: str, identity_seed: bytes, token: str,
                   body: dict[str, Any], expires_at: int) -> None:
        if not isinstance(identity_seed, (bytes, bytearray)) or len(identity_seed) != 32:
            raise StoreError("identity_seed must be 32 bytes")
        check_json_value(body, "body")
        k = (intent_id,)
        with self._tx():
            try:
                self._conn.execute(
                    "INSERT INTO intents(intent_id, category, seed, token, body, status, expires_at,"
                    " created_at) VALUES (?,?,?,?,?,?,?,?)",
                    (intent_id, category, self._seal("intents", "seed", k, b64url(bytes(identity_seed))),
                     self._seal("intents", "token", k, token), self._seal("intents", "body", k, body),
                     "active", int(expires_at), self.now()))
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"intent {intent_id} already stored") from exc
            self.audit.append("intent_published", {"intent": intent_id, "category": category,
                                                   "expires_at": int(expires_at)})

    def _intent(self, row: tuple[Any, ...]) -> IntentRecord:
        iid, cat, seed, token, body, status, exp, created = row
        k = (iid,)
        return IntentRecord(iid, cat, Identity.from_seed(b64url_decode(self._open("intents", "seed", k, seed))),
                            self._open("intents", "token", k, token),
                            self._open("intents", "body", k, body), status, exp, created)

    _INTENT_COLS = "intent_id, category, seed, token, body, status, expires_at, created_at"

    def get_intent(self, intent_id: str) -> IntentRecord | None:
        row = self._conn.execute(f"SELECT {self._INTENT_COLS} FROM intents WHERE intent_id=?",
                                 (intent_id,)).fetchone()
        return self._intent(row) if row else None

    def list_intents(self, status: str | None = None) -> list[IntentRecord]:
        q = f"SELECT {self._INTENT_COLS} FROM intents"
        rows = (self._conn.execute(q + " WHERE status=? ORDER BY created_at, intent_id", (status,))
                if status else self._conn.execute(q + " ORDER BY created_at, intent_id"))
        return [self._intent(r) for r in rows.fetchall()]

    def intent_states(self, status: str | None = None) -> list[IntentState]:
        """Every intent's id, category, status and expiry, unsealing nothing: for the daemon's
        caches and its twice-a-second timer."""
        q = "SELECT intent_id, category, status, expires_at FROM intents"
        rows = (self._conn.execute(q + " WHERE status=? ORDER BY created_at, intent_id", (status,))
                if status else self._conn.execute(q + " ORDER BY created_at, intent_id"))
        return [IntentState(*r) for r in rows.fetchall()]

    def set_intent_status(self, intent_id: str, status: str) -> None:
        if status not in INTENT_STATUSES:
            raise StoreError(f"intent status must be one of {list(INTENT_STATUSES)}")
        with self._tx():
            row = self._conn.execute("SELECT status, category FROM intents WHERE intent_id=?",
                                     (intent_id,)).fetchone()
            if not row:
                raise StoreError(f"no intent {intent_id}")
            if row[0] == status:
                return
            self._conn.execute("UPDATE intents SET status=? WHERE intent_id=?", (status, intent_id))
            event = {"withdrawn": "intent_withdrawn", "expired": "intent_expired"}.get(
                status, "intent_status_changed")
            self.audit.append(event, {"intent": intent_id, "category": row[1], "status": status})

    # ---------------------------------------------------------------- offers
    def add_offer(self, offer_id: str, intent_id: str, vendor: str, vendor_did: str, token: str,
                  body: dict[str, Any], received_at: int, exp: int | None = None,
                  msg_id: str | None = None) -> bool:
        """Store a verified offer; False if `offer_id` is already stored (dedupe). `offer_id` is
        the box's handle for it: the offer's message id `msg_id` (the default), or another when
        that id is already the handle of an offer of another intent or signer (an id is unique
        only within its intent and signer, docs/protocol.md 11.3). `exp`: the verified token's,
        when the caller has it (else it is read from the token again)."""
        check_json_value(body, "body")
        with self._tx():
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO offers(offer_id, intent_id, vendor, vendor_did, token, body,"
                " status, received_at) VALUES (?,?,?,?,?,?,?,?)",
                (offer_id, intent_id, vendor, vendor_did, token, canonical_json(body), "new",
                 int(received_at)))
            if cur.rowcount != 1:
                return False
            self._remember_message(replay_key(intent_id, vendor_did, msg_id or offer_id), token,
                                   int(received_at) + 86400, exp)
        return True

    def find_offer(self, intent_id: str, vendor: str, vendor_did: str, token: str) -> OfferRecord | None:
        """The offer stored with exactly this token for this intent and signer (a re-send, a
        QoS 1 re-delivery), through the (intent, vendor) index: never another intent's copy."""
        row = self._conn.execute(
            f"SELECT {self._OFFER_COLS} FROM offers WHERE intent_id=? AND vendor=? AND vendor_did=?"
            " AND token=?", (intent_id, vendor, vendor_did, token)).fetchone()
        return self._offer(row) if row else None

    def count_intent_offers(self, intent_id: str) -> int:
        """Offers stored for an intent, whatever their status (indexed)."""
        return int(self._conn.execute("SELECT COUNT(*) FROM offers WHERE intent_id=?",
                                      (intent_id,)).fetchone()[0])

    _offer_changes = 0   # bumped by every offer status change made through this store

    def offers_version(self) -> tuple[int, int]:
        """Changes when an offer's status may have changed: through this store (counted) or by
        another connection to store.db (SQLite's data_version). For caches of open offers."""
        return (self._offer_changes, int(self._conn.execute("PRAGMA data_version").fetchone()[0]))

    def seen_message(self, key: str) -> bool:
        """Whether a message is kept against replays: `key` is its vrm_protocol.replay_key
        (intent, signer, id), the seen_messages primary key."""
        return self._conn.execute("SELECT 1 FROM seen_messages WHERE id=?", (key,)).fetchone() is not None

    def count_offers(self, intent_id: str, vendor: str) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM offers WHERE intent_id=? AND vendor=?",
                                      (intent_id, vendor)).fetchone()[0])

    def _remember_message(self, key: str | None, token: str, fallback_exp: int,
                          exp: int | None = None) -> None:
        if key:
            self._conn.execute("INSERT OR IGNORE INTO seen_messages(id, exp) VALUES (?,?)",
                               (key, exp if exp is not None else _token_exp(token, fallback_exp)))

    def _remember_reply(self, agreement_id: str, token: str) -> None:
        """A vendor's verified reply about an agreement, kept against replays under the
        agreement's intent and the reply's signer."""
        row = self._conn.execute("SELECT intent_id FROM agreements WHERE agreement_id=?",
                                 (agreement_id,)).fetchone()
        payload = unverified_payload(token)
        mid, iss = _token_id(token), payload.get("iss")
        if row and mid and isinstance(iss, str):
            self._remember_message(replay_key(row[0], iss, mid), token, self.now() + 86400)

    def has_offer_id(self, intent_id: str, vendor: str, vendor_did: str, msg_id: str) -> bool:
        """Whether this intent's offers from this signer include one with message id `msg_id`,
        whatever its handle (read from the stored tokens: at most the per-intent cap of rows)."""
        return any(_token_id(r[0]) == msg_id for r in self._conn.execute(
            "SELECT token FROM offers WHERE intent_id=? AND vendor=? AND vendor_did=?",
            (intent_id, vendor, vendor_did)))

    _OFFER_COLS = "offer_id, intent_id, vendor, vendor_did, token, body, status, received_at, snooze_until"

    @staticmethod
    def _offer(r: tuple[Any, ...]) -> OfferRecord:
        return OfferRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8])

    def get_offer(self, offer_id: str) -> OfferRecord | None:
        row = self._conn.execute(f"SELECT {self._OFFER_COLS} FROM offers WHERE offer_id=?",
                                 (offer_id,)).fetchone()
        return self._offer(row) if row else None

    def list_offers(self, intent_id: str | None = None, status: str | None = None) -> list[OfferRecord]:
        where, args = [], []
        if intent_id is not None:
            where.append("intent_id=?")
            args.append(intent_id)
        if status is not None:
            where.append("status=?")
            args.append(status)
        q = f"SELECT {self._OFFER_COLS} FROM offers"
        if where:
            q += " WHERE " + " AND ".join(where)
        return [self._offer(r) for r in self._conn.execute(q + " ORDER BY received_at, offer_id", args)]

    def set_offer_status(self, offer_id: str, status: str, snooze_until: int | None = None) -> None:
        if status not in OFFER_STATUSES:
            raise StoreError(f"offer status must be one of {list(OFFER_STATUSES)}")
        with self._tx():
            row = self._conn.execute("SELECT intent_id, vendor FROM offers WHERE offer_id=?",
                                     (offer_id,)).fetchone()
            if not row:
                raise StoreError(f"no offer {offer_id}")
            self._offer_changes += 1
            self._conn.execute("UPDATE offers SET status=?, snooze_until=? WHERE offer_id=?",
                               (status, snooze_until if status == "snoozed" else None, offer_id))
            event = {"accepted": "offer_accepted", "declined": "offer_declined",
                     "snoozed": "offer_snoozed"}.get(status, "offer_status_changed")
            data: dict[str, Any] = {"offer": offer_id, "intent": row[0], "vendor": row[1]}
            if status == "snoozed":
                data["snooze_until"] = snooze_until
            self.audit.append(event, data)

    def seen_message_ids(self, since: int) -> list[tuple[str, int]]:
        """(replay key, exp) still unexpired at `since`, to seed a ReplayGuard after restart."""
        return [(r[0], r[1]) for r in self._conn.execute(
            "SELECT id, exp FROM seen_messages WHERE exp >= ? ORDER BY exp", (int(since),))]

    # ---------------------------------------------------------------- agreements
    def add_agreement(self, agreement_id: str, intent_id: str, offer_id: str, vendor: str, token: str,
                      body: dict[str, Any], status: str = "pending_confirmation") -> None:
        if status not in AGREEMENT_STATUSES:
            raise StoreError(f"agreement status must be one of {list(AGREEMENT_STATUSES)}")
        check_json_value(body, "body")
        k = (agreement_id,)
        now = self.now()
        with self._tx():
            try:
                self._conn.execute(
                    "INSERT INTO agreements(agreement_id, intent_id, offer_id, vendor, token, body,"
                    " status, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (agreement_id, intent_id, offer_id, vendor,
                     self._seal("agreements", "token", k, token), self._seal("agreements", "body", k, body),
                     status, now, now))
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"agreement {agreement_id} already stored") from exc
            terms = body.get("terms") if isinstance(body, dict) else None
            self.audit.append("agreement_signed", {
                "agreement": agreement_id, "intent": intent_id, "offer": offer_id, "vendor": vendor,
                "fields": body.get("fields") if isinstance(body, dict) else None,
                "duration_days": body.get("duration_days") if isinstance(body, dict) else None,
                "terms": terms.get("id") if isinstance(terms, dict) else None,
                "status": status})

    _AGREEMENT_Q = ("SELECT a.agreement_id, a.intent_id, a.offer_id, a.vendor, a.token, a.body, a.status,"
                    " a.countersignature, a.created_at, a.updated_at, r.token, r.ack_token FROM agreements a"
                    " LEFT JOIN revocations r ON r.agreement_id = a.agreement_id")

    def _agreement(self, r: tuple[Any, ...]) -> AgreementRecord:
        k = (r[0],)
        return AgreementRecord(r[0], r[1], r[2], r[3], self._open("agreements", "token", k, r[4]),
                               self._open("agreements", "body", k, r[5]), r[6], r[7], r[8], r[9],
                               r[10], r[11])

    def get_agreement(self, agreement_id: str) -> AgreementRecord | None:
        row = self._conn.execute(self._AGREEMENT_Q + " WHERE a.agreement_id=?", (agreement_id,)).fetchone()
        return self._agreement(row) if row else None

    def list_agreements(self, status: str | None = None) -> list[AgreementRecord]:
        if status:
            rows = self._conn.execute(self._AGREEMENT_Q + " WHERE a.status=? ORDER BY a.created_at,"
                                      " a.agreement_id", (status,))
        else:
            rows = self._conn.execute(self._AGREEMENT_Q + " ORDER BY a.created_at, a.agreement_id")
        return [self._agreement(r) for r in rows.fetchall()]

    def agreement_states(self) -> list[AgreementState]:
        """Every agreement's clear columns, unsealing nothing (caches, reputation, ranking)."""
        return [AgreementState(r[0], r[1], r[2], r[3], r[4], r[5] is not None, r[6] is not None)
                for r in self._conn.execute(
                    "SELECT a.agreement_id, a.intent_id, a.vendor, a.status, a.updated_at, r.token,"
                    " r.ack_token FROM agreements a LEFT JOIN revocations r"
                    " ON r.agreement_id = a.agreement_id ORDER BY a.created_at, a.agreement_id")]

    def _agreement_vendor(self, agreement_id: str) -> str:
        row = self._conn.execute("SELECT vendor FROM agreements WHERE agreement_id=?",
                                 (agreement_id,)).fetchone()
        if not row:
            raise StoreError(f"no agreement {agreement_id}")
        return row[0]

    def set_agreement_status(self, agreement_id: str, status: str) -> None:
        if status not in AGREEMENT_STATUSES:
            raise StoreError(f"agreement status must be one of {list(AGREEMENT_STATUSES)}")
        with self._tx():
            vendor = self._agreement_vendor(agreement_id)
            self._conn.execute("UPDATE agreements SET status=?, updated_at=? WHERE agreement_id=?",
                               (status, self.now(), agreement_id))
            self.audit.append(f"agreement_{status}", {"agreement": agreement_id, "vendor": vendor})

    def set_agreement_token(self, agreement_id: str, token: str) -> None:
        """Protocol v2 signs an agreement when the person confirms it (its iat is the confirm
        time): store the signed token on the row made at accept."""
        with self._tx():
            cur = self._conn.execute(
                "UPDATE agreements SET token=?, updated_at=? WHERE agreement_id=?",
                (self._seal("agreements", "token", (agreement_id,), token), self.now(), agreement_id))
            if cur.rowcount != 1:
                raise StoreError(f"no agreement {agreement_id}")

    def add_countersignature(self, agreement_id: str, token: str) -> None:
        with self._tx():
            vendor = self._agreement_vendor(agreement_id)
            self._conn.execute("UPDATE agreements SET countersignature=?, status='active', updated_at=?"
                               " WHERE agreement_id=?", (token, self.now(), agreement_id))
            self._remember_reply(agreement_id, token)
            self.audit.append("agreement_countersigned", {"agreement": agreement_id, "vendor": vendor})

    def add_disclosure(self, agreement_id: str, fields: list[str], token: str) -> None:
        """Record data sent: which fields (names), to whom, under which agreement."""
        fields = [str(f) for f in fields]
        did = new_id()
        with self._tx():
            vendor = self._agreement_vendor(agreement_id)
            self._conn.execute(
                "INSERT INTO disclosures(id, agreement_id, vendor, fields, token, created_at)"
                " VALUES (?,?,?,?,?,?)",
                (did, agreement_id, vendor, self._seal("disclosures", "fields", (did,), fields), token,
                 self.now()))
            self.audit.append("data_disclosed", {"agreement": agreement_id, "vendor": vendor,
                                                 "fields": fields, "disclosure": did})

    def list_disclosures(self, agreement_id: str | None = None) -> list[DisclosureRecord]:
        q = "SELECT id, agreement_id, vendor, fields, token, created_at FROM disclosures"
        rows = (self._conn.execute(q + " WHERE agreement_id=? ORDER BY created_at, id", (agreement_id,))
                if agreement_id else self._conn.execute(q + " ORDER BY created_at, id"))
        return [DisclosureRecord(r[0], r[1], r[2], self._open("disclosures", "fields", (r[0],), r[3]),
                                 r[4], r[5]) for r in rows.fetchall()]

    def add_revocation(self, agreement_id: str, token: str, delete: bool) -> None:
        with self._tx():
            vendor = self._agreement_vendor(agreement_id)
            now = self.now()
            self._conn.execute("INSERT OR REPLACE INTO revocations(agreement_id, token, delete_data,"
                               " created_at) VALUES (?,?,?,?)", (agreement_id, token, int(bool(delete)), now))
            self._conn.execute("UPDATE agreements SET status='revoked', updated_at=? WHERE agreement_id=?",
                               (now, agreement_id))
            self.audit.append("agreement_revoked", {"agreement": agreement_id, "vendor": vendor,
                                                    "delete": bool(delete)})
            if delete:
                self.audit.append("deletion_requested", {"agreement": agreement_id, "vendor": vendor})

    def ack_revocation(self, agreement_id: str, token: str, deleted: bool) -> None:
        with self._tx():
            vendor = self._agreement_vendor(agreement_id)
            cur = self._conn.execute("UPDATE revocations SET ack_token=?, deleted=?, acked_at=? "
                                     "WHERE agreement_id=?", (token, int(bool(deleted)), self.now(),
                                                              agreement_id))
            if cur.rowcount != 1:
                raise StoreError(f"agreement {agreement_id} was not revoked")
            self._remember_reply(agreement_id, token)
            self.audit.append("deletion_acknowledged" if deleted else "revocation_acknowledged",
                              {"agreement": agreement_id, "vendor": vendor, "deleted": bool(deleted)})

    def pending_revocations(self) -> list[AgreementRecord]:
        rows = self._conn.execute(self._AGREEMENT_Q + " WHERE r.token IS NOT NULL AND r.ack_token IS NULL"
                                  " ORDER BY r.created_at, a.agreement_id").fetchall()
        return [self._agreement(r) for r in rows]

    # ---------------------------------------------------------------- rules
    def get_rules(self) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT value FROM rules WHERE id=1").fetchone()
        return self._open("rules", "value", (1,), row[0]) if row else None

    def set_rules(self, rules: dict[str, Any]) -> None:
        if not isinstance(rules, dict):
            raise StoreError("rules must be a JSON object")
        check_json_value(rules, "rules")
        with self._tx():
            self._conn.execute("INSERT OR REPLACE INTO rules(id, value) VALUES (1, ?)",
                               (self._seal("rules", "value", (1,), rules),))
            self.audit.append("rules_changed", {})

