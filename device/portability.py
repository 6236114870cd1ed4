"""Data portability: a signed JSON export of everything, and a passphrase-encrypted backup
that also carries the device key.

Why signed: a plain export can be edited; the device signature (and the audit chain inside it)
turns any edit into a clear error at import instead of a silently altered store. Why the
device key only in the backup: the export is for reading and moving data, the backup is for
becoming the same box again (same key, so the audit log verifies without a handover entry).
Every import is checked completely before the store is touched, then written in one
transaction (Store.replace_all), so a bad file leaves the store exactly as it was.
Format: docs/store.md.
"""
from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from vrm_io.files import write_private_file
from vrm_protocol import Identity, ProtocolError
from vrm_protocol.didkey import public_bytes_from_did

from vrm_protocol.codec import b64url, b64url_decode

from .audit import (AuditHead, AuditEntry, canonical_json, entry_from_dict, entry_to_dict,
                    verify_chain)
from .files import read_limited
from .store import SCHEMA_VERSION, Store, StoreError, check_tables

log = logging.getLogger(__name__)

EXPORT_FORMAT = "vrmbox-export"
BACKUP_FORMAT = "vrmbox-backup"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 256 * 1024 * 1024
SCRYPT_N = 2 ** 15
SCRYPT_R = 8
SCRYPT_P = 1
_MAX_N, _MAX_R, _MAX_P = 2 ** 20, 32, 16   # refuse KDF settings that would exhaust the Pi
_MAX_KDF_MEMORY = 256 * 1024 * 1024         # scrypt needs 128·n·r bytes
_MAX_KDF_WORK = 2 ** 24                     # n·r·p: about 16× our own setting


class PortabilityError(ValueError):
    """The file is malformed, tampered with, for another box state, or the passphrase is wrong."""


@dataclass(frozen=True)
class ExportDoc:
    """A checked export: signature and audit chain verified against `device_did`."""

    device_did: str
    tables: dict[str, list[dict[str, Any]]]
    entries: list[AuditEntry]
    head: AuditHead | None
    raw: dict[str, Any]


def _field_bytes(text: Any, what: str) -> bytes:
    """A base64url field of the file, or a PortabilityError naming the field."""
    if not isinstance(text, str):
        raise PortabilityError(f"{what} must be base64url text")
    try:
        return b64url_decode(text)
    except ProtocolError as exc:
        raise PortabilityError(f"{what} is not base64url") from exc


def _doc_digest(doc: dict[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "signature"}
    return hashlib.sha256(b"vrmbox-export-v1:" + canonical_json(body).encode("utf-8")).digest()


# ------------------------------------------------------------------ export
def build_export(store: Store) -> dict[str, Any]:
    """Everything in the store as one signed JSON object (the export is audited first, so the
    file contains its own "export" entry)."""
    store.flush_rejections()
    with store.transaction():  # the entry, the head and the data read as one state
        store.record_event("export", {"format_version": FORMAT_VERSION})
        return _signed_doc(store)


def _signed_doc(store: Store) -> dict[str, Any]:
    head = store.audit.head()
    doc: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "version": FORMAT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "exported_at": store.now(),
        "device_did": store.device_identity.did,
        "data": store.snapshot(),
        "audit": {"entries": [entry_to_dict(e) for e in store.audit.entries()],
                  "head": None if head is None else {"count": head.count, "last_hash": head.last_hash,
                                                     "signature": head.signature}},
    }
    doc["signature"] = b64url(store.device_identity.private_key.sign(_doc_digest(doc)))
    return doc


def write_json_file(path: Path, obj: Any) -> None:
    """Atomic, 0600 (an export holds personal data in the clear)."""
    text = json.dumps(obj, ensure_ascii=False, indent=1, sort_keys=True)
    write_private_file(Path(path), text.encode("utf-8"))


def export_to_file(store: Store, path: Path) -> dict[str, Any]:
    doc = build_export(store)
    write_json_file(path, doc)
    log.info("exported the store to %s", path)
    return doc


