"""The vendor's protocol logic as pure functions: verified message + state in, records out.

Each handler takes a message the worker has already verified (signature, type, freshness)
plus whatever the ledger knows about it, and returns frozen records: what to store and,
inside them, what to publish (`Outgoing`). Anything the vendor must refuse raises
ProtocolError with a reason code; the worker logs it and drops the message. No I/O here,
no clock: `now` is passed in.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from vrm_protocol import (Agreement, Countersignature, Disclosure, Intent, IntentWithdrawal, Message,
                          Offer, ProtocolError, Receipt, Revocation, RevocationAck, TermsResponse,
                          decrypt_json, new_id, sign, topics, token_hash)
from vrm_protocol.codec import MAX_LIFETIME, unverified_payload

from .catalogue import Catalogue, offers_for
from .identity import VendorIdentity

log = logging.getLogger(__name__)

PROFILE_TTL = 30 * 24 * 3600
ACK_TTL = 30 * 24 * 3600
DAY = 24 * 3600


@dataclass(frozen=True)
class Outgoing:
    """One signed message to publish (QoS 1)."""

    msg_id: str
    topic: str
    token: str
    exp: int
    retain: bool = False


@dataclass(frozen=True)
class IntentRecord:
    intent: str
    category: str
    signer: str                 # the intent's one-off did: agreements must come from it
    terms_id: str
    terms_sha256: str
    attributes: dict[str, Any]
    received_at: int
    status: str                 # "answered" | "no_match" | "withdrawn"
    exp: int = 0                # the intent's own expiry: the ledger forgets it some time after


@dataclass(frozen=True)
class OfferRecord:
    id: str
    intent: str
    intent_signer: str
    sku: str
    name: str
    price: float
    currency: str
    valid_until: int
    terms_id: str
    terms_sha256: str
    decision: str
    token: str

    @property
    def hash(self) -> str:
        return token_hash(self.token)

    def outgoing(self) -> Outgoing:
        return Outgoing(self.id, topics.offers(self.intent), self.token, self.valid_until)


@dataclass(frozen=True)
class IntentAnswer:
    intent: IntentRecord
    offers: tuple[OfferRecord, ...]


@dataclass(frozen=True)
class WithdrawalRecord:
    intent: str
    category: str
    signer: str
    received_at: int
    exp: int = 0                # the withdrawal message's expiry: remembered until then


@dataclass(frozen=True)
class AgreementRecord:
    id: str
    intent: str
    offer: str
    signer: str
    fields: tuple[str, ...]
    purpose: str
    duration_days: int
    terms_id: str
    terms_sha256: str
    received_at: int
    countersignature: Outgoing
    revoked_at: int | None = None

    @property
    def hash(self) -> str | None:
        """token_hash of the agreement token we countersigned (it is in our countersignature)."""
        return unverified_payload(self.countersignature.token).get("agreement_hash")

    @property
    def keep_until(self) -> int:
        """End of the period the person allowed us to keep the disclosed data (duration_days
        from countersigning); after it the data is deleted and new disclosures are refused."""
        return self.received_at + self.duration_days * DAY


@dataclass(frozen=True)
class DisclosureRecord:
    agreement: str
    intent: str
    message: str                # disclosure message id
    fields: dict[str, Any] = field(repr=False)   # personal data: never in reprs or logs
    received_at: int = 0


@dataclass(frozen=True)
class RevocationRecord:
    id: str
    agreement: str
    intent: str
    delete: bool
    reason: str | None
    received_at: int
    ack: Outgoing


def _refuse(detail: str, reason: str = "bad_field") -> ProtocolError:
    return ProtocolError(reason, detail)


# ------------------------------------------------------------------------------ profile
def signed_profile(identity: VendorIdentity, now: float) -> Outgoing:
    """The retained profile, re-signed at each start so it never expires while we run."""
    msg_id = new_id()
    token = sign(identity.signing, identity.profile(), now=now, ttl=PROFILE_TTL, msg_id=msg_id)
    return Outgoing(msg_id, topics.vendor_profile(identity.vendor), token, int(now) + PROFILE_TTL, retain=True)


# ------------------------------------------------------------------------------ intents
def answer_intent(msg: Message, topic: str, identity: VendorIdentity, catalogue: Catalogue, now: float,
                  withdrawn_by: str | None = None) -> IntentAnswer:
    """Offers for one intent: one per matching catalogue item, each signed by the vendor key.

    `withdrawn_by` is the signer of a withdrawal that arrived before the intent: if it is the
    intent's own key the intent is recorded as withdrawn and nothing is offered.
    """
    intent: Intent = msg.body  # type: ignore[assignment]
    if topic != topics.intent(intent.category, intent.intent):
        raise _refuse(f"intent {intent.intent}/{intent.category} arrived on another topic")
    if intent.category not in identity.categories:
        raise _refuse(f"category {intent.category} is not one of ours")
    signer = msg.envelope.iss
    base = dict(intent=intent.intent, category=intent.category, signer=signer,
                terms_id=intent.terms.id, terms_sha256=intent.terms.sha256,
                attributes=dict(intent.attributes), received_at=int(now), exp=msg.envelope.exp)
    if withdrawn_by == signer:
        return IntentAnswer(IntentRecord(**base, status="withdrawn"), ())
    decision = "accept" if catalogue.accepts(intent.terms.id) else "reject"
    response = TermsResponse(id=intent.terms.id, sha256=intent.terms.sha256, decision=decision)
    ttl = catalogue.offer_validity_s
    valid_until = int(now) + ttl
    offers = []
    for item, price in offers_for(catalogue, intent):
        body = Offer(intent=intent.intent, vendor=identity.vendor, item=item.as_offer_item(), price=price,
                     currency=catalogue.currency, valid_until=valid_until, terms_response=response,
                     delivery_days=item.delivery_days, region=catalogue.region)
        msg_id = new_id()
        token = sign(identity.signing, body, now=now, ttl=ttl, msg_id=msg_id)
        offers.append(OfferRecord(id=msg_id, intent=intent.intent, intent_signer=signer, sku=item.sku,
                                  name=item.name, price=price, currency=catalogue.currency,
                                  valid_until=valid_until, terms_id=intent.terms.id,
                                  terms_sha256=intent.terms.sha256, decision=decision, token=token))
    status = "answered" if offers else "no_match"
    return IntentAnswer(IntentRecord(**base, status=status), tuple(offers))


def accept_withdrawal(msg: Message, topic: str, known: IntentRecord | None, now: float) -> WithdrawalRecord:
    """A withdrawal counts only if signed by the intent's own key (checked now or when it arrives)."""
    body: IntentWithdrawal = msg.body  # type: ignore[assignment]
    if topic != topics.withdrawal(body.category, body.intent):
        raise _refuse(f"withdrawal of {body.intent} arrived on another topic")
    if known is not None and known.signer != msg.envelope.iss:
        raise _refuse("withdrawal not signed by the intent's key", "key_mismatch")
    return WithdrawalRecord(body.intent, body.category, msg.envelope.iss, int(now), msg.envelope.exp)


