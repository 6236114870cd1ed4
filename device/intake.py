"""Everything vendors send the box, checked in an order where cheap checks protect the dear one.

size -> parse (header only) -> known intent -> vendor known / blocked / rate limit -> JWS
verification -> schema, freshness, replay -> vendor checks (pinned key, names itself) -> store
-> rank -> event. `precheck` is the cheap half (memory only, safe on the network thread);
`handle` is the rest (store access, on the one worker thread). Every refusal is a `Rejection`
with a reason code, counted per vendor in the store; nothing here raises on bad input.
"""
from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from vrm_protocol import (Countersignature, Offer, ProtocolError, ReplayGuard, RevocationAck,
                          VendorProfile, read_header, topics, verify)
from vrm_protocol.codec import unverified_payload
from vrm_protocol.didkey import did_from_kid as _did_from_kid
from vrm_protocol.messages import body_to_dict

from .market import Market, MarketError
from .ratelimit import RateLimiter
from .store import StoreError

log = logging.getLogger(__name__)

# Reasons the box adds to the protocol's own (vrm_protocol.errors.REASONS).
INTAKE_REASONS = (
    "unknown_topic", "unknown_intent", "intent_closed", "unknown_vendor", "blocked_vendor",
    "rate_limited", "vendor_key_changed", "vendor_mismatch", "topic_mismatch",
    "unknown_agreement", "wrong_state", "too_many_offers", "store_error",
)



# base58-decoding the signer's did:key is the dearest part of the cheap checks; a flood repeats
# the same few kids. (Exceptions are not cached, so a bad kid is refused every time.)
did_from_kid = functools.lru_cache(maxsize=4096)(_did_from_kid)


@dataclass(frozen=True)
class Rejection:
    reason: str
    vendor: str | None
    detail: str = ""


@dataclass(frozen=True)
class Pre:
    """A message that passed the cheap checks, waiting for verification."""

    topic: str
    payload: bytes
    kind: str                # offers | countersignatures | acks | profile
    intent: str | None
    vendor: str | None       # from the pinned-key cache (None for profiles)


@dataclass(frozen=True)
class Outcome:
    kind: str                # offer | duplicate | countersignature | ack | profile | rejected | ignored
    event: dict[str, Any] = field(default_factory=dict)


