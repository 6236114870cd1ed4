"""Disclosures are encrypted to the vendor's X25519 key: compact JWE, ECDH-ES + A256GCM (RFC 8037)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from .codec import parse_json_object
from .errors import ProtocolError
from .messages import EncryptionKey

JWE_ALG = "ECDH-ES"
JWE_ENC = "A256GCM"


@dataclass(frozen=True)
class DecryptionKey:
    """A vendor's X25519 private key; `public` goes into its profile."""

    jwk: dict[str, str]

    @classmethod
    def generate(cls) -> "DecryptionKey":
        return cls(OKPKey.generate_key("X25519").as_dict(private=True))

    @property
    def public(self) -> EncryptionKey:
        return EncryptionKey(kty="OKP", crv="X25519", x=self.jwk["x"])


def encrypt_json(data: dict[str, Any], recipient: EncryptionKey) -> str:
    """Encrypt a JSON object to the recipient's X25519 key."""
    key = OKPKey.import_key(recipient.as_jwk())
    plaintext = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return jwe.encrypt_compact({"alg": JWE_ALG, "enc": JWE_ENC}, plaintext, key)


def decrypt_json(token: str, key: DecryptionKey) -> dict[str, Any]:
    try:
        obj = jwe.decrypt_compact(token, OKPKey.import_key(key.jwk), algorithms=[JWE_ALG, JWE_ENC])
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ProtocolError("bad_encryption", type(exc).__name__) from exc
    try:  # the same strict I-JSON rules as message payloads
        return parse_json_object(obj.plaintext or b"")
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_encryption", "plaintext is not a JSON object") from exc
