"""Agreements, disclosures and revocations: pure builders and checks over protocol types.

Why here and not in the daemon: what is signed, and what may be released, is policy that
tests must be able to check without a broker.

Protocol v2: an agreement is *described* when the person accepts (`agreement_body`, with an
id chosen then) and *signed* when they confirm (`sign_agreement`), so its `iat` is the
confirmation time. Everything box -> vendor that names fields, purpose or a reason is sealed
(signed, then encrypted to the vendor's enc_key): the agreement and the revocation; the
disclosure's values travel in its own padded JWE.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

from vrm_protocol import (Agreement, Disclosure, EncryptionKey, Identity, ProtocolError, Revocation, Terms,
                          encrypt_json, new_id, seal, sign, token_hash)
from vrm_protocol.messages import body_to_dict, parse_dataclass

log = logging.getLogger(__name__)

MESSAGE_TTL = 7 * 24 * 3600   # how long an agreement/disclosure/revocation message stays valid
PENDING_TTL = MESSAGE_TTL     # an accepted agreement not confirmed within this is dropped


class AgreementError(ValueError):
    """The agreement cannot be made as asked (missing field, wrong state...)."""


@dataclass(frozen=True)
class SignedAgreement:
    agreement_id: str
    token: str          # the signed agreement (kept by the box; its hash is what the vendor countersigns)
    sealed: str         # what goes on the wire: `token` encrypted to the vendor


def agreement_body(*, intent_id: str, offer_id: str, offer_token: str, vendor: str, vendor_did: str,
                   terms: Terms, fields: list[str], purpose: str, duration_days: int) -> dict[str, Any]:
    """The person's terms + the offer + exactly which fields, why and for how long (not signed yet)."""
    if not fields:
        raise AgreementError("choose at least one field to disclose")
    if len(set(fields)) != len(fields):
        raise AgreementError("a field is listed twice")
    body = Agreement(intent=intent_id, offer=offer_id, offer_hash=token_hash(offer_token),
                     vendor=vendor, vendor_did=vendor_did, terms=terms, fields=list(fields),
                     purpose=purpose, duration_days=int(duration_days))
    data = body_to_dict(body)
    parse_dataclass(Agreement, data)  # same checks a vendor will run
    return data


def sign_agreement(intent_identity: Identity, *, agreement_id: str, body: Mapping[str, Any],
                   enc_key: EncryptionKey, now: float) -> SignedAgreement:
    """Sign at confirmation time, with the id chosen at accept, and seal it to the vendor."""
    agreement = parse_dataclass(Agreement, dict(body))
    token = sign(intent_identity, agreement, now=now, ttl=MESSAGE_TTL, msg_id=agreement_id)
    return SignedAgreement(agreement_id, token, seal(token, enc_key))


def disclosure_values(fields: list[str], profile: Mapping[str, Any]) -> dict[str, Any]:
    """Exactly the agreed fields, no more; a missing field is an error, not a silent gap."""
    missing = [f for f in fields if f not in profile]
    if missing:
        raise AgreementError(f"your profile has no field(s) {', '.join(missing)}")
    return {f: profile[f] for f in fields}


def build_disclosure(intent_identity: Identity, *, agreement_id: str, intent_id: str,
                     values: dict[str, Any], enc_key: EncryptionKey, now: float) -> str:
    try:
        jwe = encrypt_json({"agreement": agreement_id, "fields": values}, enc_key)  # padded
    except ProtocolError as exc:
        raise AgreementError(f"the agreed values are too large to disclose ({exc.detail})") from exc
    body = Disclosure(agreement=agreement_id, intent=intent_id, jwe=jwe)
    return sign(intent_identity, body, now=now, ttl=MESSAGE_TTL)


def build_revocation(intent_identity: Identity, *, agreement_id: str, intent_id: str,
                     reason: str | None, now: float, enc_key: EncryptionKey,
                     delete: bool = True) -> tuple[str, str, str]:
    """Returns (revocation message id, signed token, sealed token); the vendor's ack names that id."""
    msg_id = new_id()
    body = Revocation(agreement=agreement_id, intent=intent_id, delete=delete, reason=reason)
    token = sign(intent_identity, body, now=now, ttl=MESSAGE_TTL, msg_id=msg_id)
    return msg_id, token, seal(token, enc_key)