# ------------------------------------------------------------------------------ receipts, re-sends
# The reference box sends an intent's receipts 0.2 .. 2.5 s after the first offer waiting for
# one (docs/protocol.md §8.10). An offer stored just before another is named by the same receipt
# or an earlier one; the grace covers that delay (should the box ever store them out of order)
# and a little time on the way.
LOST_GRACE_S = 3.0
# Re-sends per offer before giving up. With the default back-off (30 s, doubling, at most 15 min)
# 8 re-sends span about an hour and the give-up comes some 75 minutes after the first send:
# longer than a broker restart or a box reboot takes. The box keeps no MQTT session (clean
# start), so nothing is queued for it while it is away: an offer sent then reaches it only by a
# re-send. A box away longer than the ladder is caught by the re-arm below, not by more re-sends
# on the timer (the old rule sent a 7-day offer 676 times).
RESEND_LIMIT = 8
# After the give-up the kit waits for the box to show it is alive: the box re-publishes each live
# intent at random moments of its own (exponential gaps, mean 15 min by default), whatever its
# connection did, so a live copy of the intent again means its box is there. Each given-up,
# unreceipted offer of it then goes out once more at once (same token), at most REARM_LIMIT
# times over the offer's life: a box that refuses an offer (another revision, a rule of its own)
# never receipts it, and with a re-publish every 15 minutes a week-long offer would otherwise go
# out hundreds of times. Three covers a box that was off overnight and a copy or two lost again.
REARM_LIMIT = 3
# Two copies of one re-publish (a QoS 1 duplicate, two subscriptions) re-arm an offer once: not
# again within this many seconds of its last copy.
REARM_GAP_S = 60.0


