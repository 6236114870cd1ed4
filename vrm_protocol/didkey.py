"""Ed25519 identities as did:key (multicodec 0xed01, multibase base58btc 'z')."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import base58
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import ProtocolError

_ED25519_PUB_MULTICODEC = b"\xed\x01"
_PREFIX = "did:key:z"
# did:key for Ed25519 is always 48 base58 characters after the 'z'; bound it before decoding.
_MAX_DID_LEN = 64
# Parsed keys kept (LRU): a box hears from a few hundred vendors; a flood of fresh keys only
# evicts, it costs a base58 decode and a key import per message as before, no memory.
KEY_CACHE = 1024


def did_from_public_bytes(raw: bytes) -> str:
    """did:key for a raw 32-byte Ed25519 public key."""
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return _PREFIX + base58.b58encode(_ED25519_PUB_MULTICODEC + raw).decode("ascii")


def public_bytes_from_did(did: object) -> bytes:
    """The raw Ed25519 public key a did:key names; ProtocolError('bad_did') otherwise."""
    if not isinstance(did, str) or not did.startswith(_PREFIX) or len(did) > _MAX_DID_LEN:
        raise ProtocolError("bad_did", "not an Ed25519 did:key")
    try:
        decoded = base58.b58decode(did[len(_PREFIX):])
    except ValueError as exc:
        raise ProtocolError("bad_did", "did:key is not base58btc") from exc
    if len(decoded) != 34 or decoded[:2] != _ED25519_PUB_MULTICODEC:
        raise ProtocolError("bad_did", "did:key does not hold an Ed25519 public key")
    return decoded[2:]


@functools.lru_cache(maxsize=KEY_CACHE)
def _public_key(did: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(public_bytes_from_did(did))


def public_key_from_did(did: object) -> Ed25519PublicKey:
    """The did:key's public key, imported once per did (bounded cache; refusals are not cached)."""
    if not isinstance(did, str):
        raise ProtocolError("bad_did", "not an Ed25519 did:key")
    return _public_key(did)


def kid_for(did: str) -> str:
    """The verification-method id: did:key's fragment is the key's own multibase value."""
    return f"{did}#{did[len('did:key:'):]}"


def did_from_kid(kid: object) -> str:
    """The did:key a kid names (base58 decoded once per kid: bounded cache; refusals not cached)."""
    if not isinstance(kid, str) or "#" not in kid:
        raise ProtocolError("bad_did", "kid must be a did:key verification method (did#fragment)")
    return _did_from_kid(kid)


@functools.lru_cache(maxsize=KEY_CACHE)
def _did_from_kid(kid: str) -> str:
    did, fragment = kid.split("#", 1)
    public_bytes_from_did(did)
    if fragment != did[len("did:key:"):]:
        raise ProtocolError("bad_did", "kid fragment does not match the did:key")
    return did


@dataclass(frozen=True)
class Identity:
    """A signing identity: an Ed25519 private key and the did:key it answers to."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> "Identity":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> "Identity":
        """Rebuild from the 32-byte private seed (how keys are stored and how test vectors are fixed)."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def seed(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @property
    def public_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def did(self) -> str:
        return did_from_public_bytes(self.public_bytes)

    @property
    def kid(self) -> str:
        return kid_for(self.did)
