"""Everything vendors send the box, checked in an order where cheap checks protect the dear one,
and where a forger can only spend its own budget.

precheck (memory only, any thread): empty payload (ignored) -> size -> topic -> known/open intent
(before any base64 or JSON) -> header and signer did -> the signer's standing: unknown (one
shared budget for every unknown signer and message type; then, in the worker, `unknown_vendor`
if the key is still nobody's, its signature never checked), changed key, blocked -> the
vendor's offer cap for the intent -> full protocol verification (signature, schema, lifetime,
freshness) -> replay -> topic/vendor consistency -> *only now* the vendor's own rate-limit
bucket. handle (the one worker thread): store-backed checks, store, rank, event.

Attribution: a rejection names a vendor only when that vendor's signature on the message
verified, it is fresh, not a replay, and it arrived where it says it belongs; anything a
stranger could have sent (forged, replayed, relayed, claimed) is counted under no vendor.
So forgeries carrying a real vendor's kid cost that vendor neither budget nor reputation.
Every refusal is a `Rejection` with a reason code; nothing here raises on bad input.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from vrm_protocol import (Countersignature, Message, Offer, ProtocolError, ReplayGuard, RevocationAck,
                          VendorProfile, new_id, read_header, replay_key, token_hash, topics, verify)
from vrm_protocol.codec import unverified_payload
from vrm_protocol.didkey import did_from_kid as _did_from_kid
from vrm_protocol.messages import body_to_dict

from .config import IntakeConfig
from .market import Market, MarketError
from .ratelimit import RateLimiter
from .records import OfferRecord
from .store import StoreError

log = logging.getLogger(__name__)

# Reasons the box adds to the protocol's own (vrm_protocol.errors.REASONS); docs/protocol.md §13
# lists both (tests/test_protocol_docs.py keeps them in step).
INTAKE_REASONS = (
    "unknown_topic", "unknown_intent", "intent_closed", "unknown_vendor", "blocked_vendor",
    "rate_limited", "vendor_key_changed", "vendor_mismatch", "topic_mismatch",
    "unknown_agreement", "wrong_state", "too_many_offers", "too_many_vendors", "terms_mismatch",
    "store_error",
)

# Message ids the replay guard keeps in memory; older ones are looked up in the store.
REPLAY_MEMORY = 10_000

# The one budget for messages no pinned vendor's verified signature pays for: profiles and
# replies from keys never seen, and replays of anyone's messages. A forger drains only this.
SHARED_BUCKET = "unverified"
# Copies of a pinned vendor's own verified messages (its re-sends until receipted, or anyone's
# replays of them) draw from a bucket of their own: a replayer can delay that vendor's receipts,
# never its new offers, and strangers' floods of the shared bucket cannot stop its re-sends.
RESEND_BUCKET = "resend:"


def _bucket(vendor_budget: str, intent: str | None) -> str:
    """A vendor's budgets are kept per intent: one shared across a person's intents would let a
    vendor (or a replayer) tell whether two intents are one box's, by spending it on one and
    watching the other's receipts (docs/protocol.md §11.4)."""
    return f"{vendor_budget}@{intent}"


def did_from_kid(kid: object) -> str:
    """base58-decoding the signer's did:key is the dearest part of the cheap checks, and a flood
    repeats the same few kids: vrm_protocol.didkey caches it (bounded; refusals never cached)."""
    return _did_from_kid(kid)


@dataclass(frozen=True)
class Rejection:
    reason: str
    vendor: str | None
    detail: str = ""


@dataclass(frozen=True)
class Pre:
    """A message that passed the cheap checks (and, from a pinned vendor, verification)."""

    topic: str
    payload: bytes
    kind: str                # offers | countersignatures | acks | profile
    intent: str | None
    vendor: str | None       # the pinned vendor whose signature verified (None: not yet known)
    msg: Message | None = field(default=None, compare=False)   # the verified message, if verified
    seen: bool = False       # its id was accepted before: a redelivery or a replay (worker decides)