@dataclass(frozen=True)
class ResendPolicy:
    """When an offer the box has not receipted is sent again. Why at all: the broker acknowledges
    before it is on disk, so only the box's receipt says "stored".

    Every copy of an offer the kit hands to MQTT gets the next number of one send order (`seq`).
    The broker delivers one publisher's messages to a box in order, so when the box receipts an
    offer of an intent, every copy sent before that offer's first possible stored copy has been
    through the box: an offer of the same intent whose latest copy is older and that is still not
    receipted `lost_grace_s` after that receipt was lost (or refused), and goes out again then.
    The comparison is within one intent only: two intents may be on two boxes, and one box being
    through our stream says nothing about another's queue.

    Otherwise an offer is looked at `first_s` after it was (last) sent, then each wait is `factor`
    times the last, at most `max_s`. It waits (a copy would only lengthen a queue) while receipts
    for its intent keep coming (one within `first_s`) and none has passed it: it is still in that
    box's queue; or while our receipts keep coming and every offer receipted anywhere was sent
    before it: it may be queued behind them (if its box is another, this lasts only until a box
    receipts something sent after it, or the receipts stop). Else it goes out again. After
    `limit` re-sends whose wait ran out without a receipt, the kit gives up on the offer
    (recorded in the ledger) and waits for its intent's next re-publish (plan_rearms)."""

    first_s: float = 30.0
    factor: float = 2.0
    max_s: float = 900.0
    limit: int = RESEND_LIMIT
    lost_grace_s: float = LOST_GRACE_S

    def __post_init__(self) -> None:
        if not (self.first_s > 0 and self.factor >= 1 and self.max_s >= self.first_s):
            raise ValueError("resend policy needs first_s > 0, factor >= 1, max_s >= first_s")
        if self.limit < 0 or self.lost_grace_s < 0:
            raise ValueError("resend policy needs limit >= 0 and lost_grace_s >= 0")

    def delay(self, resends: int) -> float:
        """The wait after the `resends`-th re-send (0: after the first send)."""
        return min(self.max_s, self.first_s * self.factor ** min(resends, 64))

    def look_after_receipt(self, receipt_at: float) -> float:
        """When to look at an offer a receipt of its intent has passed: once its own receipt
        would have come, had the box stored it."""
        return receipt_at + self.lost_grace_s


@dataclass(frozen=True)
class Pending:
    """An offer sent and not yet receipted, as the ledger keeps it."""

    offer: OfferRecord
    resends: int
    last_sent: float = 0.0      # when it was last handed to MQTT
    seq: int = 0                # send order of its latest copy
    intent_exp: float = 0.0     # when its intent expires (0: unknown): the box takes nothing after


@dataclass(frozen=True)
class Receipted:
    """One of an intent's offers the box has receipted: the send order of the first copy of it
    the box may have stored (copies found lost before do not count), and when its receipt came."""

    floor_seq: int
    at: float


@dataclass(frozen=True)
class Receipts:
    """What the receipts so far say: per intent, its receipted offers; over all intents, the
    highest first-possible-stored send number receipted and when the latest receipt came."""

    by_intent: Mapping[str, Sequence[Receipted]] = field(default_factory=dict)
    latest: Receipted = Receipted(0, 0.0)


@dataclass(frozen=True)
class Resend:
    outgoing: Outgoing
    resends: int                # counting this one
    next_at: float
    send: bool = True           # False: not sent now (still queued at a box that is receipting, or
                                # a receipt passed it a moment ago), only looked at again later
    lost: bool = False          # sent because a receipt of its intent passed its latest copy
    gave_up: bool = False       # the limit is reached: never sent again
    intent: str = ""            # the offer's intent (for the log)


@dataclass(frozen=True)
class ReceiptRecord:
    intent: str
    hashes: tuple[str, ...]
    message: str                # the receipt's message id


