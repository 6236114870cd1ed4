"""Verified claims: W3C Verifiable Credentials as VC-JWT, signed EdDSA by an issuer's did:key.

Why checked at import: a claim backs profile fields with provenance "claim", so only a
credential whose signature verifies against the issuer's own did:key, which is inside its
validity period, and whose issuer the person trusts (setting `trusted_issuers`) gets stored.
`check_vc_jwt` is pure (the caller passes `now` and the trusted list).

Accepted shapes: VC 1.1 JWT (`iss`, `nbf`, `exp`, `vc` claim holding the credential) and
VC 2.0 JWT (the payload *is* the credential: `issuer`, `validFrom`, `validUntil`).
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from datetime import datetime
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from vrm_protocol import ProtocolError, token_hash
from vrm_protocol.codec import b64url, b64url_decode
from vrm_protocol.didkey import did_from_kid, public_bytes_from_did

from .records import ClaimRecord
from .store import Store, StoreError

log = logging.getLogger(__name__)

MAX_VC_BYTES = 64 * 1024
CLOCK_SKEW = 120
TRUSTED_ISSUERS_SETTING = "trusted_issuers"


class ClaimError(ValueError):
    """A credential was refused; the message says why (signature, expiry, issuer, shape)."""


def _b64url_json(segment: str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(b64url_decode(segment).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # ProtocolError is a ValueError
        raise ClaimError(f"{what} is not base64url JSON") from exc
    if not isinstance(obj, dict):
        raise ClaimError(f"{what} is not a JSON object")
    return obj


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _time(value: Any, what: str) -> int | None:
    """NumericDate or ISO 8601 (VC 2.0 validFrom/validUntil) to epoch seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or abs(value) > 2**53:
            raise ClaimError(f"{what} is not a valid date")
        return int(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ClaimError(f"{what} is not an ISO 8601 date-time") from exc
        if dt.tzinfo is None:
            raise ClaimError(f"{what} must carry a time zone")
        return int(dt.timestamp())
    raise ClaimError(f"{what} must be a date")


def check_vc_jwt(token: str, *, now: float, trusted_issuers: list[str] | None) -> ClaimRecord:
    """Verify a VC-JWT and return what to store, or raise ClaimError."""
    if not isinstance(token, str):
        raise ClaimError("a VC-JWT is text")
    token = token.strip()
    if len(token) > MAX_VC_BYTES:
        raise ClaimError(f"credential larger than {MAX_VC_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise ClaimError("not a compact JWT (three dot-separated parts)")
    header = _b64url_json(parts[0], "JWT header")
    if header.get("alg") != "EdDSA":
        raise ClaimError(f"alg must be EdDSA, got {str(header.get('alg'))[:20]!r}")
    for k in ("jwk", "jku", "x5u", "x5c", "crit"):
        if k in header:
            raise ClaimError(f"header parameter {k} is not allowed (the key comes from the issuer did)")
    payload = _b64url_json(parts[1], "JWT payload")
    vc = payload.get("vc") if isinstance(payload.get("vc"), dict) else payload
    issuer = payload.get("iss") or vc.get("issuer")
    if isinstance(issuer, dict):
        issuer = issuer.get("id")
    if not isinstance(issuer, str):
        raise ClaimError("credential names no issuer")
    try:
        pub = public_bytes_from_did(issuer)
        if "kid" in header and did_from_kid(header["kid"]) != issuer:
            raise ClaimError("kid names a different key than the issuer")
    except ProtocolError as exc:
        raise ClaimError(f"issuer must be an Ed25519 did:key ({exc.detail})") from exc
    key = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519",
                             "x": b64url(pub)})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            jws.deserialize_compact(token, key, algorithms=["EdDSA"])
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ClaimError("credential signature does not verify against the issuer's did:key") from exc

    valid_from = _time(_first(payload.get("nbf"), vc.get("validFrom"), vc.get("issuanceDate")), "validFrom")
    # the earliest stated end wins: a null or missing `exp` cannot hide the credential's own
    valid_until = min((t for t in (_time(payload.get("exp"), "exp"),
                                   _time(vc.get("validUntil"), "validUntil"),
                                   _time(vc.get("expirationDate"), "expirationDate")) if t is not None),
                      default=None)
    if valid_until is not None and now > valid_until + CLOCK_SKEW:
        raise ClaimError("credential has expired")
    if valid_from is not None and now + CLOCK_SKEW < valid_from:
        raise ClaimError("credential is not valid yet")
    if not trusted_issuers or issuer not in trusted_issuers:
        raise ClaimError(f"issuer {issuer} is not in your trusted issuers "
                         "(add it with `vrmbox claims trust DID`)")
    types = vc.get("type", [])
    types = [types] if isinstance(types, str) else types
    if not isinstance(types, list) or "VerifiableCredential" not in types \
            or not all(isinstance(t, str) for t in types):
        raise ClaimError("type must list VerifiableCredential")
    subject = vc.get("credentialSubject")
    if not isinstance(subject, dict):
        raise ClaimError("credentialSubject must be an object")
    return ClaimRecord(id=token_hash(token)[:32], issuer=issuer, types=types, subject=subject,
                       valid_from=valid_from, valid_until=valid_until, jwt=token, imported_at=int(now))


def trusted_issuers(store: Store) -> list[str]:
    value = store.get_setting(TRUSTED_ISSUERS_SETTING, [])
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def trust_issuer(store: Store, did: str) -> None:
    try:
        public_bytes_from_did(did)
    except ProtocolError as exc:
        raise ClaimError("a trusted issuer must be an Ed25519 did:key") from exc
    current = trusted_issuers(store)
    if did not in current:
        store.set_setting(TRUSTED_ISSUERS_SETTING, current + [did])


def import_claim(store: Store, token: str, *, now: float | None = None) -> ClaimRecord:
    """Check then store; on any failure the store is unchanged."""
    record = check_vc_jwt(token, now=store.now() if now is None else now,
                          trusted_issuers=trusted_issuers(store))
    try:
        store.add_claim(record)
    except StoreError as exc:
        raise ClaimError(str(exc)) from exc
    log.info("imported a claim from %s", record.issuer)
    return record
