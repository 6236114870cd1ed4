"""The box's personal data store: SQLite (WAL) on disk, personal values sealed with AES-GCM,
every change committed together with its audit entry.

Why one class with many small methods: the daemon, the CLI and the companion app all change
data only through here, so provenance rules, encryption and auditing cannot be bypassed.
One `Store` per thread (one sqlite3 connection each). The API is the contract in CONTEXT.md.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from vrm_protocol import Identity, new_id

from vrm_protocol.codec import b64url

from . import keystore
from .audit import AuditLog, AuditEntry, canonical_json
from .keystore import Cipher, KeyFileError
from .migrations import SCHEMA_VERSION, migrate
from .records import (AGREEMENT_STATUSES, INTENT_STATUSES, OFFER_STATUSES, PROVENANCES,
                      VENDOR_STATUSES, AgreementRecord, AgreementState, ClaimRecord,
                      DisclosureRecord, IntentRecord, IntentState, OfferRecord, OutboxRecord, ProfileField, ReviewRecord,
                      StuffRecord, SupplierRecord, VendorRecord)

log = logging.getLogger(__name__)

DB_FILE = "store.db"
REJECTION_WINDOW = 3600          # one "offers_rejected" summary per (reason, vendor) per hour
MAX_REJECTION_PAIRS = 500        # beyond this many (reason, vendor) pairs, count under vendor None
MAX_NAME = 64
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class StoreError(ValueError):
    """A request the store refuses (unknown id, bad value); nothing was changed."""


class ProvenanceError(StoreError):
    """An edit that the field's provenance forbids (e.g. editing a read-only field)."""


# ------------------------------------------------------------------ table specs (export/import)
# column kinds: text, int, json (plain JSON text), sealed (JSON sealed with the data key);
# a trailing "?" allows NULL. `pk` columns name the row in the AES-GCM associated data.
TABLES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "settings": (("key",), (("key", "text"), ("value", "sealed"))),
    "profile": (("name",), (("name", "text"), ("value", "sealed"), ("provenance", "text"),
                            ("source", "text?"), ("annotation", "sealed?"), ("updated_at", "int"))),
    "stuff": (("id",), (("id", "text"), ("data", "sealed"), ("created_at", "int"))),
    "suppliers": (("vendor",), (("vendor", "text"), ("name", "text"), ("notes", "sealed?"),
                                ("created_at", "int"))),
    "claims": (("id",), (("id", "text"), ("issuer", "text"), ("data", "sealed"),
                         ("valid_until", "int?"), ("imported_at", "int"))),
    "intents": (("intent_id",), (("intent_id", "text"), ("category", "text"), ("seed", "sealed"),
                                 ("token", "sealed"), ("body", "sealed"), ("status", "text"),
                                 ("expires_at", "int"), ("created_at", "int"))),
    "offers": (("offer_id",), (("offer_id", "text"), ("intent_id", "text"), ("vendor", "text"),
                               ("vendor_did", "text"), ("token", "text"), ("body", "json"),
                               ("status", "text"), ("received_at", "int"), ("snooze_until", "int?"))),
    "vendors": (("vendor",), (("vendor", "text"), ("did", "text"), ("profile_token", "text"),
                              ("profile", "json"), ("pinned_at", "int"), ("pending_did", "text?"),
                              ("pending_token", "text?"), ("pending_profile", "json?"),
                              ("status", "text"), ("updated_at", "int"))),
    "rejections": (("reason", "vendor"), (("reason", "text"), ("vendor", "text"), ("count", "int"))),
    "rejection_windows": (("reason", "vendor"), (("reason", "text"), ("vendor", "text"),
                                                 ("window_start", "int"), ("count", "int"))),
    "agreements": (("agreement_id",), (("agreement_id", "text"), ("intent_id", "text"),
                                       ("offer_id", "text"), ("vendor", "text"), ("token", "sealed"),
                                       ("body", "sealed"), ("status", "text"),
                                       ("countersignature", "text?"), ("created_at", "int"),
                                       ("updated_at", "int"))),
    "disclosures": (("id",), (("id", "text"), ("agreement_id", "text"), ("vendor", "text"),
                              ("fields", "sealed"), ("token", "text"), ("created_at", "int"))),
    "revocations": (("agreement_id",), (("agreement_id", "text"), ("token", "text"),
                                        ("delete_data", "int"), ("created_at", "int"),
                                        ("ack_token", "text?"), ("deleted", "int?"),
                                        ("acked_at", "int?"))),
    "rules": (("id",), (("id", "int"), ("value", "sealed"))),
    "reviews": (("id",), (("id", "text"), ("vendor", "text"), ("agreement_id", "text?"),
                          ("data", "sealed"), ("created_at", "int"))),
    "outbox": (("id",), (("id", "int"), ("topic", "text"), ("payload", "sealed"), ("retain", "int"),
                         ("created_at", "int"), ("sent_at", "int?"))),
    "seen_messages": (("id",), (("id", "text"), ("exp", "int"))),
}