def read_json_file(path: Path) -> Any:
    path = Path(path)
    try:
        raw = read_limited(path, MAX_FILE_BYTES)
    except OSError as exc:
        raise PortabilityError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PortabilityError(f"{path} is not valid JSON") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_export(doc: Any) -> ExportDoc:
    """Parse and verify an export object completely (pure): shape, signature, audit chain."""
    if not isinstance(doc, dict):
        raise PortabilityError("an export is a JSON object")
    if doc.get("format") != EXPORT_FORMAT:
        raise PortabilityError(f"not a VRM box export (format must be {EXPORT_FORMAT!r})")
    if doc.get("version") != FORMAT_VERSION:
        raise PortabilityError(f"unsupported export version {str(doc.get('version'))[:20]}")
    expected = {"format", "version", "schema_version", "exported_at", "device_did", "data", "audit",
                "signature"}
    if set(doc) != expected:
        raise PortabilityError(f"export must have exactly the keys {sorted(expected)}")
    if not isinstance(doc["schema_version"], int) or doc["schema_version"] > SCHEMA_VERSION:
        raise PortabilityError("export was written by a newer version of this software")
    did = doc["device_did"]
    try:
        pub = Ed25519PublicKey.from_public_bytes(public_bytes_from_did(did))
    except ProtocolError as exc:
        raise PortabilityError("device_did is not an Ed25519 did:key") from exc
    try:
        pub.verify(_field_bytes(doc["signature"], "signature"), _doc_digest(doc))
    except (InvalidSignature, ValueError) as exc:
        if isinstance(exc, PortabilityError):
            raise
        raise PortabilityError("export signature does not verify: the file was altered") from exc
    except TypeError as exc:
        raise PortabilityError("export content cannot be serialised") from exc
    try:
        check_tables(doc["data"])
    except StoreError as exc:
        raise PortabilityError(f"export data is malformed: {exc}") from exc
    audit = doc["audit"]
    if not isinstance(audit, dict) or set(audit) != {"entries", "head"} or not isinstance(audit["entries"], list):
        raise PortabilityError("audit must be an object with entries (list) and head")
    try:
        entries = [entry_from_dict(e) for e in audit["entries"]]
    except ValueError as exc:
        raise PortabilityError(f"audit entry malformed: {exc}") from exc
    h = audit["head"]
    head = None
    if h is not None:
        if not isinstance(h, dict) or set(h) != {"count", "last_hash", "signature"} \
                or not isinstance(h["count"], int) or not isinstance(h["last_hash"], str) \
                or not isinstance(h["signature"], str):
            raise PortabilityError("audit head malformed")
        head = AuditHead(h["count"], h["last_hash"], h["signature"])
    result = verify_chain(entries, head, did)
    if not result.ok:
        raise PortabilityError(f"audit log in the file does not verify: entry {result.first_bad}: "
                               f"{result.reason}")
    return ExportDoc(did, doc["data"], entries, head, doc)


def _guard_target(store: Store, doc: ExportDoc, force: bool) -> None:
    """Only onto a fresh box unless forced; never change a read-only field of this box."""
    if not force and not store.is_fresh():
        raise PortabilityError("this box already holds data; import/restore only onto a fresh box "
                               "(or use --force to replace everything)")
    incoming = {r["name"]: r for r in doc.tables.get("profile", [])}
    for name, f in store.get_profile().items():
        if f.provenance != "read-only":
            continue
        new = incoming.get(name)
        if new is None or new["provenance"] != "read-only" or new["source"] != f.source \
                or canonical_json(new["value"]) != canonical_json(f.value):
            raise PortabilityError(f"the file would change read-only field {name!r}; refused")


# Settings an imported file may not bring: they loosen consent, which needs a press on this box.
PRESS_ONLY_SETTINGS = frozenset({"companion_only_confirmation"})


def _without_press_only(tables: dict[str, Any]) -> dict[str, Any]:
    rows = tables.get("settings") or []
    dropped = [r for r in rows if isinstance(r, dict) and r.get("key") in PRESS_ONLY_SETTINGS]
    if dropped:
        log.warning("not importing %s: turn it on again with a press on the box",
                    ", ".join(sorted(str(r["key"]) for r in dropped)))
    return {**tables, "settings": [r for r in rows if r not in dropped]} if dropped else tables


def import_doc(store: Store, doc: ExportDoc, force: bool = False) -> None:
    """Replace the store with a checked export. The log continues with an "imported" entry
    signed by this box's key, naming the exporting key (a key handover, see audit.py)."""
    _guard_target(store, doc, force)
    store.replace_all(_without_press_only(doc.tables), doc.entries, event=(
        "imported", {"previous_device": doc.device_did, "current_device": store.device_identity.did,
                     "entries": len(doc.entries)}))
    log.info("imported %d audit entries from an export of %s", len(doc.entries), doc.device_did)


def import_from_file(store: Store, path: Path, force: bool = False) -> ExportDoc:
    doc = check_export(read_json_file(path))
    import_doc(store, doc, force)
    return doc