class Intake:
    def __init__(self, market: Market, *, limiter: RateLimiter, max_bytes: int,
                 clock: Callable[[], float], max_offers_per_vendor_intent: int = 20) -> None:
        """`max_offers_per_vendor_intent` bounds what a vendor inside its rate limit can make the
        box store and re-rank for one intent."""
        self.max_offers = max_offers_per_vendor_intent
        self.market = market
        self.store = market.store
        self.limiter = limiter
        self.max_bytes = max_bytes
        self.clock = clock
        self.replay = ReplayGuard()
        self._lock = threading.Lock()
        self._open_intents: frozenset[str] = frozenset()      # offers accepted for these
        self._known_intents: frozenset[str] = frozenset()     # acks/countersignatures for these
        self._all_intents: frozenset[str] = frozenset()
        self._vendors_by_did: dict[str, tuple[str, str]] = {}  # did -> (vendor, status)
        self._pending_dids: dict[str, str] = {}               # a changed, unaccepted key -> vendor
        self._counts: dict[tuple[str, str | None], int] = {}  # rejections not yet written
        self.refresh()
        for msg_id, exp in self.store.seen_message_ids(int(clock())):
            self.replay.remember(msg_id, exp)

    # ---------------------------------------------------------------- caches (worker thread)
    def refresh(self) -> None:
        """Reload what the cheap checks need; call after any change to intents or vendors."""
        intents = self.store.intent_states()
        vendors = self.store.list_vendors()
        waiting = {a.intent_id for a in self.store.agreement_states()
                   if a.status in ("confirmed", "active") or (a.revoked and not a.acknowledged)}
        with self._lock:
            self._open_intents = frozenset(i.intent_id for i in intents if i.status == "active")
            # intents that can still be answered: open ones, and those with a countersignature
            # or a deletion acknowledgement to come
            self._known_intents = self._open_intents | frozenset(waiting)
            self._all_intents = frozenset(i.intent_id for i in intents)
            self._vendors_by_did = {v.did: (v.vendor, v.status) for v in vendors}
            self._pending_dids = {v.pending_did: v.vendor for v in vendors if v.pending_did}

    @property
    def subscribed_intents(self) -> frozenset[str]:
        return self._known_intents

    # ---------------------------------------------------------------- cheap half (any thread)
    def precheck(self, topic: str, payload: bytes) -> Pre | Rejection | None:
        """Memory-only checks; None means "nothing to do" (e.g. a cleared retained profile)."""
        if len(payload) > self.max_bytes:
            return Rejection("oversize", None, f"{len(payload)} bytes")
        box = topics.parse_box_topic(topic)
        vend = topics.parse_vendor_topic(topic)
        is_profile = bool(vend and vend[1] == "profile")
        if is_profile and not payload:
            return None
        if not is_profile and not box:
            return Rejection("unknown_topic", None, topic[:100])
        try:  # who signed it, from the header alone (verified later)
            _, header = read_header(payload)
            did = did_from_kid(header["kid"])
        except ProtocolError as exc:
            return Rejection(exc.reason, None, exc.detail)
        if is_profile:
            with self._lock:
                known_key = did in self._vendors_by_did or did in self._pending_dids
            # Known keys re-publish at their own pace; brand-new keys share one bucket, so fresh
            # keys cannot be minted to fill the store with vendors.
            if not self.limiter.allow("profile:" + did if known_key else "profile:new", self.clock()):
                return Rejection("rate_limited", None, "vendor profile flood")
            return Pre(topic, payload, "profile", None, None)
        intent, kind = box  # type: ignore[misc]
        with self._lock:
            known = intent in self._known_intents
            ours = intent in self._all_intents
            open_ = intent in self._open_intents
            vendor = self._vendors_by_did.get(did)
            pending = self._pending_dids.get(did)
        if not known:
            return Rejection("intent_closed" if ours else "unknown_intent", vendor[0] if vendor else None,
                             intent[:64])
        if kind == "offers" and not open_:
            return Rejection("intent_closed", vendor[0] if vendor else None, intent)
        if vendor is None:
            if pending:
                return Rejection("vendor_key_changed", pending, "signed by a key you have not accepted")
            # Its profile may be just ahead in the queue: decide on the worker, rate-limited by key.
            if not self.limiter.allow("did:" + did, self.clock()):
                return Rejection("rate_limited", None, "unknown key")
            return Pre(topic, payload, kind, intent, None)
        name, status = vendor
        if status == "blocked":
            return Rejection("blocked_vendor", name)
        if not self.limiter.allow(name, self.clock()):  # every kind: each costs a signature check
            return Rejection("rate_limited", name)
        return Pre(topic, payload, kind, intent, name)

    # ---------------------------------------------------------------- dear half (worker thread)
    def handle(self, pre: Pre) -> Outcome | Rejection:
        if pre.vendor is None and pre.kind != "profile":
            again = self.precheck(pre.topic, pre.payload)  # caches are current on the worker
            if not isinstance(again, Pre) or again.vendor is None:
                return again if isinstance(again, Rejection) else Rejection("unknown_vendor", None)
            pre = again
        try:
            if pre.kind == "profile":
                return self._profile(pre)
            if pre.kind == "offers":
                return self._offer(pre)
            if pre.kind == "countersignatures":
                return self._countersignature(pre)
            return self._ack(pre)
        except ProtocolError as exc:
            return Rejection(exc.reason, pre.vendor, exc.detail)
        except (StoreError, MarketError) as exc:
            log.warning("could not apply %s from %s: %s", pre.kind, pre.vendor, exc)
            return Rejection("store_error", pre.vendor, str(exc)[:200])

    def count(self, rej: Rejection) -> None:
        """Count in memory (any thread); `flush_counts` writes the totals. A flood then costs
        a dict update per message, not a disk sync."""
        log.info("rejected message: reason=%s vendor=%s %s", rej.reason, rej.vendor, rej.detail)
        with self._lock:
            key = (rej.reason, rej.vendor)
            self._counts[key] = self._counts.get(key, 0) + 1

    def flush_counts(self) -> None:
        """Write counted rejections to the store (worker thread)."""
        with self._lock:
            counts, self._counts = self._counts, {}
        for (reason, vendor), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            try:
                self.store.count_rejection(reason, vendor, n)
            except StoreError as exc:  # counting must never take the box down
                log.warning("could not count %d rejection(s): %s", n, exc)

    def _verify(self, pre: Pre, expect: type) -> Any:
        msg = verify(pre.payload, now=self.clock(), replay=None, expect=expect)
        if msg.id in self.replay:
            raise ProtocolError("replay", f"message id {msg.id} seen before")
        return msg

    def _remember(self, msg: Any) -> None:
        self.replay.check_and_remember(msg.id, msg.envelope.exp, self.clock())

    def _profile(self, pre: Pre) -> Outcome | Rejection:
        msg = verify(pre.payload, now=self.clock(), expect=VendorProfile)  # retained: may repeat
        name = topics.parse_vendor_topic(pre.topic)[0]  # type: ignore[index]
        if msg.body.vendor != name:
            return Rejection("topic_mismatch", name, "profile names another vendor")
        result = self.store.upsert_vendor_profile(name, msg.envelope.iss, msg.token, body_to_dict(msg.body))
        self.refresh()
        if result == "key_changed":
            log.warning("vendor %s published a new key %s: flagged, not accepted", name, msg.envelope.iss)
        return Outcome("profile", {"type": "vendor_" + result, "vendor": name})

    def _offer(self, pre: Pre) -> Outcome | Rejection:
        msg = verify(pre.payload, now=self.clock(), replay=None, expect=Offer)
        rec = self.store.get_offer(msg.id)
        if rec is not None and rec.token == msg.token:
            # A QoS 1 redelivery of an offer already stored (e.g. killed before the ack).
            return Outcome("duplicate", {"offer": msg.id})
        if msg.id in self.replay:
            raise ProtocolError("replay", f"message id {msg.id} seen before")
        body: Offer = msg.body
        if body.intent != pre.intent:
            return Rejection("topic_mismatch", pre.vendor, "offer names another intent")
        if body.vendor != pre.vendor:
            return Rejection("vendor_mismatch", pre.vendor, f"offer claims to be from {body.vendor}")
        if self.store.count_offers(body.intent, body.vendor) >= self.max_offers:
            return Rejection("too_many_offers", pre.vendor, f"{self.max_offers} per intent")
        intent = self.store.get_intent(body.intent)
        stored = self.store.add_offer(msg.id, body.intent, body.vendor, msg.envelope.iss, msg.token,
                                      body_to_dict(body), int(self.clock()))
        self._remember(msg)
        if not stored:  # an id stored long ago (its replay entry pruned), now with another token
            raise ProtocolError("replay", f"message id {msg.id} seen before")
        ranked = self.market.ranked_offers(body.intent, include_ineligible=True)
        mine = next((r for r in ranked if r["offer"] == msg.id), None)
        position = [r["offer"] for r in ranked if r["eligible"]].index(msg.id) + 1 \
            if mine and mine["eligible"] else None
        return Outcome("offer", {"type": "offer", "offer": msg.id, "intent": body.intent,
                                 "category": intent.category if intent else None,
                                 "vendor": body.vendor, "item": body.item.name, "price": body.price,
                                 "currency": body.currency, "eligible": bool(mine and mine["eligible"]),
                                 "score": mine["score"] if mine else None, "position": position})

    def _agreement_reply(self, pre: Pre, expect: type) -> tuple[Any, Any] | Rejection:
        """Verify a vendor's reply about one of our agreements: same intent, same vendor."""
        msg = self._verify(pre, expect)
        rec = self.store.get_agreement(msg.body.agreement)
        if rec is None or rec.intent_id != pre.intent or msg.body.intent != pre.intent:
            return Rejection("unknown_agreement", pre.vendor, msg.body.agreement)
        if rec.vendor != pre.vendor:
            return Rejection("vendor_mismatch", pre.vendor, f"{expect.TYPE} from another vendor")
        self._remember(msg)
        return msg, rec

    def _countersignature(self, pre: Pre) -> Outcome | Rejection:
        got = self._agreement_reply(pre, Countersignature)
        if isinstance(got, Rejection):
            return got
        msg, rec = got
        if msg.envelope.iss != rec.body.get("vendor_did"):
            return Rejection("vendor_key_changed", pre.vendor, "not signed by the key agreed with")
        if rec.status != "confirmed":
            return Rejection("wrong_state", pre.vendor, f"agreement is {rec.status}")
        result = self.market.countersigned(rec.agreement_id, msg.token)
        return Outcome("countersignature", {"type": "agreement_active", **result, "vendor": rec.vendor})

    def _ack(self, pre: Pre) -> Outcome | Rejection:
        got = self._agreement_reply(pre, RevocationAck)
        if isinstance(got, Rejection):
            return got
        msg, rec = got
        body: RevocationAck = msg.body
        if not rec.revocation_token or rec.revocation_ack:
            return Rejection("wrong_state", pre.vendor, "no pending revocation")
        if body.revocation != unverified_payload(rec.revocation_token).get("id"):
            return Rejection("unknown_agreement", pre.vendor, "acknowledges another revocation")
        self.store.ack_revocation(body.agreement, msg.token, body.deleted)
        return Outcome("ack", {"type": "revocation_acknowledged", "agreement": body.agreement,
                               "vendor": rec.vendor, "deleted": body.deleted})
