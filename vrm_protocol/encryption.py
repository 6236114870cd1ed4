"""Encryption to a vendor's X25519 key: compact JWE, ECDH-ES + A256GCM (RFC 8037).

Two uses (docs/protocol.md §10): a disclosure's `jwe` (the agreed values) and, since v2, the
*sealed* box -> vendor messages (agreement, revocation), whose MQTT payload is a JWE with the
signed JWS as plaintext: sign, then encrypt, so only the vendor reads fields, purpose and reason.
Plaintexts are padded with trailing spaces to a few size buckets, so the ciphertext's length says
little about what is inside; JSON parsers ignore the spaces, and `unseal` strips them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from .codec import _b64url_decode, compact_text, parse_json_object
from .errors import ProtocolError
from .messages import EncryptionKey

JWE_ALG = "ECDH-ES"
JWE_ENC = "A256GCM"
JWE_HEADER_PARAMS = frozenset({"alg", "enc", "epk", "apu", "apv"})
# The ephemeral key is a public X25519 JWK and nothing more: a `d` would be the sender's secret,
# a `kid` or `use` a handle no receiver needs (docs/protocol.md §10.1).
EPK_MEMBERS = frozenset({"kty", "crv", "x"})
# Plaintext sizes after padding: everything up to 512 bytes looks alike, and so on.
PAD_BUCKETS = (512, 2048, 8192, 32768)
PAD_BYTE = b" "


@dataclass(frozen=True)
class DecryptionKey:
    """A vendor's X25519 private key; `public` goes into its profile."""

    jwk: dict[str, str | list[str]]      # joserfc's JWK dict (members of X25519 keys are strings)

    @classmethod
    def generate(cls) -> "DecryptionKey":
        return cls(OKPKey.generate_key("X25519").as_dict(private=True))

    @property
    def public(self) -> EncryptionKey:
        return EncryptionKey(kty="OKP", crv="X25519", x=str(self.jwk["x"]))


def pad(plaintext: bytes) -> bytes:
    """Trailing spaces up to the next bucket; ProtocolError('oversize') past the largest."""
    for size in PAD_BUCKETS:
        if len(plaintext) <= size:
            return plaintext + PAD_BYTE * (size - len(plaintext))
    raise ProtocolError("oversize", f"{len(plaintext)} bytes is more than {PAD_BUCKETS[-1]} to encrypt")


def _encrypt(plaintext: bytes, recipient: EncryptionKey) -> str:
    key = OKPKey.import_key(dict(recipient.as_jwk()))
    return jwe.encrypt_compact({"alg": JWE_ALG, "enc": JWE_ENC}, pad(plaintext), key)


def _decrypt(token: str | bytes, key: DecryptionKey) -> bytes:
    """The padded plaintext, after our own bounded checks of the shape and protected header."""
    token = compact_text(token, "bad_encryption", "JWE")
    parts = token.split(".")
    if len(parts) != 5 or parts[1] != "":
        raise ProtocolError("bad_encryption", "a compact ECDH-ES JWE has five parts, the second empty")
    try:
        header = parse_json_object(_b64url_decode(parts[0]))
    except (ProtocolError, UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("bad_encryption", "protected header is not a JSON object") from exc
    if header.get("alg") != JWE_ALG or header.get("enc") != JWE_ENC or set(header) - JWE_HEADER_PARAMS:
        raise ProtocolError("bad_encryption", "JWE header must be ECDH-ES / A256GCM with epk only")
    epk = header.get("epk")
    if not isinstance(epk, dict) or set(epk) != EPK_MEMBERS or epk["kty"] != "OKP" \
            or epk["crv"] != "X25519" or not isinstance(epk["x"], str):
        raise ProtocolError("bad_encryption", "epk must be exactly {kty: OKP, crv: X25519, x}")
    try:
        obj = jwe.decrypt_compact(token, OKPKey.import_key(key.jwk), algorithms=[JWE_ALG, JWE_ENC])
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ProtocolError("bad_encryption", type(exc).__name__) from exc
    return obj.plaintext or b""


def encrypt_json(data: dict[str, Any], recipient: EncryptionKey) -> str:
    """Encrypt a JSON object (padded) to the recipient's X25519 key."""
    plaintext = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return _encrypt(plaintext, recipient)


def decrypt_json(token: str, key: DecryptionKey) -> dict[str, Any]:
    plaintext = _decrypt(token, key)
    try:  # the same strict I-JSON rules as message payloads (trailing padding is JSON whitespace)
        return parse_json_object(plaintext)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_encryption", "plaintext is not a JSON object") from exc


def seal(token: str, recipient: EncryptionKey) -> str:
    """Sign, then encrypt: a signed message only `recipient` can read."""
    return _encrypt(token.encode("ascii"), recipient)


def unseal(sealed: str | bytes, key: DecryptionKey) -> str:
    """The signed message inside a sealed one (padding removed), still to be verified."""
    plaintext = _decrypt(sealed, key).rstrip(PAD_BYTE)
    try:
        return plaintext.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad_encryption", "a sealed message holds an ASCII compact JWS") from exc