_ENUMS = {("profile", "provenance"): PROVENANCES, ("intents", "status"): INTENT_STATUSES,
          ("offers", "status"): OFFER_STATUSES, ("vendors", "status"): VENDOR_STATUSES,
          ("agreements", "status"): AGREEMENT_STATUSES}


def _set_wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    """Switching to WAL can report "database is locked" while another process opens the same
    new file, busy timeout or not; retry briefly instead of failing the open."""
    for i in range(attempts):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or i == attempts - 1:
                raise
            time.sleep(0.05)


def _aad(table: str, column: str, key: tuple[Any, ...]) -> str:
    return f"vrmbox/{table}.{column}:" + "\x1f".join(str(k) for k in key)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _token_exp(token: str, fallback: int) -> int:
    """The exp of an already-verified compact JWS (for replay seeding); fallback if unreadable."""
    try:
        payload = json.loads(_unb64(token.split(".")[1]))
        exp = payload.get("exp")
        if isinstance(exp, int) and not isinstance(exp, bool):
            return exp
    except (IndexError, ValueError, binascii.Error, AttributeError, UnicodeDecodeError):
        pass
    return fallback


def _token_id(token: str) -> str | None:
    try:
        payload = json.loads(_unb64(token.split(".")[1]))
        mid = payload.get("id")
        return mid if isinstance(mid, str) and len(mid) <= 64 else None
    except (IndexError, ValueError, binascii.Error, AttributeError, UnicodeDecodeError):
        return None


def _check_json_value(value: Any, what: str) -> None:
    try:
        canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} must be a JSON value: {exc}") from exc


