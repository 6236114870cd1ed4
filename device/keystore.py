"""The box's two keys, where they come from (key providers), and the at-rest cipher.

Why separate from the database: a stolen `store.db` alone must reveal no personal value, so
the AES-256-GCM data key and the Ed25519 device key that signs the audit log come from a
`KeyProvider`. Today's default, `FileKeyProvider`, keeps them in `keys/data.key` and
`keys/device.key` (0600, in a 0700 directory), written atomically (temp file + fsync + rename)
so a crash never leaves half a key behind. `PassphraseKeyProvider` keeps them wrapped under a
scrypt-derived key, in a vault that may live off the card (the phone, later). What either
protects against: docs/store.md.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, MutableMapping, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from vrm_io.files import fsync_dir, write_private_file
from vrm_protocol import Identity

log = logging.getLogger(__name__)

KEYS_DIR = "keys"
DATA_KEY_FILE = "data.key"
DEVICE_KEY_FILE = "device.key"
PENDING_SUFFIX = ".pending"
_BLOB_VERSION = b"\x01"
_NONCE_LEN = 12


class KeyFileError(Exception):
    """A key is missing, unreadable, of the wrong size, locked by another passphrase, or does
    not match the store (whatever the provider: the name is kept from the file-only days)."""


class DecryptError(Exception):
    """A ciphertext failed authentication: wrong key, tampered bytes, or moved between rows."""


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) and force mode 0700: nobody else may list the keys."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Write a new key file only if none exists (two first opens racing must agree on one key)."""
    try:
        write_private_file(path, data, exclusive=True)
    except FileExistsError:
        return False
    return True


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


def _expected_seed(read: Callable[[], bytes], expected_did: str | None) -> bytes | None:
    """A staged device seed if it is the one the committed store expects, else None."""
    try:
        seed = read()
        return seed if Identity.from_seed(seed).did == expected_did else None
    except (KeyFileError, ValueError):
        return None


def adopt_pending_device_key(data_dir: Path, expected_did: str | None) -> None:
    """Finish (or undo) a device-key swap interrupted by a crash.

    The database records the did it expects; a pending key that matches it is the one the
    committed restore wanted, any other pending key belongs to a restore that never committed.
    """
    pending = data_dir / KEYS_DIR / (DEVICE_KEY_FILE + PENDING_SUFFIX)
    if not pending.exists():
        return
    if _expected_seed(lambda: _read_key(pending), expected_did) is not None:
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


# ------------------------------------------------------------------ key providers
class KeyProvider(Protocol):
    """Where the store's keys come from. `load` gets what the store's meta table recorded
    (None: not recorded yet, so a missing key may be created); the store itself checks that the
    keys returned match. Device-key swaps (restore) are staged, then settled after the commit."""

    data_key_name: str      # for messages: "keys/data.key does not belong to this store"
    device_key_name: str

    def load(self, *, data_key_fp: str | None, device_did: str | None) -> Keys: ...

    def stage_device_key(self, seed: bytes) -> None: ...

    def settle_device_key(self, expected_did: str | None) -> None: ...

    def destroy(self) -> None: ...


class FileKeyProvider:
    """Today's keys: two files under `DATA_DIR/keys/`, next to the database."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_key_name = f"{KEYS_DIR}/{DATA_KEY_FILE}"
        self.device_key_name = f"{KEYS_DIR}/{DEVICE_KEY_FILE}"

    def load(self, *, data_key_fp: str | None, device_did: str | None) -> Keys:
        kdir = self.data_dir / KEYS_DIR
        if data_key_fp and not (kdir / DATA_KEY_FILE).exists():
            raise KeyFileError(f"{kdir / DATA_KEY_FILE} is missing; the store cannot "
                               "be decrypted (restore a backup or run `vrmbox erase`)")
        if device_did and not (kdir / DEVICE_KEY_FILE).exists():
            raise KeyFileError(f"{kdir / DEVICE_KEY_FILE} is missing")
        return load_or_create(self.data_dir)

    def stage_device_key(self, seed: bytes) -> None:
        stage_device_key(self.data_dir, seed)

    def settle_device_key(self, expected_did: str | None) -> None:
        adopt_pending_device_key(self.data_dir, expected_did)

    def destroy(self) -> None:
        kdir = self.data_dir / KEYS_DIR
        for name in (DATA_KEY_FILE, DEVICE_KEY_FILE, DEVICE_KEY_FILE + PENDING_SUFFIX):
            shred_file(kdir / name)


class PassphraseKeyProvider:
    """Keys wrapped (AES-256-GCM) under a key derived from a passphrase with scrypt.

    `vault` holds only the salt and wrapped keys, so it may be kept anywhere (a dict, a file,
    the phone); without the passphrase it opens nothing. A wrong passphrase is a KeyFileError.
    """

    SALT = "salt"

    def __init__(self, passphrase: str, vault: MutableMapping[str, bytes], *, n: int = 2 ** 15,
                 r: int = 8, p: int = 1) -> None:
        if not isinstance(passphrase, str) or not passphrase:
            raise KeyFileError("an empty passphrase unlocks nothing")
        self._passphrase = passphrase.encode("utf-8")
        self._vault = vault
        self._params = (n, r, p)
        self._kek: Cipher | None = None
        self.data_key_name = "the data key this passphrase unlocks"
        self.device_key_name = "the device key this passphrase unlocks"

    def _cipher(self) -> Cipher:
        if self._kek is None:
            if self.SALT not in self._vault:
                self._vault[self.SALT] = secrets.token_bytes(16)
            n, r, p = self._params
            self._kek = Cipher(Scrypt(salt=bytes(self._vault[self.SALT]), length=32, n=n, r=r,
                                      p=p).derive(self._passphrase))
        return self._kek

    def _unwrap(self, name: str) -> bytes:
        try:
            key = self._cipher().open(self._vault[name], f"vrmbox/keys/{name}")
        except DecryptError as exc:
            raise KeyFileError(f"the passphrase does not unlock {name} (wrong passphrase?)") from exc
        if len(key) != 32:
            raise KeyFileError(f"{name} in the vault must be 32 bytes, is {len(key)}")
        return key

    def _wrap(self, name: str, key: bytes) -> None:
        self._vault[name] = self._cipher().seal(key, f"vrmbox/keys/{name}")

    def load(self, *, data_key_fp: str | None, device_did: str | None) -> Keys:
        for name, recorded, new in ((DATA_KEY_FILE, data_key_fp, lambda: secrets.token_bytes(32)),
                                    (DEVICE_KEY_FILE, device_did, lambda: Identity.generate().seed)):
            if name not in self._vault:
                if recorded:
                    raise KeyFileError(f"{name} is missing from the vault")
                self._wrap(name, new())
        return Keys(self._unwrap(DATA_KEY_FILE), Identity.from_seed(self._unwrap(DEVICE_KEY_FILE)))

    def stage_device_key(self, seed: bytes) -> None:
        self._wrap(DEVICE_KEY_FILE + PENDING_SUFFIX, seed)

    def settle_device_key(self, expected_did: str | None) -> None:
        pending = DEVICE_KEY_FILE + PENDING_SUFFIX
        if pending not in self._vault:
            return
        seed = _expected_seed(lambda: self._unwrap(pending), expected_did)
        if seed is not None:
            self._wrap(DEVICE_KEY_FILE, seed)  # wrapped again: the seal names its slot
            log.info("adopted the restored device key")
        del self._vault[pending]

    def destroy(self) -> None:
        self._vault.clear()
        self._kek = None