@dataclass(frozen=True)
class Claim:
    """A message that passed the cheap checks and names a known key: its signature is to be
    checked (verify_claim, or a pool process), then `settle` finishes it."""

    topic: str
    payload: bytes
    kind: str                # offers | countersignatures | acks | profile
    intent: str | None
    vendor: str              # the pinned (or pending) vendor whose key the header names: its lane
    did: str
    expect: type             # the message type it must verify as


@dataclass(frozen=True)
class Outcome:
    kind: str                # offer | duplicate | countersignature | ack | profile | rejected | ignored
    event: dict[str, Any] = field(default_factory=dict)


_EXPECT = {"offers": Offer, "countersignatures": Countersignature, "acks": RevocationAck}


def _duplicate(rec: OfferRecord) -> Outcome:
    """An offer the box already holds, arrived again (a re-send, a QoS 1 re-delivery): stored
    once, receipted again, and shown on the event stream as what it is, never as a new offer."""
    return Outcome("duplicate", {"type": "offer_duplicate", "offer": rec.offer_id,
                                 "intent": rec.intent_id, "vendor": rec.vendor})


class Intake:
    def __init__(self, market: Market, *, limiter: RateLimiter, max_bytes: int,
                 clock: Callable[[], float], max_offers_per_vendor_intent: int = 20,
                 max_vendors: int = IntakeConfig.max_vendors) -> None:
        """`max_offers_per_vendor_intent` bounds what a vendor inside its rate limit can make the
        box store and re-rank for one intent; `max_vendors` how many vendors can be pinned."""
        self.max_offers = max_offers_per_vendor_intent
        self.max_vendors = max_vendors
        self.market = market
        self.store = market.store
        self.limiter = limiter
        self.max_bytes = max_bytes
        self.clock = clock
        self.replay = self._replay_guard()
        self._lock = threading.Lock()
        self._open_intents: frozenset[str] = frozenset()      # offers accepted for these
        self._known_intents: frozenset[str] = frozenset()     # acks/countersignatures for these
        self._all_intents: frozenset[str] = frozenset()
        self._withdrawn: dict[str, int] = {}                 # withdrawn intent -> its exp
        self._vendors_by_did: dict[str, tuple[str, str]] = {}  # did -> (vendor, status)
        self._pending_dids: dict[str, str] = {}               # a changed, unaccepted key -> vendor
        self._did_of: dict[str, str] = {}                     # vendor -> pinned did
        self._pending_of: dict[str, str] = {}                 # vendor -> pending did
        self._profile_hash: dict[str, str] = {}               # vendor -> hash of its stored profile
        self._offer_counts: dict[tuple[str, str], int] = {}   # (intent, vendor) -> offers stored
        self._counts: dict[tuple[str, str | None], int] = {}  # rejections not yet written
        self._terms: dict[str, tuple[str | None, tuple[Any, Any]]] = {}  # worker thread only
        self.refresh()

    def _replay_guard(self) -> ReplayGuard:
        """Recent ids in memory (bounded), every stored one through the store's indexed
        seen_messages: nothing is seeded at start-up, so memory does not grow with the store."""
        return ReplayGuard(max_entries=REPLAY_MEMORY, kept_elsewhere=self.store.seen_message)

    def reload(self) -> None:
        """Forget what memory holds beyond the store (after a rolled-back batch: ids and counts
        of messages that were never committed) and rebuild it from the store."""
        replay = self._replay_guard()
        with self._lock:
            self._offer_counts = {}
        self.replay = replay
        self.refresh()

    # ---------------------------------------------------------------- caches (worker thread)
    def refresh(self) -> None:
        """Reload what the cheap checks need; call after any change to intents or vendors made
        outside the intake (the intake keeps its caches current for what it stores itself)."""
        intents = self.store.intent_states()
        vendors = self.store.list_vendors()
        self._terms = {}
        waiting = {a.intent_id for a in self.store.agreement_states()
                   if a.status in ("confirmed", "active") or (a.revoked and not a.acknowledged)}
        with self._lock:
            self._open_intents = frozenset(i.intent_id for i in intents if i.status == "active")
            # intents that can still be answered: open ones, and those with a countersignature
            # or a deletion acknowledgement to come
            self._known_intents = self._open_intents | frozenset(waiting)
            self._all_intents = frozenset(i.intent_id for i in intents)
            self._withdrawn = {i.intent_id: i.expires_at for i in intents if i.status == "withdrawn"}
            self._vendors_by_did, self._pending_dids = {}, {}
            self._did_of, self._pending_of, self._profile_hash = {}, {}, {}
            for v in vendors:
                self._cache_vendor_locked(v)
            self._offer_counts = {k: n for k, n in self._offer_counts.items()
                                  if k[0] in self._open_intents}

    def _cache_vendor_locked(self, v: Any) -> None:
        """Put one vendor record into the caches (replacing what they held for it)."""
        old = self._did_of.pop(v.vendor, None)
        if old is not None:
            self._vendors_by_did.pop(old, None)
        old_pending = self._pending_of.pop(v.vendor, None)
        if old_pending is not None:
            self._pending_dids.pop(old_pending, None)
        self._vendors_by_did[v.did] = (v.vendor, v.status)
        self._did_of[v.vendor] = v.did
        if v.pending_did:
            self._pending_dids[v.pending_did] = v.vendor
            self._pending_of[v.vendor] = v.pending_did
        self._profile_hash[v.vendor] = token_hash(v.profile_token)

    def _update_vendor(self, vendor: str) -> None:
        """Incremental: re-read one vendor after the intake changed it (no full refresh)."""
        rec = self.store.get_vendor(vendor)
        if rec is not None:
            with self._lock:
                self._cache_vendor_locked(rec)

    @property
    def subscribed_intents(self) -> frozenset[str]:
        """The inboxes the box reads: every intent that can still be answered, and a withdrawn
        one until its own exp. A vendor that missed the withdrawal keeps sending until then; what
        it sends is refused (`intent_closed`) and counted, where an unread inbox would make those
        messages vanish from every count. Past its exp nobody can hold a valid copy of the intent."""
        now = self.clock()
        with self._lock:
            return self._known_intents | frozenset(i for i, exp in self._withdrawn.items() if exp > now)

    # ---------------------------------------------------------------- cheap half (any thread)
    def precheck(self, topic: str, payload: bytes) -> Pre | Rejection | None:
        """Memory and CPU only; None means "nothing to do" (an empty payload: a retained clear)."""
        return self._precheck(topic, payload, first=True)

    def claim(self, topic: str, payload: bytes) -> Claim | Pre | Rejection | None:
        """The cheap checks only (no signature check): a `Claim` still needs `verify_claim`
        (here or in a pool process) and then `settle`; precheck == settle(verify(claim))."""
        return self._claim(topic, payload, first=True)

    def verify_claim(self, claim: Claim) -> Message | ProtocolError:
        """The one dear step, in-process."""
        try:
            return verify(claim.payload, now=self.clock(), expect=claim.expect)
        except ProtocolError as exc:
            return exc

    def _precheck(self, topic: str, payload: bytes, first: bool) -> Pre | Rejection | None:
        got = self._claim(topic, payload, first)
        return self.settle(got, self.verify_claim(got)) if isinstance(got, Claim) else got

    def _claim(self, topic: str, payload: bytes, first: bool) -> Claim | Pre | Rejection | None:
        if not payload:  # §3: only ever a retained-message clearance, ignored wherever it arrives
            return None
        if len(payload) > self.max_bytes:
            return Rejection("oversize", None, f"{len(payload)} bytes")
        box = topics.parse_box_topic(topic)
        vend = None if box else topics.parse_vendor_topic(topic)
        if not box and not (vend and vend[1] == "profile"):
            return Rejection("unknown_topic", None, topic[:100])
        if box:
            intent, kind = box
            with self._lock:
                known = intent in self._known_intents
                ours = intent in self._all_intents
                open_ = intent in self._open_intents
            if not known:
                return Rejection("intent_closed" if ours else "unknown_intent", None, intent[:64])
            if kind == "offers" and not open_:
                return Rejection("intent_closed", None, intent)
        try:  # who claims to have signed it, from the header alone
            token, header = read_header(payload)
            did = did_from_kid(header["kid"])
        except ProtocolError as exc:
            return Rejection(exc.reason, None, exc.detail)
        if not box:
            return self._claim_profile(topic, payload, token, vend[0], did, first)  # type: ignore[index]
        with self._lock:
            vendor = self._vendors_by_did.get(did)
            pending = self._pending_dids.get(did)
        if vendor is None:
            if pending:
                return Rejection("vendor_key_changed", None, f"{pending}: a key you have not accepted")
            # Its profile may be just ahead in the queue: the worker looks again.
            if first and not self.limiter.allow(SHARED_BUCKET, self.clock()):
                return Rejection("rate_limited", None, "unknown signer")
            return Pre(topic, payload, kind, intent, None)
        name, status = vendor
        if status == "blocked":
            return Rejection("blocked_vendor", None, name)
        if kind == "offers":
            with self._lock:
                stored = self._offer_counts.get((intent, name), 0)
            if stored >= self.max_offers and not self._maybe_stored(token, intent, did):
                return Rejection("too_many_offers", None, f"{name}: {self.max_offers} per intent")
        return Claim(topic, payload, kind, intent, name, did, _EXPECT[kind])

    def settle(self, claim: Claim, verdict: Message | ProtocolError) -> Pre | Rejection:
        """The checks after the signature's verdict (memory only, any thread)."""
        if isinstance(verdict, ProtocolError):
            return Rejection(verdict.reason, None, verdict.detail)
        if not isinstance(verdict, Message) or not isinstance(verdict.body, claim.expect) \
                or verdict.token.encode("ascii") != claim.payload:   # never another message's verdict
            log.error("a verdict for another message on %s: refused", claim.topic)
            return Rejection("bad_encoding", None, "internal error: verdict for another message")
        msg, topic, payload, kind, intent, name = verdict, claim.topic, claim.payload, claim.kind, \
            claim.intent, claim.vendor
        if kind == "profile":
            # Known keys re-publish at their own pace, from their own verified budget.
            if not self.limiter.allow("profile:" + claim.did, self.clock()):
                return Rejection("rate_limited", None, "vendor profile flood")
            return Pre(topic, payload, "profile", None, None, msg)
        # Ids are kept per (intent, signer): another signer's copy of an id (squatting) or this
        # vendor's message of another intent is no replay here (docs/protocol.md 11.3).
        if replay_key(intent, msg.envelope.iss, msg.id) in self.replay:
            # anyone can replay a vendor's message: never its budget
            if not self.limiter.allow(_bucket(RESEND_BUCKET + name, intent), self.clock()):
                return Rejection("replay", None, f"message id {msg.id} seen before")
            return Pre(topic, payload, kind, intent, name, msg, seen=True)
        if msg.body.intent != intent:  # a relayed copy is as likely as the vendor's own mistake
            return Rejection("topic_mismatch", None, f"{name}'s {kind} names another intent")
        if kind == "offers" and msg.body.vendor != name:  # signed by `name`, claiming to be another
            return Rejection("vendor_mismatch", name, f"offer claims to be from {msg.body.vendor}")
        if not self.limiter.allow(_bucket(name, intent), self.clock()):  # its own verified messages only
            return Rejection("rate_limited", name)
        return Pre(topic, payload, kind, intent, name, msg)

    def _maybe_stored(self, token: str, intent: str, did: str) -> bool:
        """An offer over the cap may be a re-send of one stored (to be receipted again): only its
        unverified id is read here; the signature is checked before anything is answered."""
        try:
            mid = unverified_payload(token).get("id")
        except ProtocolError:
            return False
        return isinstance(mid, str) and replay_key(intent, did, mid) in self.replay

    def _claim_profile(self, topic: str, payload: bytes, token: str, name: str, did: str,
                       first: bool) -> Claim | Pre | Rejection | None:
        with self._lock:
            owner = self._vendors_by_did.get(did, (self._pending_dids.get(did), ""))[0]
            known_name = name in self._did_of
            same_token = self._profile_hash.get(name) == token_hash(token)
            full = len(self._did_of) >= self.max_vendors
        if same_token:  # a retained re-delivery of the profile stored: nothing to do, no refresh
            return None
        if owner is None:
            if full and not known_name:
                return Rejection("too_many_vendors", None, f"{self.max_vendors} pinned")
            # Brand-new keys share one bucket, so fresh keys cannot be minted to fill the store.
            if first and not self.limiter.allow(SHARED_BUCKET, self.clock()):
                return Rejection("rate_limited", None, "vendor profile flood")
            return Pre(topic, payload, "profile", None, None)
        return Claim(topic, payload, "profile", None, owner, did, VendorProfile)

    # ---------------------------------------------------------------- dear half (worker thread)
    def handle(self, pre: Pre) -> Outcome | Rejection:
        if pre.vendor is None and pre.kind != "profile":
            # Caches are current here: a key still nobody's is `unknown_vendor` before its
            # signature is checked (a kid anyone can name must not buy the box's dearest step).
            again = self._precheck(pre.topic, pre.payload, first=False)
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
            return Rejection(exc.reason, None, exc.detail)
        except (StoreError, MarketError) as exc:
            log.warning("could not apply %s from %s: %s", pre.kind, pre.vendor, exc)
            return Rejection("store_error", pre.vendor, str(exc)[:200])

    def count(self, rej: Rejection) -> None:
        """Count in memory (any thread); `flush_counts` writes the totals. A flood then costs
        a dict update per message, not a disk sync — nor a log line: `flush_counts` logs the
        totals (a flood of thousands a second would otherwise cost the network thread a fifth
        of its time, and fill the log)."""
        log.debug("rejected message: reason=%s vendor=%s %s", rej.reason, rej.vendor, rej.detail)
        with self._lock:
            key = (rej.reason, rej.vendor)
            self._counts[key] = self._counts.get(key, 0) + 1

    def flush_counts(self) -> None:
        """Write counted rejections to the store (worker thread)."""
        with self._lock:
            counts, self._counts = self._counts, {}
        if counts:
            log.info("rejected %d message(s): %s", sum(counts.values()),
                     ", ".join(f"{r}{'/' + v if v else ''} {n}" for (r, v), n in sorted(
                         counts.items(), key=lambda kv: -kv[1])[:10]))
        for (reason, vendor), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            try:
                self.store.count_rejection(reason, vendor, n)
            except (StoreError, sqlite3.Error, OSError) as exc:  # counting must never take the box down
                log.warning("could not count %d rejection(s): %s", n, exc)

    def _message(self, pre: Pre, expect: type) -> Message:
        return pre.msg if pre.msg is not None else verify(pre.payload, now=self.clock(), expect=expect)

    def _key(self, pre: Pre, msg: Any) -> str:
        """The message's replay key: its id within the inbox's intent and its signer."""
        return replay_key(pre.intent, msg.envelope.iss, msg.id)

    def _remember(self, pre: Pre, msg: Any) -> None:
        self.replay.check_and_remember(self._key(pre, msg), msg.envelope.exp, self.clock())

    def _profile(self, pre: Pre) -> Outcome | Rejection:
        msg = self._message(pre, VendorProfile)  # retained: may repeat
        name = topics.parse_vendor_topic(pre.topic)[0]  # type: ignore[index]
        if msg.body.vendor != name:
            return Rejection("topic_mismatch", None, f"profile on {name}'s topic names another vendor")
        with self._lock:
            new_vendor = name not in self._did_of
            full = len(self._did_of) >= self.max_vendors
        if new_vendor and full:
            return Rejection("too_many_vendors", None, f"{self.max_vendors} pinned")
        result = self.store.upsert_vendor_profile(name, msg.envelope.iss, msg.token, body_to_dict(msg.body))
        self._update_vendor(name)
        if result == "key_changed":
            log.warning("vendor %s published a new key %s: flagged, not accepted", name, msg.envelope.iss)
        return Outcome("profile", {"type": "vendor_" + result, "vendor": name})

    def _offer(self, pre: Pre) -> Outcome | Rejection:
        msg = self._message(pre, Offer)
        iss = msg.envelope.iss
        if pre.seen or self._key(pre, msg) in self.replay:
            # A QoS 1 redelivery of an offer already stored (e.g. killed before the ack): only
            # this intent's and this signer's offer with this very token.
            rec = self.store.find_offer(pre.intent or "", pre.vendor or "", iss, msg.token)
            if rec is not None:
                return _duplicate(rec)
            raise ProtocolError("replay", f"message id {msg.id} seen before")
        body: Offer = msg.body
        stored = self.store.count_offers(body.intent, body.vendor)
        with self._lock:
            self._offer_counts[(body.intent, body.vendor)] = stored
        if stored >= self.max_offers:
            return Rejection("too_many_offers", pre.vendor, f"{self.max_offers} per intent")
        category, terms = self._intent_terms(body.intent)
        answered = body.terms_response
        if (answered.id, answered.sha256) != terms:
            # Accepting other terms is not accepting the person's.
            return Rejection("terms_mismatch", pre.vendor, "the offer answers other terms")
        stored_body, received = body_to_dict(body), int(self.clock())
        handle = self._store_offer(msg, body, stored_body, received)
        if isinstance(handle, Outcome):
            return handle
        self._remember(pre, msg)
        with self._lock:
            self._offer_counts[(body.intent, body.vendor)] = stored + 1
        # scored once and placed among the intent's offers (market.place_offer, leaderboard)
        placed = self.market.place_offer(handle, category or "", OfferRecord(
            handle, body.intent, body.vendor, msg.envelope.iss, msg.token, stored_body, "new", received, None))
        return Outcome("offer", {"type": "offer", "offer": handle, "intent": body.intent,
                                 "category": category,
                                 "vendor": body.vendor, "item": body.item.name, "price": body.price,
                                 "currency": body.currency, "eligible": bool(placed and placed.eligible),
                                 "score": placed.score if placed else None,
                                 "position": placed.position if placed else None})

    def _store_offer(self, msg: Message, body: Offer, stored_body: dict[str, Any],
                     received: int) -> str | Outcome:
        """Store a verified offer; its handle on the box (the offer's id unless another intent's
        or signer's offer already has that handle), or the duplicate it is."""
        iss = msg.envelope.iss
        if self.store.add_offer(msg.id, body.intent, body.vendor, iss, msg.token, stored_body,
                                received, exp=msg.envelope.exp):
            return msg.id
        # The id is taken: an id stored long ago (its replay entry pruned), or another scope's.
        rec = self.store.find_offer(body.intent, body.vendor, iss, msg.token)
        if rec is not None:
            return _duplicate(rec)
        if self.store.has_offer_id(body.intent, body.vendor, iss, msg.id):
            raise ProtocolError("replay", f"message id {msg.id} seen before")
        for _ in range(8):   # a random handle: nobody can squat on one before it exists
            handle = new_id()
            if self.store.add_offer(handle, body.intent, body.vendor, iss, msg.token, stored_body,
                                    received, exp=msg.envelope.exp, msg_id=msg.id):
                return handle
        raise StoreError("no free handle for an offer")

    def _intent_terms(self, intent_id: str) -> tuple[str | None, tuple[Any, Any]]:
        """(category, (terms id, sha256)) of an intent, cached: reading it from the store unseals
        the intent and rebuilds its key, which cost more than the rest of an offer's checks."""
        hit = self._terms.get(intent_id)
        if hit is None:
            intent = self.store.get_intent(intent_id)
            terms = (intent.body.get("terms") or {}) if intent else {}
            hit = (intent.category if intent else None, (terms.get("id"), terms.get("sha256")))
            if intent is not None:   # an intent's terms never change; refresh() empties the cache
                self._terms[intent_id] = hit
        return hit

    def _agreement_reply(self, pre: Pre, expect: type) -> tuple[Any, Any] | Rejection:
        """A vendor's reply about one of our agreements: same intent, same vendor."""
        msg = self._message(pre, expect)
        if pre.seen or self._key(pre, msg) in self.replay:
            raise ProtocolError("replay", f"message id {msg.id} seen before")
        rec = self.store.get_agreement(msg.body.agreement)
        if rec is None or rec.intent_id != pre.intent or msg.body.intent != pre.intent:
            return Rejection("unknown_agreement", pre.vendor, msg.body.agreement)
        if rec.vendor != pre.vendor:
            return Rejection("vendor_mismatch", pre.vendor, f"{expect.TYPE} from another vendor")
        self._remember(pre, msg)
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
        if not rec.token or msg.body.agreement_hash != token_hash(rec.token):
            return Rejection("unknown_agreement", pre.vendor, "countersigns another agreement text")
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