class Store:
    """See module docstring. Construct with `Store.open(data_dir)`."""

    def __init__(self, data_dir: Path, conn: sqlite3.Connection, keys: keystore.Keys,
                 clock: Callable[[], float]) -> None:
        self.data_dir = data_dir
        self._conn = conn
        self._keys = keys
        self._cipher = Cipher(keys.data_key)
        self._clock = clock
        self.audit = AuditLog(conn, lambda: self._keys.device, clock)

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def open(cls, data_dir: Path | str, clock: Callable[[], float] = time.time) -> "Store":
        """Open (creating on first use) the store in `data_dir`; migrates the schema."""
        data_dir = Path(data_dir)
        keystore.ensure_private_dir(data_dir)
        db = data_dir / DB_FILE
        fresh_file = not db.exists()
        # One thread at a time, but not always the opener: the daemon hands the store to its worker.
        conn = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            if fresh_file:
                os.chmod(db, 0o600)
            _set_wal(conn)
            conn.execute("PRAGMA synchronous=FULL")   # a committed audit entry survives power loss
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA secure_delete=ON")   # deleted rows are zeroed, not left in pages
            migrate(conn)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            keystore.adopt_pending_device_key(data_dir, meta.get("device_did"))
            kdir = data_dir / keystore.KEYS_DIR
            if meta.get("data_key_fp") and not (kdir / keystore.DATA_KEY_FILE).exists():
                raise KeyFileError(f"{kdir / keystore.DATA_KEY_FILE} is missing; the store cannot "
                                   "be decrypted (restore a backup or run `vrmbox erase`)")
            if meta.get("device_did") and not (kdir / keystore.DEVICE_KEY_FILE).exists():
                raise KeyFileError(f"{kdir / keystore.DEVICE_KEY_FILE} is missing")
            keys = keystore.load_or_create(data_dir)
            fp = keystore.fingerprint(keys.data_key)
            if meta.get("data_key_fp", fp) != fp:
                raise KeyFileError("keys/data.key does not belong to this store")
            if meta.get("device_did", keys.device.did) != keys.device.did:
                raise KeyFileError("keys/device.key does not belong to this store")
            fresh_store = "data_key_fp" not in meta or "device_did" not in meta
            if fresh_store:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('data_key_fp', ?)", (fp,))
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('device_did', ?)", (keys.device.did,))
                conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        store = cls(data_dir, conn, keys, clock)
        if fresh_store:  # a signed empty head: deleting the whole log later is detectable
            with store._tx():
                store.audit.resign_head()
        store._reseal_outbox()
        return store

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

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def device_identity(self) -> Identity:
        return self._keys.device

    def now(self) -> int:
        return int(self._clock())

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One transaction; joins an outer one (so a change and its audit entry commit together)."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def transaction(self) -> Any:
        """Group several store calls (and their audit entries) into one atomic commit."""
        return self._tx()

    def _seal(self, table: str, column: str, key: tuple[Any, ...], value: Any) -> bytes:
        return self._cipher.seal_json(value, _aad(table, column, key))

    def _open(self, table: str, column: str, key: tuple[Any, ...], blob: bytes | None) -> Any:
        if blob is None:
            return None
        return self._cipher.open_json(blob, _aad(table, column, key))

    def record_event(self, event_type: str, data: dict[str, Any] | None = None) -> None:
        """Audit an event that changes no table (phone paired/unpaired, export ...)."""
        with self._tx():
            self.audit.append(event_type, data or {})

    # ---------------------------------------------------------------- profile
    def set_profile_field(self, name: str, value: Any, provenance: str = "self",
                          source: str | None = None) -> None:
        """Set a profile field. A read-only field can only be replaced by its own source with
        provenance read-only (the professional channel); the person may only annotate it."""
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise StoreError("field name must be 1-64 characters of [A-Za-z0-9_.-]")
        if value is None:
            raise StoreError(f"field {name} needs a value (delete the field instead of setting null)")
        if provenance not in PROVENANCES:
            raise StoreError(f"provenance must be one of {list(PROVENANCES)}")
        if provenance in ("co-managed", "read-only", "claim") and not source:
            raise StoreError(f"provenance {provenance} needs a source (vendor, issuer or claim id)")
        if source is not None and (not isinstance(source, str) or len(source) > 200):
            raise StoreError("source must be a string of at most 200 characters")
        _check_json_value(value, "value")
        with self._tx():
            row = self._conn.execute("SELECT provenance, source, annotation FROM profile WHERE name=?",
                                     (name,)).fetchone()
            if row and row[0] == "read-only" and not (provenance == "read-only" and source == row[1]):
                raise ProvenanceError(f"profile field {name!r} is read-only (set by {row[1]}); "
                                      "you can annotate it but not edit it")
            if provenance == "claim" and not self._conn.execute(
                    "SELECT 1 FROM claims WHERE id=?", (source,)).fetchone():
                raise StoreError(f"no verified claim {source!r} to back this field")
            annotation = row[2] if row else None
            self._conn.execute(
                "INSERT OR REPLACE INTO profile(name, value, provenance, source, annotation, updated_at)"
                " VALUES (?,?,?,?,?,?)",
                (name, self._seal("profile", "value", (name,), value), provenance, source,
                 annotation, self.now()))
            self.audit.append("profile_changed", {"field": name, "provenance": provenance,
                                                  "source": source})

    def annotate_profile_field(self, name: str, annotation: str | None) -> None:
        """The person's note on any field, including read-only ones (it never changes the value)."""
        if annotation is not None and (not isinstance(annotation, str) or len(annotation) > 2000):
            raise StoreError("annotation must be text of at most 2000 characters")
        with self._tx():
            if not self._conn.execute("SELECT 1 FROM profile WHERE name=?", (name,)).fetchone():
                raise StoreError(f"no profile field {name!r}")
            sealed = None if annotation is None else self._seal("profile", "annotation", (name,), annotation)
            self._conn.execute("UPDATE profile SET annotation=? WHERE name=?", (sealed, name))
            self.audit.append("profile_annotated", {"field": name})

    def delete_profile_field(self, name: str) -> None:
        with self._tx():
            row = self._conn.execute("SELECT provenance FROM profile WHERE name=?", (name,)).fetchone()
            if not row:
                raise StoreError(f"no profile field {name!r}")
            if row[0] == "read-only":
                raise ProvenanceError(f"profile field {name!r} is read-only; it cannot be deleted")
            self._conn.execute("DELETE FROM profile WHERE name=?", (name,))
            self.audit.append("profile_deleted", {"field": name})

    def get_profile(self) -> dict[str, ProfileField]:
        out = {}
        for name, value, prov, source, ann, upd in self._conn.execute(
                "SELECT name, value, provenance, source, annotation, updated_at FROM profile ORDER BY name"):
            out[name] = ProfileField(name, self._open("profile", "value", (name,), value), prov, source,
                                     self._open("profile", "annotation", (name,), ann), upd)
        return out

    # ---------------------------------------------------------------- settings
    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return default if row is None else self._open("settings", "value", (key,), row[0])

    def set_setting(self, key: str, value: Any) -> None:
        """Small JSON values; a change of value is audited by key (never by value)."""
        if not isinstance(key, str) or not 0 < len(key) <= 128:
            raise StoreError("setting key must be 1-128 characters")
        if value is None:
            raise StoreError(f"setting {key} needs a value")
        _check_json_value(value, "setting value")
        with self._tx():
            old = self.get_setting(key, _MISSING)
            if old is not _MISSING and canonical_json(old) == canonical_json(value):
                return
            self._conn.execute("INSERT OR REPLACE INTO settings(key, value) VALUES (?,?)",
                               (key, self._seal("settings", "value", (key,), value)))
            self.audit.append("setting_changed", {"key": key})

    def all_settings(self) -> dict[str, Any]:
        return {k: self._open("settings", "value", (k,), v)
                for k, v in self._conn.execute("SELECT key, value FROM settings ORDER BY key")}

    # ---------------------------------------------------------------- intents
    def add_intent(self, intent_id: str, category: str, identity_seed: bytes, token: str,
                   body: dict[str, Any], expires_at: int) -> None:
        if not isinstance(identity_seed, (bytes, bytearray)) or len(identity_seed) != 32:
            raise StoreError("identity_seed must be 32 bytes")
        _check_json_value(body, "body")
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
        return IntentRecord(iid, cat, Identity.from_seed(_unb64(self._open("intents", "seed", k, seed))),
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
                  body: dict[str, Any], received_at: int) -> bool:
        """Store a verified offer; False if this offer id is already stored (dedupe)."""
        _check_json_value(body, "body")
        with self._tx():
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO offers(offer_id, intent_id, vendor, vendor_did, token, body,"
                " status, received_at) VALUES (?,?,?,?,?,?,?,?)",
                (offer_id, intent_id, vendor, vendor_did, token, canonical_json(body), "new",
                 int(received_at)))
            if cur.rowcount != 1:
                return False
            self._remember_message(token, offer_id, int(received_at) + 86400)
        return True

    def count_offers(self, intent_id: str, vendor: str) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM offers WHERE intent_id=? AND vendor=?",
                                      (intent_id, vendor)).fetchone()[0])

    def _remember_message(self, token: str, msg_id: str | None, fallback_exp: int) -> None:
        mid = msg_id or _token_id(token)
        if mid:
            self._conn.execute("INSERT OR IGNORE INTO seen_messages(id, exp) VALUES (?,?)",
                               (mid, _token_exp(token, fallback_exp)))

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
            self._conn.execute("UPDATE offers SET status=?, snooze_until=? WHERE offer_id=?",
                               (status, snooze_until if status == "snoozed" else None, offer_id))
            event = {"accepted": "offer_accepted", "declined": "offer_declined",
                     "snoozed": "offer_snoozed"}.get(status, "offer_status_changed")
            data: dict[str, Any] = {"offer": offer_id, "intent": row[0], "vendor": row[1]}
            if status == "snoozed":
                data["snooze_until"] = snooze_until
            self.audit.append(event, data)

    def seen_message_ids(self, since: int) -> list[tuple[str, int]]:
        """(message id, exp) still unexpired at `since`, to seed a ReplayGuard after restart."""
        return [(r[0], r[1]) for r in self._conn.execute(
            "SELECT id, exp FROM seen_messages WHERE exp >= ? ORDER BY exp", (int(since),))]

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
        _check_json_value(profile, "profile")
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
        v = vendor if isinstance(vendor, str) and _SLUG_RE.match(vendor) else ""
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

    # ---------------------------------------------------------------- agreements
    def add_agreement(self, agreement_id: str, intent_id: str, offer_id: str, vendor: str, token: str,
                      body: dict[str, Any], status: str = "pending_confirmation") -> None:
        if status not in AGREEMENT_STATUSES:
            raise StoreError(f"agreement status must be one of {list(AGREEMENT_STATUSES)}")
        _check_json_value(body, "body")
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

    def add_countersignature(self, agreement_id: str, token: str) -> None:
        with self._tx():
            vendor = self._agreement_vendor(agreement_id)
            self._conn.execute("UPDATE agreements SET countersignature=?, status='active', updated_at=?"
                               " WHERE agreement_id=?", (token, self.now(), agreement_id))
            self._remember_message(token, None, self.now() + 86400)
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
            self._remember_message(token, None, self.now() + 86400)
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
        _check_json_value(rules, "rules")
        with self._tx():
            self._conn.execute("INSERT OR REPLACE INTO rules(id, value) VALUES (1, ?)",
                               (self._seal("rules", "value", (1,), rules),))
            self.audit.append("rules_changed", {})

    # ---------------------------------------------------------------- stuff, suppliers, reviews
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
        _check_json_value(data, "stuff")
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
        if not isinstance(vendor, str) or not _SLUG_RE.match(vendor):
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
        _check_json_value(data, "claim")
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

    # ---------------------------------------------------------------- outbox
    def queue_outbox(self, topic: str, payload: str | bytes, retain: bool = False) -> int:
        """Queue a message for the daemon to publish (survives restarts). Sealed like any
        personal value: an agreement or intent token spells out purpose, fields, description."""
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8")
        with self._tx():
            cur = self._conn.execute("INSERT INTO outbox(topic, payload, retain, created_at) VALUES (?,?,?,?)",
                                     (topic, b"", int(bool(retain)), self.now()))
            oid = int(cur.lastrowid)
            self._conn.execute("UPDATE outbox SET payload=? WHERE id=?",
                               (self._seal("outbox", "payload", (oid,), payload), oid))
            return oid

    def pending_outbox(self) -> list[OutboxRecord]:
        return [OutboxRecord(r[0], r[1], self._open("outbox", "payload", (r[0],), r[2]), bool(r[3]), r[4], r[5])
                for r in self._conn.execute(
                    "SELECT id, topic, payload, retain, created_at, sent_at FROM outbox WHERE sent_at IS NULL"
                    " ORDER BY id").fetchall()]

    def mark_sent(self, outbox_id: int) -> None:
        with self._tx():
            self._conn.execute("UPDATE outbox SET sent_at=? WHERE id=? AND sent_at IS NULL",
                               (self.now(), int(outbox_id)))

    def prune(self, keep_sent_s: int = 7 * 86400) -> int:
        """Forget what only protects against replays that can no longer happen (expired message
        ids) and outbox rows sent long ago. Returns the rows deleted."""
        now = self.now()
        with self._tx():
            a = self._conn.execute("DELETE FROM seen_messages WHERE exp < ?", (now - 300,)).rowcount
            b = self._conn.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?",
                                   (now - keep_sent_s,)).rowcount
        return a + b

    # ---------------------------------------------------------------- snapshot (export/import)
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
            keystore.stage_device_key(self.data_dir, device_seed)  # type: ignore[arg-type]
        old_keys = self._keys
        try:
            with self._tx():
                if new_ident is not None:
                    self._keys = keystore.Keys(old_keys.data_key, new_ident)
                    self._conn.execute("UPDATE meta SET value=? WHERE key='device_did'", (new_ident.did,))
                self._conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
                self._conn.execute("DELETE FROM audit")
                self._conn.execute("DELETE FROM audit_head")
                self._conn.execute("CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN "
                                   "SELECT RAISE(ABORT, 'audit is append-only'); END")
                unsent = self.pending_outbox()
                for table in TABLES:
                    self._conn.execute(f"DELETE FROM {table}")
                for table, rows in tables.items():
                    self._insert_rows(table, rows)
                # this box's unsent messages (e.g. deletion requests queued by erase) still go out
                for rec in unsent:  # sealed again: the seal is bound to the new row id
                    self.queue_outbox(rec.topic, rec.payload, rec.retain)
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
                keystore.adopt_pending_device_key(self.data_dir, old_keys.device.did)
            raise
        if new_ident is not None:
            keystore.adopt_pending_device_key(self.data_dir, new_ident.did)

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

    def set_agreement_token(self, agreement_id: str, token: str) -> None:
        """Protocol v2 signs an agreement when the person confirms it (its iat is the confirm
        time): store the signed token on the row made at accept."""
        with self._tx():
            cur = self._conn.execute(
                "UPDATE agreements SET token=?, updated_at=? WHERE agreement_id=?",
                (self._seal("agreements", "token", (agreement_id,), token), self.now(), agreement_id))
            if cur.rowcount != 1:
                raise StoreError(f"no agreement {agreement_id}")


