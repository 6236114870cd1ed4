"""The box's two secret files and the at-rest cipher built from one of them.

Why separate files: a stolen `store.db` alone must reveal no personal value, so the
AES-256-GCM data key lives in `keys/data.key` (0600, in a 0700 directory) and the Ed25519
device key that signs the audit log in `keys/device.key`. Files are written atomically
(temp file + fsync + rename) so a crash never leaves half a key behind.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vrm_protocol import Identity

log = logging.getLogger(__name__)

KEYS_DIR = "keys"
DATA_KEY_FILE = "data.key"
DEVICE_KEY_FILE = "device.key"
PENDING_SUFFIX = ".pending"
_BLOB_VERSION = b"\x01"
_NONCE_LEN = 12


class KeyFileError(Exception):
    """A key file is missing, unreadable, of the wrong size or does not match the store."""


class DecryptError(Exception):
    """A ciphertext failed authentication: wrong key, tampered bytes, or moved between rows."""


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) and force mode 0700: nobody else may list the keys."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write_temp(path: Path, data: bytes, tag: str) -> Path:
    """A durable 0600 sibling of `path` holding `data`, to be renamed or linked into place."""
    tmp = path.with_name(path.name + f".{tag}{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    return tmp


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically write `data` with mode 0600 (never briefly world-readable)."""
    os.replace(_write_temp(path, data, "tmp"), path)
    fsync_dir(path.parent)


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Write a new key file only if none exists (two first opens racing must agree on one key)."""
    tmp = _write_temp(path, data, "new")
    try:
        os.link(tmp, path)
        created = True
    except FileExistsError:
        created = False
    finally:
        tmp.unlink()
    fsync_dir(path.parent)
    return created


def fsync_dir(path: Path) -> None:
    """Make a rename durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def shred_file(path: Path) -> None:
    """Overwrite then unlink: best effort on flash, but the key bytes are not left in the file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    with open(path, "r+b") as f:
        f.write(b"\0" * size)
        f.flush()
        os.fsync(f.fileno())
    path.unlink()


def _read_key(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(f"{path} is missing") from exc
    except OSError as exc:
        raise KeyFileError(f"{path} cannot be read: {exc}") from exc
    if len(raw) != 32:
        raise KeyFileError(f"{path} must hold exactly 32 bytes, holds {len(raw)}")
    return raw


def fingerprint(key: bytes) -> str:
    """A non-secret id of a key, stored in the database to detect a swapped key file."""
    return hashlib.sha256(b"vrmbox-key-fp:" + key).hexdigest()[:32]


@dataclass(frozen=True)
class Keys:
    data_key: bytes
    device: Identity


def load_or_create(data_dir: Path) -> Keys:
    """Read both keys, creating any that does not exist yet (first boot)."""
    kdir = data_dir / KEYS_DIR
    ensure_private_dir(kdir)
    out: dict[str, bytes] = {}
    for name in (DATA_KEY_FILE, DEVICE_KEY_FILE):
        path = kdir / name
        if not path.exists() and _create_exclusive(path, secrets.token_bytes(32) if name == DATA_KEY_FILE
                                                   else Identity.generate().seed):
            log.info("created %s", path)
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("%s had mode %o; fixing to 0600", path, mode)
            os.chmod(path, 0o600)
        out[name] = _read_key(path)
    return Keys(out[DATA_KEY_FILE], Identity.from_seed(out[DEVICE_KEY_FILE]))


def stage_device_key(data_dir: Path, seed: bytes) -> Path:
    """Write a device key to a pending file; `adopt_pending_device_key` moves it in after commit."""
    path = data_dir / KEYS_DIR / (DEVICE_KEY_FILE + PENDING_SUFFIX)
    write_private_file(path, seed)
    return path


def adopt_pending_device_key(data_dir: Path, expected_did: str | None) -> None:
    """Finish (or undo) a device-key swap interrupted by a crash.

    The database records the did it expects; a pending key that matches it is the one the
    committed restore wanted, any other pending key belongs to a restore that never committed.
    """
    pending = data_dir / KEYS_DIR / (DEVICE_KEY_FILE + PENDING_SUFFIX)
    if not pending.exists():
        return
    try:
        seed = _read_key(pending)
        did = Identity.from_seed(seed).did
    except (KeyFileError, ValueError):
        did = None
    if did is not None and did == expected_did:
        os.replace(pending, data_dir / KEYS_DIR / DEVICE_KEY_FILE)
        fsync_dir(pending.parent)
        log.info("adopted the restored device key")
    else:
        shred_file(pending)
        log.info("discarded a pending device key from an unfinished restore")


class Cipher:
    """AES-256-GCM for values at rest. The associated data names the table, column and row,
    so a ciphertext copied into another row or column fails to decrypt."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the data key is 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_LEN)
        return _BLOB_VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad.encode("utf-8"))

    def open(self, blob: bytes, aad: str) -> bytes:
        if not isinstance(blob, (bytes, bytearray)) or len(blob) < 1 + _NONCE_LEN + 16 \
                or blob[:1] != _BLOB_VERSION:
            raise DecryptError(f"not a sealed value ({aad})")
        nonce = bytes(blob[1:1 + _NONCE_LEN])
        try:
            return self._aead.decrypt(nonce, bytes(blob[1 + _NONCE_LEN:]), aad.encode("utf-8"))
        except InvalidTag as exc:
            raise DecryptError(f"sealed value does not authenticate ({aad})") from exc

    def seal_json(self, value: Any, aad: str) -> bytes:
        return self.seal(json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                                    allow_nan=False).encode("utf-8"), aad)

    def open_json(self, blob: bytes, aad: str) -> Any:
        return json.loads(self.open(blob, aad).decode("utf-8"))
