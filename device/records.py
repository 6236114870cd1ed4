"""What the store hands out: plain frozen records, already decrypted.

Why frozen dataclasses: callers (daemon, CLI, ranking) get values, not live rows, so nothing
can change the store except through a `Store` method that audits the change.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vrm_protocol import Identity

PROVENANCES = ("self", "claim", "co-managed", "read-only")
INTENT_STATUSES = ("active", "withdrawn", "expired")
OFFER_STATUSES = ("new", "accepted", "declined", "snoozed")
VENDOR_STATUSES = ("allowed", "blocked", "trusted")
AGREEMENT_STATUSES = ("pending_confirmation", "confirmed", "active", "revoked", "ended")


@dataclass(frozen=True)
class ProfileField:
    """One profile field; `provenance` says who vouches for it, `source` who (vendor, claim id,
    professional source). Read-only fields may carry the person's `annotation`."""

    name: str
    value: Any
    provenance: str
    source: str | None
    annotation: str | None
    updated_at: int = 0


@dataclass(frozen=True)
class IntentRecord:
    intent_id: str
    category: str
    identity: Identity
    token: str
    body: dict[str, Any]
    status: str
    expires_at: int
    created_at: int


@dataclass(frozen=True)
class IntentState:
    """An intent's clear columns only: what caches and timers need, without unsealing its key."""

    intent_id: str
    category: str
    status: str
    expires_at: int


@dataclass(frozen=True)
class OfferRecord:
    offer_id: str
    intent_id: str
    vendor: str
    vendor_did: str
    token: str
    body: dict[str, Any]
    status: str
    received_at: int
    snooze_until: int | None


@dataclass(frozen=True)
class VendorRecord:
    """A vendor as pinned on first use; `pending_did` is a changed key awaiting the person."""

    vendor: str
    did: str
    profile_token: str
    profile: dict[str, Any]
    pinned_at: int
    pending_did: str | None
    status: str


@dataclass(frozen=True)
class AgreementRecord:
    agreement_id: str
    intent_id: str
    offer_id: str
    vendor: str
    token: str
    body: dict[str, Any]
    status: str
    countersignature: str | None
    created_at: int
    updated_at: int = 0
    revocation_token: str | None = None
    revocation_ack: str | None = None


@dataclass(frozen=True)
class AgreementState:
    """An agreement's clear columns only (no token, no sealed terms or fields)."""

    agreement_id: str
    intent_id: str
    vendor: str
    status: str
    updated_at: int
    revoked: bool
    acknowledged: bool


@dataclass(frozen=True)
class DisclosureRecord:
    id: str
    agreement_id: str
    vendor: str
    fields: list[str]
    token: str
    created_at: int


@dataclass(frozen=True)
class StuffRecord:
    """A product or service the person owns or uses."""

    id: str
    name: str
    supplier: str | None = None
    purchase_date: str | None = None
    price: float | None = None
    currency: str | None = None
    warranty_end: str | None = None
    notes: str | None = None
    created_at: int = 0


@dataclass(frozen=True)
class SupplierRecord:
    """An organisation that holds data about the person, with the agreements in force."""

    vendor: str
    name: str
    notes: str | None
    created_at: int
    agreements: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ClaimRecord:
    """A verified credential: the original VC-JWT plus what was checked and extracted."""

    id: str
    issuer: str
    types: list[str]
    subject: dict[str, Any]
    valid_from: int | None
    valid_until: int | None
    jwt: str
    imported_at: int


@dataclass(frozen=True)
class ReviewRecord:
    id: str
    vendor: str
    agreement_id: str | None
    rating: int | None
    text: str
    created_at: int


@dataclass(frozen=True)
class OutboxRecord:
    """A message the daemon must publish (e.g. deletion requests queued by erase)."""

    id: int
    topic: str
    payload: str
    retain: bool
    created_at: int
    sent_at: int | None
    expires_at: int | None = None     # the signed message's exp (a sealed payload hides it)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    created_at: int
    event_type: str
    data: dict[str, Any]
    prev_hash: str
    entry_hash: str
    signature: str