_MISSING = object()


def check_tables(tables: Any) -> None:
    """Check imported table rows against TABLES (exact columns, kinds, enums); StoreError if not."""
    if not isinstance(tables, dict):
        raise StoreError("data must be an object of tables")
    unknown = set(tables) - set(TABLES)
    if unknown:
        raise StoreError(f"unknown table(s) {sorted(unknown)[:5]}")
    for table, rows in tables.items():
        pk, cols = TABLES[table]
        if not isinstance(rows, list):
            raise StoreError(f"{table} must be a list of rows")
        names = {c for c, _ in cols}
        for i, row in enumerate(rows):
            where = f"{table}[{i}]"
            if not isinstance(row, dict) or set(row) != names:
                raise StoreError(f"{where} must have exactly the columns {sorted(names)}")
            for c, kind in cols:
                v, base = row[c], kind.rstrip("?")
                if v is None:
                    if not kind.endswith("?"):
                        raise StoreError(f"{where}.{c} must not be null")
                    continue
                if base == "text" and not isinstance(v, str):
                    raise StoreError(f"{where}.{c} must be a string")
                if base == "int" and (not isinstance(v, int) or isinstance(v, bool) or abs(v) > 2**62):
                    raise StoreError(f"{where}.{c} must be an integer")
                if base in ("json", "sealed"):
                    _check_json_value(v, f"{where}.{c}")
                allowed = _ENUMS.get((table, c))
                if allowed and v not in allowed:
                    raise StoreError(f"{where}.{c} must be one of {list(allowed)}")
            _check_row_shape(table, row, where)


