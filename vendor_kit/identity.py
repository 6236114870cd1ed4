"""A vendor's identity on disk: who it is, its signing key and its disclosure key.

Why three files: the Ed25519 seed (signs profile, offers, countersignatures, acks) and the
X25519 private JWK (opens disclosures) are secrets, each in its own 0600 file inside a 0700
directory; `vendor.json` is the public part (slug, name, categories, did, enc_key), kept so
`load` can check that the keys on disk are the ones the vendor announced.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from vrm_io.files import write_private_file
from vrm_protocol.codec import b64url, b64url_decode
from vrm_protocol import DecryptionKey, EncryptionKey, Identity, ProtocolError, VendorProfile
from vrm_protocol.messages import check_slug

log = logging.getLogger(__name__)

SEED_FILE = "signing.seed"
ENC_KEY_FILE = "encryption.jwk"
PUBLIC_FILE = "vendor.json"


class IdentityError(Exception):
    """The identity directory is missing, incomplete, inconsistent, or would be overwritten."""


@dataclass(frozen=True)
class VendorIdentity:
    """Everything a worker needs to speak as this vendor."""

    vendor: str
    name: str
    categories: tuple[str, ...]
    signing: Identity = field(repr=False)
    decryption: DecryptionKey = field(repr=False)
    url: str | None = None

    @property
    def did(self) -> str:
        return self.signing.did

    @property
    def enc_key(self) -> EncryptionKey:
        return self.decryption.public

    def profile(self) -> VendorProfile:
        return VendorProfile(vendor=self.vendor, name=self.name, categories=list(self.categories),
                             enc_key=self.enc_key, url=self.url)

    def public_json(self) -> dict:
        return {"vendor": self.vendor, "name": self.name, "categories": list(self.categories),
                "url": self.url, "did": self.did, "enc_key": self.enc_key.as_jwk()}

    @classmethod
    def generate(cls, vendor: str, name: str, categories: list[str] | tuple[str, ...],
                 url: str | None = None) -> "VendorIdentity":
        """Fresh keys, nothing written (tests and embedders that keep keys elsewhere)."""
        _check_meta(vendor, name, categories)
        return cls(vendor=vendor, name=name, categories=tuple(categories),
                   signing=Identity.generate(), decryption=DecryptionKey.generate(), url=url)

    @classmethod
    def create(cls, directory: Path | str, vendor: str, name: str,
               categories: list[str] | tuple[str, ...], url: str | None = None) -> "VendorIdentity":
        """Generate keys and write them to `directory` (0700); refuse if an identity is there."""
        directory = Path(directory)
        ident = cls.generate(vendor, name, categories, url)
        existing = [n for n in (SEED_FILE, ENC_KEY_FILE, PUBLIC_FILE) if (directory / n).exists()]
        if existing:
            raise IdentityError(f"{directory} already holds a vendor identity ({', '.join(existing)}); "
                                "refusing to overwrite it")
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        try:
            for name, data in ((SEED_FILE, b64url(ident.signing.seed) + "\n"),
                               (ENC_KEY_FILE, json.dumps(ident.decryption.jwk)),
                               (PUBLIC_FILE, json.dumps(ident.public_json(), indent=2))):
                # exclusive: never overwrite a key
                write_private_file(directory / name, data.encode(), exclusive=True)
        except FileExistsError as exc:  # a concurrent init won the race
            raise IdentityError(f"{directory} already holds a vendor identity") from exc
        log.info("created vendor identity %s (%s) in %s", vendor, ident.did, directory)
        return ident

    @classmethod
    def load(cls, directory: Path | str) -> "VendorIdentity":
        directory = Path(directory)
        try:
            seed = b64url_decode((directory / SEED_FILE).read_text().strip())
            jwk = json.loads((directory / ENC_KEY_FILE).read_text())
            meta = json.loads((directory / PUBLIC_FILE).read_text())
        except FileNotFoundError as exc:
            raise IdentityError(f"no vendor identity in {directory} (missing {Path(exc.filename).name}); "
                                "run `vrm-vendor init` first") from exc
        except (ValueError, OSError) as exc:  # ProtocolError (bad base64url) is a ValueError
            raise IdentityError(f"unreadable vendor identity in {directory}: {exc}") from exc
        if len(seed) != 32:
            raise IdentityError(f"{SEED_FILE} must hold a 32-byte seed")
        if not isinstance(jwk, dict) or jwk.get("crv") != "X25519" or "d" not in jwk:
            raise IdentityError(f"{ENC_KEY_FILE} must be a private X25519 JWK")
        try:
            ident = cls(vendor=meta["vendor"], name=meta["name"], categories=tuple(meta["categories"]),
                        signing=Identity.from_seed(seed), decryption=DecryptionKey(jwk),
                        url=meta.get("url"))
        except (KeyError, TypeError) as exc:
            raise IdentityError(f"{PUBLIC_FILE} lacks {exc}") from exc
        _check_meta(ident.vendor, ident.name, ident.categories)
        if meta.get("did") != ident.did:
            raise IdentityError(f"{SEED_FILE} does not match the did in {PUBLIC_FILE}")
        if (meta.get("enc_key") or {}).get("x") != ident.enc_key.x:
            raise IdentityError(f"{ENC_KEY_FILE} does not match the enc_key in {PUBLIC_FILE}")
        return ident


def _check_meta(vendor: str, name: str, categories: list[str] | tuple[str, ...]) -> None:
    try:
        check_slug(vendor, "vendor")
        if not categories:
            raise IdentityError("at least one category is required")
        for c in categories:
            check_slug(c, f"category {c!r}")
    except ProtocolError as exc:
        raise IdentityError(exc.detail) from exc
    if not name or not name.strip():
        raise IdentityError("name must not be empty")
