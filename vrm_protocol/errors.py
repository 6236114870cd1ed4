"""The one exception the protocol layer raises, with a machine-readable reason code."""
from __future__ import annotations

# Reason codes: one place, so rejection counters, docs and tests agree.
REASONS = (
    "oversize",          # raw message larger than MAX_MESSAGE_BYTES
    "bad_encoding",      # not ASCII / not three base64url segments
    "bad_json",          # header or payload is not a JSON object
    "bad_header",        # header lacks kid, has crit, wrong typ ...
    "bad_alg",           # alg is not EdDSA (none, HS256, RS256 ...)
    "bad_did",           # kid / iss is not a valid Ed25519 did:key
    "key_mismatch",      # kid and iss name different keys
    "bad_signature",     # signature does not verify
    "unknown_version",   # payload v is not a version we speak
    "unknown_type",      # payload typ is not a known message type
    "wrong_type",        # a valid message, but not the type the caller expected
    "bad_field",         # missing, extra or ill-typed field
    "expired",           # exp in the past
    "not_yet_valid",     # iat in the future (beyond clock skew)
    "bad_lifetime",      # exp before iat, or lifetime longer than allowed
    "replay",            # message id seen before
    "bad_encryption",    # a JWE that cannot be decrypted
)


class ProtocolError(ValueError):
    """A message was refused. `reason` is one of REASONS; `detail` is for humans and logs."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:  # a programming error, not bad input
            raise AssertionError(f"unknown reason code {reason!r}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