def _check_row_shape(table: str, row: dict[str, Any], where: str) -> None:
    """Shapes that the record builders rely on, so an imported row can always be read back."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise StoreError(f"{where}: {msg}")
    if table == "intents":
        try:
            seed = _unb64(row["seed"]) if isinstance(row["seed"], str) else b""
        except (binascii.Error, ValueError):
            seed = b""
        need(len(seed) == 32, "seed must be 32 bytes, base64url")
        need(isinstance(row["body"], dict) and isinstance(row["token"], str), "body/token malformed")
    elif table in ("offers",):
        need(isinstance(row["body"], dict), "body must be an object")
    elif table == "vendors":
        need(isinstance(row["profile"], dict), "profile must be an object")
    elif table == "agreements":
        need(isinstance(row["body"], dict) and isinstance(row["token"], str), "body/token malformed")
    elif table == "stuff":
        need(isinstance(row["data"], dict) and isinstance(row["data"].get("name"), str), "data.name missing")
    elif table == "claims":
        d = row["data"]
        need(isinstance(d, dict) and isinstance(d.get("jwt"), str) and isinstance(d.get("types"), list)
             and isinstance(d.get("subject"), dict), "data must hold jwt, types, subject")
    elif table == "reviews":
        need(isinstance(row["data"], dict), "data must be an object")
    elif table == "disclosures":
        need(isinstance(row["fields"], list), "fields must be a list")
    elif table == "profile":
        need(row["annotation"] is None or isinstance(row["annotation"], str), "annotation must be text")
    elif table == "rules":
        need(row["id"] == 1 and isinstance(row["value"], dict), "rules row must be id 1 with an object")


__all__ = ["Store", "StoreError", "ProvenanceError", "TABLES", "check_tables", "SCHEMA_VERSION",
           "KeyFileError"]