def plan_resends(due: list[Pending], now: float, policy: ResendPolicy,
                 receipts: Receipts | None = None) -> list[Resend]:
    """What to do with each due offer (see ResendPolicy), given what the receipts say. Sent
    again: the same token, the same id (the box de-duplicates). An expired offer is left out
    (the box would refuse it; it is not looked at again), nor is one whose intent has expired
    (the box refuses those). A re-send counts toward `policy.limit`; waiting does not."""
    receipts = receipts or Receipts()
    latest = receipts.latest
    out = []
    for p in due:
        if p.offer.valid_until <= now or 0 < p.intent_exp <= now:
            continue
        marks = receipts.by_intent.get(p.offer.intent, ())
        passing = [r.at for r in marks if r.floor_seq > p.seq]
        lost = any(policy.look_after_receipt(at) <= now for at in passing)
        if not lost and passing:       # passed a moment ago: its own receipt may still be coming
            out.append(Resend(p.offer.outgoing(), p.resends, policy.look_after_receipt(min(passing)), send=False))
            continue
        if not lost and (any(now - r.at < policy.first_s for r in marks)
                         or (now - latest.at < policy.first_s and p.seq > latest.floor_seq)):
            out.append(Resend(p.offer.outgoing(), p.resends, now + policy.delay(p.resends), send=False))
            continue
        if p.resends >= policy.limit:
            out.append(Resend(p.offer.outgoing(), p.resends, now, send=False, gave_up=True, intent=p.offer.intent))
            continue
        out.append(Resend(p.offer.outgoing(), p.resends + 1, now + policy.delay(p.resends + 1), lost=lost))
    return out


@dataclass(frozen=True)
class GivenUp:
    """An offer the kit gave up on, as the ledger keeps it, when its intent is seen again."""

    offer: OfferRecord
    rearms: int                 # copies sent so far because its intent was seen again
    last_sent: float = 0.0      # when its latest copy was handed to MQTT (after the give-up: the
                                # latest re-arm)
    intent_exp: float = 0.0     # when its intent expires (0: unknown)
    receipted: bool = False     # the box has receipted it (a late receipt)
    withdrawn: bool = False     # its intent was withdrawn


def plan_rearms(given_up: list[GivenUp], now: float, limit: int = REARM_LIMIT,
                gap_s: float = REARM_GAP_S) -> list[GivenUp]:
    """Which given-up offers go out once more, now that their intent was seen again (a sign its
    box is alive; see REARM_LIMIT): those not receipted, not expired, whose intent is neither
    expired nor withdrawn, re-armed fewer than `limit` times, and not re-armed in the last
    `gap_s` seconds (two copies of one re-publish). Each is sent once, the same token; the timer does not start again."""
    return [g for g in given_up
            if not g.receipted and not g.withdrawn and g.offer.valid_until > now
            and not (0 < g.intent_exp <= now) and g.rearms < limit
            and (g.rearms == 0 or now - g.last_sent >= gap_s)]


def accept_receipt(msg: Message, topic: str, known: IntentRecord | None) -> ReceiptRecord | None:
    """A receipt counts only on its own topic, signed by the key that signed the intent (the
    box signs with the intent key; anyone else could only forge). None: an intent we never saw
    (another vendor's business; nothing of ours is pending there)."""
    body: Receipt = msg.body  # type: ignore[assignment]
    if topic != topics.receipt(body.category, body.intent):
        raise _refuse(f"receipt for {body.intent}/{body.category} arrived on another topic")
    if known is None:
        return None
    if msg.envelope.iss != known.signer:
        raise _refuse("receipt not signed by the intent's key", "key_mismatch")
    if body.category != known.category:
        raise _refuse("receipt names another category than its intent")
    return ReceiptRecord(body.intent, tuple(body.offers), msg.id)


# ------------------------------------------------------------------------------ agreements
def countersign(msg: Message, identity: VendorIdentity, offer: OfferRecord | None, now: float) -> AgreementRecord:
    """Countersign an agreement on an offer we sent, proposed by the key that sent the intent."""
    body: Agreement = msg.body  # type: ignore[assignment]
    if body.vendor != identity.vendor or body.vendor_did != identity.did:
        raise _refuse(f"agreement is addressed to vendor {body.vendor} ({body.vendor_did[:24]}...), not us")
    if offer is None:
        raise _refuse(f"agreement names offer {body.offer}, which we never sent")
    if body.offer_hash != offer.hash:
        raise _refuse("agreement offer_hash does not match the offer we sent")
    if body.intent != offer.intent:
        raise _refuse("agreement intent does not match the offer's intent")
    if msg.envelope.iss != offer.intent_signer:
        raise _refuse("agreement is not signed by the key that signed the intent", "key_mismatch")
    if (body.terms.id, body.terms.sha256) != (offer.terms_id, offer.terms_sha256):
        raise _refuse("agreement terms differ from the intent's terms")
    if offer.decision != "accept":
        raise _refuse(f"we rejected terms {offer.terms_id} in that offer")
    if offer.valid_until < now:
        raise _refuse(f"offer {offer.id} expired", "expired")
    agreement_id = msg.id   # protocol v2: the agreement's message id; its hash is countersigned
    ttl = min(body.duration_days * DAY, MAX_LIFETIME)
    cs_id = new_id()
    token = sign(identity.signing, Countersignature(agreement=agreement_id, agreement_hash=token_hash(msg.token),
                                                    intent=body.intent),
                 now=now, ttl=ttl, msg_id=cs_id)
    return AgreementRecord(id=agreement_id, intent=body.intent, offer=body.offer, signer=msg.envelope.iss,
                           fields=tuple(body.fields), purpose=body.purpose, duration_days=body.duration_days,
                           terms_id=body.terms.id, terms_sha256=body.terms.sha256, received_at=int(now),
                           countersignature=Outgoing(cs_id, topics.countersignatures(body.intent), token,
                                                     int(now) + ttl))


