"""The tamper-evident audit log: an append-only hash chain, each entry signed by the device key.

Why a chain *and* a signed head: the chain (prev_hash) exposes modified, removed, inserted and
reordered entries; the signatures stop someone without the device key from rebuilding the
chain; the signed head (entry count + last hash, rewritten in the same transaction as every
append) exposes a truncated tail, which a chain alone cannot.

Entry data never holds personal values (profile values, notes, claim contents, intent
descriptions, rules): only ids, vendor slugs, field *names*, counts and statuses. So the log can
be exported and shown without decryption. See docs/store.md.

`verify_chain` is pure (used on the live table and on an export before import).
"""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vrm_protocol import Identity, ProtocolError
from vrm_protocol.didkey import public_bytes_from_did

from vrm_protocol.codec import b64url, b64url_decode

from .records import AuditEntry

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
# Entries that hand the log over from one device key to the next (import onto a new box).
# They are signed by the new key and name the previous one in data["previous_device"].
KEY_HANDOVER_EVENTS = frozenset({"imported", "device_key_changed"})
MAX_DATA_BYTES = 8192


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def entry_bytes(seq: int, created_at: int, event_type: str, data: dict[str, Any],
                prev_hash: str) -> bytes:
    """The exact bytes that are hashed: canonical JSON of the five fields (docs/store.md)."""
    return canonical_json({"seq": seq, "created_at": created_at, "event_type": event_type,
                           "data": data, "prev_hash": prev_hash}).encode("utf-8")


def compute_hash(seq: int, created_at: int, event_type: str, data: dict[str, Any],
                 prev_hash: str) -> str:
    return hashlib.sha256(entry_bytes(seq, created_at, event_type, data, prev_hash)).hexdigest()


def head_bytes(count: int, last_hash: str) -> bytes:
    return canonical_json({"audit_head": {"count": count, "last_hash": last_hash}}).encode("utf-8")


def _sig_ok(did: str | None, signature: str, message: bytes) -> bool:
    if did is None or not isinstance(signature, str):
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(public_bytes_from_did(did))
        key.verify(b64url_decode(signature), message)
        return True
    except (InvalidSignature, ProtocolError, ValueError):
        return False


@dataclass(frozen=True)
class AuditHead:
    count: int
    last_hash: str
    signature: str


@dataclass(frozen=True)
class VerifyResult:
    """`first_bad` is the seq of the first entry that fails (or the first missing seq when
    the tail was cut off); None when ok or when only the head itself is bad."""

    ok: bool
    first_bad: int | None
    reason: str
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "first_bad": self.first_bad, "reason": self.reason,
                "count": self.count}


def verify_chain(entries: list[AuditEntry], head: AuditHead | None, anchor_did: str) -> VerifyResult:
    """Check a whole log against the device did it must end with (pure).

    Structure: sequence numbers 1..n without gaps, prev_hash links, recomputed hashes (first
    failure). Signatures: walked from the newest entry back, so the signer of older entries is
    learned from key-handover entries already proven by a newer key. The lower of the two
    failures is reported. Then the head (count, last hash, signature by the anchor key).
    """
    n = len(entries)
    structural: tuple[int, str] | None = None
    prev = GENESIS_HASH
    for i, e in enumerate(entries, start=1):
        if e.seq != i:
            bad = min(e.seq, i) if isinstance(e.seq, int) else i
            structural = (bad, f"sequence break: expected seq {i}, found {e.seq}")
            break
        if e.prev_hash != prev:
            structural = (i, "prev_hash does not match the previous entry")
            break
        try:
            h = compute_hash(e.seq, e.created_at, e.event_type, e.data, e.prev_hash)
        except (TypeError, ValueError):
            h = None
        if h != e.entry_hash:
            structural = (i, "entry hash does not match its content")
            break
        prev = e.entry_hash

    # Signatures are over each stored entry_hash, so they stay meaningful even past a chain
    # break: an inserted entry is named by its own bad signature.
    bad_sigs: list[int] = []
    signer: str | None = anchor_did
    for e in reversed(entries):
        try:
            digest = bytes.fromhex(e.entry_hash)
        except (TypeError, ValueError):
            digest = b""
        ok = bool(digest) and _sig_ok(signer, e.signature, digest)
        if not ok:
            bad_sigs.append(e.seq)
        if e.event_type in KEY_HANDOVER_EVENTS:
            if not ok:  # an unproven handover: older signers are unknown, stop here
                break
            prev_did = e.data.get("previous_device") if isinstance(e.data, dict) else None
            signer = prev_did if isinstance(prev_did, str) else None
    first_sig = min(bad_sigs) if bad_sigs else None
    if structural and (first_sig is None or structural[0] <= first_sig):
        return VerifyResult(False, structural[0], structural[1], n)
    if first_sig is not None:
        return VerifyResult(False, first_sig, "signature does not verify", n)

    if head is None:  # every store signs a head (count 0) when it is created
        return VerifyResult(False, None, "audit head is missing", n)
    if not _sig_ok(anchor_did, head.signature, head_bytes(head.count, head.last_hash)):
        return VerifyResult(False, None, "audit head signature does not verify", n)
    last = entries[-1].entry_hash if entries else GENESIS_HASH
    if head.count > n:
        return VerifyResult(False, n + 1, f"log truncated: head says {head.count} entries, "
                                          f"found {n}", n)
    if head.count != n or head.last_hash != last:
        first = head.count + 1 if head.count < n else n
        return VerifyResult(False, first, "entries after the signed head, or head mismatch", n)
    return VerifyResult(True, None, "ok", n)