# ------------------------------------------------------------------ backup
def _kdf(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    if not isinstance(passphrase, str) or not passphrase:
        raise PortabilityError("an empty passphrase is not allowed")
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def build_backup(store: Store, passphrase: str, *, n: int = SCRYPT_N) -> dict[str, Any]:
    """An export plus the device key, sealed with AES-256-GCM under a scrypt-derived key."""
    if len(passphrase or "") < 8:
        raise PortabilityError("the backup passphrase must be at least 8 characters")
    store.flush_rejections()
    with store.transaction():  # the entry, the head and the data read as one state
        store.record_event("backup", {"format_version": FORMAT_VERSION, "kdf": "scrypt"})
        inner = {"export": _signed_doc(store), "device_seed": b64url(store.device_identity.seed)}
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    header = {"format": BACKUP_FORMAT, "version": FORMAT_VERSION,
              "kdf": {"name": "scrypt", "n": n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": b64url(salt)},
              "cipher": "A256GCM", "nonce": b64url(nonce)}
    key = _kdf(passphrase, salt, n, SCRYPT_R, SCRYPT_P)
    ct = AESGCM(key).encrypt(nonce, canonical_json(inner).encode("utf-8"),
                             canonical_json(header).encode("utf-8"))
    return {**header, "ciphertext": b64url(ct)}


def backup_to_file(store: Store, path: Path, passphrase: str, *, n: int = SCRYPT_N) -> None:
    write_json_file(path, build_backup(store, passphrase, n=n))
    log.info("wrote an encrypted backup to %s", path)


def open_backup(obj: Any, passphrase: str) -> tuple[ExportDoc, bytes]:
    """Decrypt and check a backup (pure): (checked export, device seed)."""
    if not isinstance(obj, dict) or obj.get("format") != BACKUP_FORMAT:
        raise PortabilityError(f"not a VRM box backup (format must be {BACKUP_FORMAT!r})")
    if obj.get("version") != FORMAT_VERSION:
        raise PortabilityError(f"unsupported backup version {str(obj.get('version'))[:20]}")
    if set(obj) != {"format", "version", "kdf", "cipher", "nonce", "ciphertext"} or obj["cipher"] != "A256GCM":
        raise PortabilityError("backup header malformed")
    kdf = obj["kdf"]
    if not isinstance(kdf, dict) or set(kdf) != {"name", "n", "r", "p", "salt"} or kdf["name"] != "scrypt":
        raise PortabilityError("backup kdf must be scrypt with n, r, p, salt")
    n, r, p = kdf["n"], kdf["r"], kdf["p"]
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (n, r, p)) \
            or not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P) \
            or 128 * n * r > _MAX_KDF_MEMORY or n * r * p > _MAX_KDF_WORK:
        raise PortabilityError("backup kdf parameters out of range")
    salt, nonce = _field_bytes(kdf["salt"], "salt"), _field_bytes(obj["nonce"], "nonce")
    if len(nonce) != 12 or not 8 <= len(salt) <= 64:
        raise PortabilityError("backup nonce or salt has the wrong size")
    ct = _field_bytes(obj["ciphertext"], "ciphertext")
    header = {k: v for k, v in obj.items() if k != "ciphertext"}
    key = _kdf(passphrase, salt, n, r, p)
    try:
        plain = AESGCM(key).decrypt(nonce, ct, canonical_json(header).encode("utf-8"))
    except InvalidTag as exc:
        raise PortabilityError("wrong passphrase, or the backup was altered or damaged") from exc
    try:
        inner = json.loads(plain.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PortabilityError("backup content is not JSON") from exc
    if not isinstance(inner, dict) or set(inner) != {"export", "device_seed"}:
        raise PortabilityError("backup content malformed")
    seed = _field_bytes(inner["device_seed"], "device_seed")
    if len(seed) != 32:
        raise PortabilityError("backup device key has the wrong size")
    doc = check_export(inner["export"])
    if Identity.from_seed(seed).did != doc.device_did:
        raise PortabilityError("backup device key does not match the export it carries")
    return doc, seed


def restore_from_file(store: Store, path: Path, passphrase: str, force: bool = False) -> ExportDoc:
    """Become the backed-up box again: same data, same audit log, same device key."""
    doc, seed = open_backup(read_json_file(path), passphrase)
    _guard_target(store, doc, force)
    store.replace_all(_without_press_only(doc.tables), doc.entries, event=("restored", {"entries": len(doc.entries)}),
                      device_seed=seed)
    log.info("restored %d audit entries from a backup", len(doc.entries))
    return doc


def full_dump(store: Store) -> dict[str, Any]:
    """Everything, decrypted, for comparisons (tests, `--json` diagnostics)."""
    head = store.audit.head()
    return {"device_did": store.device_identity.did, "data": store.snapshot(),
            "audit": [entry_to_dict(e) for e in store.audit.entries()],
            "head": None if head is None else [head.count, head.last_hash, head.signature]}