def _check_party(msg: Message, agreement_id: str, intent: str, agreement: AgreementRecord | None,
                 what: str) -> AgreementRecord:
    if agreement is None:
        raise _refuse(f"{what} for agreement {agreement_id[:12]}..., which we have not countersigned")
    if msg.envelope.iss != agreement.signer:
        raise _refuse(f"{what} not signed by the agreement's key", "key_mismatch")
    if intent != agreement.intent:
        raise _refuse(f"{what} intent does not match the agreement's intent")
    return agreement


# ------------------------------------------------------------------------------ disclosures
def open_disclosure(msg: Message, identity: VendorIdentity, agreement: AgreementRecord | None,
                    now: float) -> DisclosureRecord:
    """Decrypt the disclosed fields; only names the agreement lists, for a live agreement."""
    body: Disclosure = msg.body  # type: ignore[assignment]
    agreement = _check_party(msg, body.agreement, body.intent, agreement, "disclosure")
    if agreement.revoked_at is not None:
        raise _refuse("disclosure for a revoked agreement")
    if now > agreement.keep_until:
        raise _refuse(f"disclosure after the agreement's {agreement.duration_days}-day period", "expired")
    plain = decrypt_json(body.jwe, identity.decryption)
    if set(plain) != {"agreement", "fields"}:
        raise _refuse("disclosure plaintext must be exactly {agreement, fields}")
    if plain["agreement"] != body.agreement:
        raise _refuse("encrypted agreement id differs from the message's")
    values = plain["fields"]
    if not isinstance(values, dict):
        raise _refuse("disclosure fields must be an object")
    outside = sorted(set(values) - set(agreement.fields))
    if outside:
        raise _refuse(f"disclosure carries fields outside the agreement: {', '.join(outside)[:200]}")
    return DisclosureRecord(agreement=agreement.id, intent=body.intent, message=msg.id, fields=dict(values),
                            received_at=int(now))


# ------------------------------------------------------------------------------ revocations
def acknowledge_revocation(msg: Message, identity: VendorIdentity, agreement: AgreementRecord | None,
                           now: float) -> RevocationRecord:
    """The signed ack; `deleted` is true exactly when deletion was asked (the worker deletes
    in the same transaction that stores this record, before the ack is published)."""
    body: Revocation = msg.body  # type: ignore[assignment]
    _check_party(msg, body.agreement, body.intent, agreement, "revocation")
    ack_id = new_id()
    token = sign(identity.signing, RevocationAck(agreement=body.agreement, intent=body.intent,
                                                 revocation=msg.id, deleted=body.delete),
                 now=now, ttl=ACK_TTL, msg_id=ack_id)
    return RevocationRecord(id=msg.id, agreement=body.agreement, intent=body.intent, delete=body.delete,
                            reason=body.reason, received_at=int(now),
                            ack=Outgoing(ack_id, topics.revocation_acks(body.intent), token, int(now) + ACK_TTL))


__all__ = ["Outgoing", "IntentRecord", "OfferRecord", "IntentAnswer", "WithdrawalRecord", "AgreementRecord",
           "DisclosureRecord", "RevocationRecord", "ResendPolicy", "LOST_GRACE_S", "RESEND_LIMIT", "REARM_LIMIT", "REARM_GAP_S", "GivenUp", "plan_rearms", "Pending", "Receipted", "Receipts", "Resend", "ReceiptRecord",
           "signed_profile", "answer_intent", "accept_withdrawal", "plan_resends", "accept_receipt",
           "countersign", "open_disclosure", "acknowledge_revocation"]