class AuditLog:
    """The live log in a store's SQLite connection.

    `append` joins the caller's open transaction (so a change and its audit entry commit
    together) or, outside one, commits on its own.
    """

    def __init__(self, conn: sqlite3.Connection, identity: Callable[[], Identity],
                 clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._identity = identity
        self._clock = clock

    def append(self, event_type: str, data: dict[str, Any] | None = None) -> AuditEntry:
        data = dict(data or {})
        if not isinstance(event_type, str) or not 0 < len(event_type) <= 64:
            raise ValueError("event_type must be a short string")
        if len(canonical_json(data).encode("utf-8")) > MAX_DATA_BYTES:
            raise ValueError(f"audit data larger than {MAX_DATA_BYTES} bytes")
        if self._conn.in_transaction:
            return self._append(event_type, data)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            entry = self._append(event_type, data)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return entry

    def _append(self, event_type: str, data: dict[str, Any]) -> AuditEntry:
        row = self._conn.execute("SELECT seq, entry_hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS_HASH)
        created_at = int(self._clock())
        h = compute_hash(seq, created_at, event_type, data, prev)
        ident = self._identity()
        sig = b64url(ident.private_key.sign(bytes.fromhex(h)))
        self._conn.execute(
            "INSERT INTO audit(seq, created_at, event_type, data, prev_hash, entry_hash, signature)"
            " VALUES (?,?,?,?,?,?,?)", (seq, created_at, event_type, canonical_json(data), prev, h, sig))
        self._write_head(seq, h, ident)
        return AuditEntry(seq, created_at, event_type, data, prev, h, sig)

    def _write_head(self, count: int, last_hash: str, ident: Identity) -> None:
        sig = b64url(ident.private_key.sign(head_bytes(count, last_hash)))
        self._conn.execute("INSERT OR REPLACE INTO audit_head(id, count, last_hash, signature)"
                           " VALUES (1,?,?,?)", (count, last_hash, sig))

    def resign_head(self) -> None:
        """Sign the current head with the current device key (after an import or erase)."""
        row = self._conn.execute("SELECT seq, entry_hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        count, last = (row[0], row[1]) if row else (0, GENESIS_HASH)
        self._write_head(count, last, self._identity())

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0])

    def entries(self, offset: int = 0, limit: int | None = None) -> list[AuditEntry]:
        """Entries in seq order; a page when offset/limit are given."""
        lim = -1 if limit is None else max(0, int(limit))
        rows = self._conn.execute(
            "SELECT seq, created_at, event_type, data, prev_hash, entry_hash, signature FROM audit"
            " ORDER BY seq LIMIT ? OFFSET ?", (lim, max(0, int(offset)))).fetchall()
        return [_row_entry(r) for r in rows]

    def head(self) -> AuditHead | None:
        row = self._conn.execute("SELECT count, last_hash, signature FROM audit_head WHERE id=1").fetchone()
        return AuditHead(int(row[0]), str(row[1]), str(row[2])) if row else None

    def verify(self, anchor_did: str | None = None) -> VerifyResult:
        """Verify the whole log against this device's key (or `anchor_did`)."""
        try:
            entries = self.entries()
        except (ValueError, TypeError) as exc:
            return VerifyResult(False, None, f"unreadable entry: {exc}", 0)
        return verify_chain(entries, self.head(), anchor_did or self._identity().did)


def _row_entry(r: Iterable[Any]) -> AuditEntry:
    seq, created_at, event_type, data, prev_hash, entry_hash, signature = r
    try:
        parsed = json.loads(data)
    except (TypeError, ValueError):
        parsed = {"_unparseable": str(data)[:200]}
    return AuditEntry(seq, created_at, event_type, parsed, prev_hash, entry_hash, signature)


def entry_to_dict(e: AuditEntry) -> dict[str, Any]:
    return {"seq": e.seq, "created_at": e.created_at, "event_type": e.event_type, "data": e.data,
            "prev_hash": e.prev_hash, "entry_hash": e.entry_hash, "signature": e.signature}


def entry_from_dict(d: Any) -> AuditEntry:
    """Parse one exported entry strictly (ValueError on any wrong shape)."""
    if not isinstance(d, dict) or set(d) != {"seq", "created_at", "event_type", "data",
                                             "prev_hash", "entry_hash", "signature"}:
        raise ValueError("audit entry must have exactly seq, created_at, event_type, data, "
                         "prev_hash, entry_hash, signature")
    for k in ("seq", "created_at"):
        if not isinstance(d[k], int) or isinstance(d[k], bool):
            raise ValueError(f"audit entry {k} must be an integer")
    for k in ("event_type", "prev_hash", "entry_hash", "signature"):
        if not isinstance(d[k], str):
            raise ValueError(f"audit entry {k} must be a string")
    if not isinstance(d["data"], dict):
        raise ValueError("audit entry data must be an object")
    if len(d["entry_hash"]) != 64 or len(d["prev_hash"]) != 64:
        raise ValueError("audit hashes are 64 hex characters")
    try:
        bytes.fromhex(d["entry_hash"])
    except ValueError as exc:
        raise ValueError("audit entry_hash is not hex") from exc
    return AuditEntry(d["seq"], d["created_at"], d["event_type"], d["data"], d["prev_hash"],
                      d["entry_hash"], d["signature"])
