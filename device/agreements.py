"""Agreements, disclosures and revocations: pure builders and checks over protocol types.

Why here and not in the daemon: what is signed, and what may be released, is policy that
tests must be able to check without a broker.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

from vrm_protocol import (Agreement, Disclosure, EncryptionKey, Identity, Revocation, Terms,
                          encrypt_json, new_id, sign, token_hash)
from vrm_protocol.messages import body_to_dict, parse_dataclass

log = logging.getLogger(__name__)

MESSAGE_TTL = 7 * 24 * 3600   # how long an agreement/disclosure/revocation message stays valid


class AgreementError(ValueError):
    """The agreement cannot be made as asked (missing field, wrong state...)."""


@dataclass(frozen=True)
class BuiltAgreement:
    agreement_id: str
    token: str
    body: dict[str, Any]


def build_agreement(intent_identity: Identity, *, intent_id: str, offer_id: str, offer_token: str,
                    vendor: str, vendor_did: str, terms: Terms, fields: list[str], purpose: str,
                    duration_days: int, now: float) -> BuiltAgreement:
    """The person's terms + the offer + exactly which fields, why and for how long."""
    if not fields:
        raise AgreementError("choose at least one field to disclose")
    if len(set(fields)) != len(fields):
        raise AgreementError("a field is listed twice")
    body = Agreement(intent=intent_id, offer=offer_id, offer_hash=token_hash(offer_token),
                     vendor=vendor, vendor_did=vendor_did, terms=terms, fields=list(fields),
                     purpose=purpose, duration_days=int(duration_days))
    parse_dataclass(Agreement, body_to_dict(body))  # same checks a vendor will run
    token = sign(intent_identity, body, now=now, ttl=MESSAGE_TTL)
    return BuiltAgreement(token_hash(token), token, body_to_dict(body))


def disclosure_values(fields: list[str], profile: Mapping[str, Any]) -> dict[str, Any]:
    """Exactly the agreed fields, no more; a missing field is an error, not a silent gap."""
    missing = [f for f in fields if f not in profile]
    if missing:
        raise AgreementError(f"your profile has no field(s) {', '.join(missing)}")
    return {f: profile[f] for f in fields}


def build_disclosure(intent_identity: Identity, *, agreement_id: str, intent_id: str,
                     values: dict[str, Any], enc_key: EncryptionKey, now: float) -> str:
    jwe = encrypt_json({"agreement": agreement_id, "fields": values}, enc_key)
    body = Disclosure(agreement=agreement_id, intent=intent_id, jwe=jwe)
    return sign(intent_identity, body, now=now, ttl=MESSAGE_TTL)


def build_revocation(intent_identity: Identity, *, agreement_id: str, intent_id: str,
                     reason: str | None, now: float, delete: bool = True) -> tuple[str, str]:
    """Returns (revocation message id, token); the vendor's ack names that id."""
    msg_id = new_id()
    body = Revocation(agreement=agreement_id, intent=intent_id, delete=delete, reason=reason)
    return msg_id, sign(intent_identity, body, now=now, ttl=MESSAGE_TTL, msg_id=msg_id)
