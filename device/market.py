"""What the person can do in the market: cast and withdraw intents, see ranked offers, accept,
decline, snooze, confirm, revoke, set rules.

Why one layer: the CLI, the control socket, the buttons and the phone app all call these same
methods, so a rule (e.g. "releasing data needs a press on the box") is enforced in one place.
Everything to be sent goes into the store's outbox in the same transaction as the state change;
the daemon publishes the outbox, so nothing is lost if it is down or restarting.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from vrm_protocol import EncryptionKey, ProtocolError, Terms, new_id, topics
from vrm_protocol.codec import MAX_LIFETIME, unverified_payload
from vrm_protocol.encryption import seal
from vrm_protocol.messages import parse_dataclass

from . import agreements as agr
from .intents import build_intent, build_withdrawal, terms_for
from .leaderboard import Leaderboard, Placement
from .ranking import rank
from .records import IntentRecord, OfferRecord
from .config import AgreementsConfig, Config, IntentsConfig
from .reputation import reputation_from
from .rules import CompiledRules, Context, OfferFacts, compile_rules, default_rules, validate_rules
from .store import Store, StoreError

log = logging.getLogger(__name__)

CONFIRM_SOURCES = ("button", "companion")
MIN_INTENT_TTL = 60
COMPANION_ONLY_SETTING = "companion_only_confirmation"
CONSENTED_PREFIX = "consented:"   # setting: the values an agreement releases, fixed at the press
# The most offers the cached leaderboards hold together (least recently used intents go first):
# the intake's ranking memory stays bounded however many offers the store keeps.
MAX_BOARD_OFFERS = 5000


class MarketError(ValueError):
    """A request the person made cannot be done as asked; the message says why."""


_INTENTS, _AGREEMENTS = IntentsConfig(), AgreementsConfig()   # the one home of the defaults


@dataclass(frozen=True)
class MarketSettings:
    """The parts of the config the market needs (kept plain so tests build it directly)."""

    terms_id: str = _INTENTS.terms_id
    terms_text: str = _INTENTS.terms_text
    terms_uri: str | None = _INTENTS.terms_uri   # where the same text can be read
    intent_ttl_s: int = _INTENTS.default_ttl_s
    default_duration_days: int = _AGREEMENTS.default_duration_days
    default_purpose: str = _AGREEMENTS.default_purpose
    default_fields: tuple[str, ...] = _AGREEMENTS.default_fields
    countersign_timeout_s: int = _AGREEMENTS.countersign_timeout_s
    presets: tuple[dict[str, Any], ...] = field(default_factory=tuple)


def market_settings(cfg: Config) -> MarketSettings:
    """The market's view of the config file."""
    return MarketSettings(terms_id=cfg.intents.terms_id, terms_text=cfg.intents.terms_text,
                          terms_uri=cfg.intents.terms_uri, intent_ttl_s=cfg.intents.default_ttl_s,
                          default_duration_days=cfg.agreements.default_duration_days,
                          default_purpose=cfg.agreements.default_purpose,
                          default_fields=cfg.agreements.default_fields,
                          countersign_timeout_s=cfg.agreements.countersign_timeout_s,
                          presets=tuple({"name": p.name, "category": p.category,
                                         "description": p.description,
                                         "attributes": dict(p.attributes)} for p in cfg.presets))


def _is_open(o: OfferRecord, now: int) -> bool:
    """An offer that is ranked: not acted on, or snoozed until a moment that has passed."""
    return o.status == "new" or (o.status == "snoozed" and (o.snooze_until or 0) <= now)


@dataclass
class _Board:
    """One intent's cached leaderboard and what it was built against (any change: rebuild)."""

    board: Leaderboard
    rules: CompiledRules
    ctx: Context
    version: tuple[int, int]   # store.offers_version() when built
    stored: int                # the intent's offers in the store, whatever their status
    blocked: frozenset[str]    # the vendors left out (blocked when built)


class Market:
    def __init__(self, store: Store, settings: MarketSettings | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.store = store
        self.settings = settings or MarketSettings()
        self._clock = clock or store.now
        self._compiled: tuple[Any, Any] | None = None  # (rules dict, compiled) cache
        self._boards: OrderedDict[str, _Board] = OrderedDict()   # intent -> its leaderboard
        self._status_changes = 0                     # vendor statuses set through this market
        self._blocked: tuple[tuple[int, int], frozenset[str]] | None = None

    def now(self) -> int:
        return int(self._clock())

    # ---------------------------------------------------------------- intents
    def add_intent(self, category: str, attributes: dict[str, Any] | None = None,
                   description: str | None = None, ttl: int | None = None) -> dict[str, Any]:
        terms = terms_for(self.settings.terms_id, self.settings.terms_text, self.settings.terms_uri)
        ttl = int(self.settings.intent_ttl_s if ttl is None else ttl)
        if not MIN_INTENT_TTL <= ttl <= MAX_LIFETIME:  # vendors refuse longer ones as bad_lifetime
            raise MarketError(f"an intent lives between {MIN_INTENT_TTL} seconds and 366 days, not {ttl} s")
        try:
            built = build_intent(category, terms, attributes or {}, description, now=self.now(), ttl=ttl)
        except ProtocolError as exc:
            raise MarketError(f"intent not valid: {exc.detail or exc.reason}") from exc
        with self.store.transaction():
            self.store.add_intent(built.intent_id, category, built.identity.seed, built.token,
                                  built.body, built.expires_at)
            self.store.queue_outbox(topics.intent(category, built.intent_id), built.token, retain=True)
        log.info("intent %s (%s) cast", built.intent_id, category)
        return {"intent": built.intent_id, "category": category, "expires_at": built.expires_at}

    def add_intent_from_preset(self, name: str) -> dict[str, Any]:
        for p in self.settings.presets:
            if p.get("name") == name:
                return self.add_intent(p["category"], dict(p.get("attributes") or {}),
                                       p.get("description"), p.get("ttl_s"))
        raise MarketError(f"no preset named {name!r}")

    def _intent(self, intent_id: str) -> IntentRecord:
        rec = self.store.get_intent(intent_id)
        if rec is None:
            raise MarketError(f"no intent {intent_id}")
        return rec

    def withdraw_intent(self, intent_id: str) -> dict[str, Any]:
        rec = self._intent(intent_id)
        if rec.status != "active":
            raise MarketError(f"intent {intent_id} is {rec.status}, not active")
        token = build_withdrawal(rec.identity, intent_id, rec.category, now=self.now())
        with self.store.transaction():
            self.store.set_intent_status(intent_id, "withdrawn")
            self.store.queue_outbox(topics.withdrawal(rec.category, intent_id), token)
            self.store.queue_outbox(topics.intent(rec.category, intent_id), "", retain=True)
        return {"intent": intent_id, "status": "withdrawn"}

    def expire_intents(self) -> list[str]:
        """Mark intents past their expiry; the broker drops the retained copy by itself."""
        now, done = self.now(), []
        for rec in self.store.intent_states("active"):
            if rec.expires_at <= now:
                self.store.set_intent_status(rec.intent_id, "expired")
                done.append(rec.intent_id)
        return done

    def list_intents(self, status: str | None = None) -> list[dict[str, Any]]:
        return [{"intent": r.intent_id, "category": r.category, "status": r.status,
                 "expires_at": r.expires_at, "created_at": r.created_at,
                 "description": r.body.get("description"), "attributes": r.body.get("attributes", {}),
                 "offers": self.store.count_intent_offers(r.intent_id)}
                for r in self.store.list_intents(status)]

    # ---------------------------------------------------------------- rules and ranking
    def rules(self) -> dict[str, Any]:
        return self.store.get_rules() or default_rules()

    def set_rules(self, data: Any) -> dict[str, Any]:
        try:
            clean = validate_rules(data)
        except ValueError as exc:
            raise MarketError(str(exc)) from exc
        self.store.set_rules(clean)
        self._compiled = None
        return clean

    def compiled_rules(self) -> Any:
        rules = self.rules()
        if self._compiled is None or self._compiled[0] != rules:
            self._compiled = (rules, compile_rules(rules))
        return self._compiled[1]

    def context(self) -> Context:
        agreements = [{"vendor": a.vendor, "status": a.status, "revocation_ack": a.acknowledged or None,
                       "updated_at": a.updated_at} for a in self.store.agreement_states()]
        reviews = [{"vendor": r.vendor, "rating": r.rating} for r in self.store.list_reviews()]
        return Context(suppliers=frozenset(s.vendor for s in self.store.list_suppliers()),
                       reputation=reputation_from(agreements, reviews, self.now()))

    def blocked_vendors(self) -> frozenset[str]:
        """The vendors the person blocked. Their offers leave every ranking at once (the phone,
        the box's screen, the CLI all read ranked_offers) and none can be accepted or confirmed:
        a block the person set must not leave a blocked vendor ranked first. Cached; read again
        when this market sets a status or another connection wrote to the store."""
        key = (self._status_changes, self.store.offers_version()[1])
        if self._blocked is None or self._blocked[0] != key:
            self._blocked = (key, frozenset(v.vendor for v in self.store.list_vendors()
                                            if v.status == "blocked"))
        return self._blocked[1]

    def _refuse_blocked(self, vendor: str, what: str) -> None:
        if vendor in self.blocked_vendors():
            raise MarketError(f"vendor {vendor} is blocked, so {what}: allow it again on the "
                              f"vendors page (or `vrmbox vendor allow {vendor}`) first")

    def facts(self, offer: OfferRecord, category: str) -> OfferFacts:
        return OfferFacts.from_offer(offer.offer_id, offer.body, category, offer.received_at)

    def preview_rules(self, data: Any, intent_id: str | None = None) -> list[dict[str, Any]]:
        """How the open offers would rank under rules not saved yet (nothing changes)."""
        try:
            compiled = compile_rules(validate_rules(data))
        except ValueError as exc:
            raise MarketError(str(exc)) from exc
        return self.ranked_offers(intent_id, include_ineligible=True, compiled=compiled)

    def ranked_offers(self, intent_id: str | None = None, include_ineligible: bool = False,
                      include_closed: bool = False, compiled: Any = None) -> list[dict[str, Any]]:
        """Offers ranked by the person's current rules (or `compiled` ones), with explanations."""
        categories = {r.intent_id: r.category for r in self.store.intent_states()}
        now = self.now()
        blocked = self.blocked_vendors()
        offers = [o for o in self.store.list_offers(intent_id)
                  if include_closed or o.status == "new"
                  or (o.status == "snoozed" and (o.snooze_until or 0) <= now)]
        shut_out = [o for o in offers if o.vendor in blocked]       # not ranked, nor in the scale
        offers = [o for o in offers if o.vendor not in blocked]
        by_id = {o.offer_id: o for o in offers}
        ranked = rank(compiled or self.compiled_rules(), [self.facts(o, categories.get(o.intent_id, ""))
                                              for o in offers], self.context(), now)
        out = []
        for r in ranked:
            if not r.eligible and not include_ineligible:
                continue
            out.append(self._offer_row(by_id[r.offer_id], r.eligible, r.score, r.explanation.to_dict()))
        if include_ineligible:     # shown as filtered out, with the reason, never ranked
            out += [self._offer_row(o, False, 0.0, {"passed": [], "contributions": {}, "score": 0.0,
                                                    "failed": [f"vendor_status: {o.vendor} is blocked"]})
                    for o in shut_out]
        return out

    @staticmethod
    def _offer_row(o: OfferRecord, eligible: bool, score: float,
                   explanation: dict[str, Any]) -> dict[str, Any]:
        return {"offer": o.offer_id, "intent": o.intent_id, "vendor": o.vendor,
                "item": o.body.get("item", {}).get("name"), "price": o.body.get("price"),
                "currency": o.body.get("currency"), "valid_until": o.body.get("valid_until"),
                "delivery_days": o.body.get("delivery_days"), "region": o.body.get("region"),
                "status": o.status, "eligible": eligible, "score": score,
                "terms_accepted": o.body.get("terms_response", {}).get("decision") == "accept",
                "explanation": explanation}

    def place_offer(self, offer_id: str, category: str,
                    record: OfferRecord | None = None) -> Placement | None:
        """Rank a just-stored offer among its intent's open offers, as `ranked_offers` would,
        but scored once and placed on the intent's cached leaderboard (the others are re-scored
        only when the new offer moves a normalisation range). None if it is not stored/open.

        The board is rebuilt from the store when anything it depends on may have changed: the
        rules, the context, an offer's status (store.offers_version), an offer it has not seen
        (the intent's stored count, e.g. after a rolled-back batch), or time (an offer lapsing,
        a snooze ending). `record`: the offer as just stored, when the caller has it."""
        rec = record if record is not None and record.offer_id == offer_id else self.store.get_offer(offer_id)
        now = self.now()
        blocked = self.blocked_vendors()
        if rec is None or not _is_open(rec, now) or rec.vendor in blocked:
            return None
        rules, ctx = self.compiled_rules(), self.context()
        version = self.store.offers_version()
        stored = self.store.count_intent_offers(rec.intent_id)
        cached = self._boards.get(rec.intent_id)
        if cached is not None and cached.rules is rules and cached.ctx == ctx \
                and cached.blocked == blocked and cached.version == version and cached.stored + 1 == stored \
                and offer_id not in cached.board and not cached.board.stale(now):
            placed = cached.board.add(self.facts(rec, category), now)
            cached.stored = stored
            self._boards.move_to_end(rec.intent_id)
        else:
            self._boards.pop(rec.intent_id, None)
            offers = self.store.list_offers(rec.intent_id)
            wake = [o.snooze_until for o in offers
                    if o.status == "snoozed" and (o.snooze_until or 0) > now]
            board = Leaderboard(rules, ctx, [self.facts(o, category) for o in offers
                                             if _is_open(o, now) and o.vendor not in blocked],
                                now, wake_at=min(wake) if wake else None)
            placed = board.placement(offer_id, now)
            if len(board) <= MAX_BOARD_OFFERS:
                self._boards[rec.intent_id] = _Board(board, rules, ctx, version, len(offers), blocked)
        held = sum(len(b.board) for b in self._boards.values())
        while held > MAX_BOARD_OFFERS and len(self._boards) > 1:
            _, dropped = self._boards.popitem(last=False)
            held -= len(dropped.board)
        return placed

    # ---------------------------------------------------------------- offers
    def _offer(self, offer_id: str) -> OfferRecord:
        rec = self.store.get_offer(offer_id)
        if rec is None:
            raise MarketError(f"no offer {offer_id}")
        return rec

    def _open_offer(self, offer_id: str) -> OfferRecord:
        """An offer the person has not acted on yet (new, or snoozed)."""
        rec = self._offer(offer_id)
        if rec.status not in ("new", "snoozed"):
            raise MarketError(f"offer {offer_id} is {rec.status}")
        return rec

    def decline(self, offer_id: str) -> dict[str, Any]:
        self._open_offer(offer_id)
        self.store.set_offer_status(offer_id, "declined")
        return {"offer": offer_id, "status": "declined"}

    def snooze(self, offer_id: str, seconds: int = 24 * 3600) -> dict[str, Any]:
        self._open_offer(offer_id)
        if not 0 < int(seconds) <= 90 * 24 * 3600:
            raise MarketError("snooze for between 1 second and 90 days")
        until = self.now() + int(seconds)
        self.store.set_offer_status(offer_id, "snoozed", snooze_until=until)
        return {"offer": offer_id, "status": "snoozed", "snooze_until": until}

    def accept(self, offer_id: str, fields: list[str], purpose: str | None = None,
               duration_days: int | None = None) -> dict[str, Any]:
        """Record what the person accepted, under a fresh agreement id; nothing is signed or sent
        until they confirm on the box (protocol v2: the agreement's iat is the confirmation)."""
        offer = self._open_offer(offer_id)
        self._refuse_blocked(offer.vendor, "its offers cannot be accepted")
        if int(offer.body.get("valid_until", 0)) < self.now():
            raise MarketError(f"offer {offer_id} has expired")
        intent = self._intent(offer.intent_id)
        response = offer.body.get("terms_response", {})
        if response.get("decision") != "accept" or \
                (response.get("id"), response.get("sha256")) != \
                (intent.body["terms"]["id"], intent.body["terms"]["sha256"]):
            raise MarketError(f"{offer.vendor} did not accept your terms in this offer")
        vendor = self.store.get_vendor(offer.vendor)
        if vendor is None or vendor.did != offer.vendor_did:
            raise MarketError(f"vendor {offer.vendor}'s key is not the one pinned; check `vrmbox vendors`")
        profile = {n: f.value for n, f in self.store.get_profile().items()}
        try:
            agr.disclosure_values(fields, profile)  # fail now, not after the vendor countersigned
        except agr.AgreementError as exc:
            raise MarketError(str(exc)) from exc
        terms = parse_dataclass(Terms, intent.body["terms"])
        try:
            body = agr.agreement_body(
                # the vendor's own id for it (the box's handle may differ: store.add_offer)
                intent_id=intent.intent_id, offer_id=unverified_payload(offer.token).get("id", offer_id),
                offer_token=offer.token,
                vendor=offer.vendor, vendor_did=offer.vendor_did, terms=terms, fields=list(fields),
                purpose=purpose or self.settings.default_purpose,
                duration_days=int(duration_days or self.settings.default_duration_days))
        except ProtocolError as exc:
            raise MarketError(f"agreement not valid: {exc.detail or exc.reason}") from exc
        except agr.AgreementError as exc:
            raise MarketError(str(exc)) from exc
        agreement_id = new_id()   # becomes the agreement message's id when it is signed
        with self.store.transaction():
            self.store.set_offer_status(offer_id, "accepted")
            self.store.add_agreement(agreement_id, intent.intent_id, offer_id, offer.vendor,
                                     "", body, status="pending_confirmation")
        return {"agreement": agreement_id, "status": "pending_confirmation", **body}

    def _enc_key(self, vendor_slug: str, vendor_did: str | None) -> EncryptionKey:
        """The vendor's encryption key, only from the profile of the key the person agreed with."""
        vendor = self.store.get_vendor(vendor_slug)
        if vendor is None or vendor.did != vendor_did:
            raise MarketError(f"vendor {vendor_slug}'s pinned key is not the one in the agreement")
        return parse_dataclass(EncryptionKey, vendor.profile["enc_key"])

    def confirm(self, agreement_id: str, source: str) -> dict[str, Any]:
        """The person confirms on the box (a button press) — or from the phone, if they allowed it.
        Only now is the agreement signed (iat = now) and sent, sealed to the vendor."""
        if source not in CONFIRM_SOURCES:
            raise MarketError(f"unknown confirmation source {source!r}")
        if source == "companion" and not self.store.get_setting(COMPANION_ONLY_SETTING, False):
            raise MarketError("releasing data needs a press of the button on the box "
                              "(or turn on companion-only confirmation in settings)")
        rec = self.store.get_agreement(agreement_id)
        if rec is None:
            raise MarketError(f"no agreement {agreement_id}")
        if rec.status != "pending_confirmation":
            raise MarketError(f"agreement {agreement_id} is {rec.status}")
        self._refuse_blocked(rec.vendor, "nothing is sent to it (cancel the agreement on the vendors page)")
        offer = self.store.get_offer(rec.offer_id)
        now = self.now()
        if rec.created_at + agr.PENDING_TTL <= now or \
                (offer and int(offer.body.get("valid_until", 0)) <= now):
            self.cancel(agreement_id)  # nothing was sent; the person can accept a fresh offer
            raise MarketError(f"agreement {agreement_id} (or its offer) expired before it was "
                              "confirmed; nothing was sent")
        enc_key = self._enc_key(rec.vendor, rec.body.get("vendor_did"))
        intent = self._intent(rec.intent_id)
        profile = {n: f.value for n, f in self.store.get_profile().items()}
        try:   # the values the person consented to are the ones they had at the press
            consented = agr.disclosure_values(rec.body["fields"], profile)
        except agr.AgreementError as exc:
            raise MarketError(str(exc)) from exc
        try:
            signed = agr.sign_agreement(intent.identity, agreement_id=agreement_id, body=rec.body,
                                        enc_key=enc_key, now=now)
        except ProtocolError as exc:
            raise MarketError(f"agreement not valid: {exc.detail or exc.reason}") from exc
        with self.store.transaction():
            self.store.set_agreement_token(agreement_id, signed.token)
            self.store.set_setting(CONSENTED_PREFIX + agreement_id, consented)
            self.store.set_agreement_status(agreement_id, "confirmed")
            self.store.queue_outbox(topics.agreements(rec.vendor), signed.sealed,
                                    expires_at=unverified_payload(signed.token)["exp"])
        return {"agreement": agreement_id, "status": "confirmed", "source": source}

    def cancel(self, agreement_id: str) -> dict[str, Any]:
        """Drop an agreement the person has not confirmed; nothing was sent."""
        rec = self.store.get_agreement(agreement_id)
        if rec is None or rec.status != "pending_confirmation":
            raise MarketError(f"no agreement {agreement_id} waiting for confirmation")
        with self.store.transaction():
            self.store.set_agreement_status(agreement_id, "ended")
            self.store.set_offer_status(rec.offer_id, "new")
        return {"agreement": agreement_id, "status": "ended"}

    def countersigned(self, agreement_id: str, countersignature_token: str) -> dict[str, Any]:
        """The vendor signed too: store it and, only now, send the agreed fields encrypted."""
        rec = self.store.get_agreement(agreement_id)
        if rec is None:
            raise MarketError(f"no agreement {agreement_id}")
        intent = self._intent(rec.intent_id)
        # Only ever encrypt to the key the person agreed with, whatever was pinned since.
        enc_key = self._enc_key(rec.vendor, rec.body.get("vendor_did"))
        values = self.store.get_setting(CONSENTED_PREFIX + agreement_id)
        if not isinstance(values, dict) or list(values) != list(rec.body["fields"]):
            # confirmed before the values were kept (an older box): the profile as it is now
            profile = {n: f.value for n, f in self.store.get_profile().items()}
            try:
                values = agr.disclosure_values(rec.body["fields"], profile)
            except agr.AgreementError as exc:  # the person deleted a field after agreeing
                raise MarketError(str(exc)) from exc
        try:
            token = agr.build_disclosure(intent.identity, agreement_id=agreement_id,
                                         intent_id=rec.intent_id, values=values, enc_key=enc_key,
                                         now=self.now())
        except agr.AgreementError as exc:
            raise MarketError(str(exc)) from exc
        with self.store.transaction():
            self.store.add_countersignature(agreement_id, countersignature_token)
            self.store.add_disclosure(agreement_id, list(values), token)
            self.store.set_setting(CONSENTED_PREFIX + agreement_id, {})   # sent: keep no copy
            self.store.queue_outbox(topics.disclosures(rec.vendor), token)
        return {"agreement": agreement_id, "status": "active", "fields": list(values)}

    def revoke(self, agreement_id: str, reason: str | None = None) -> dict[str, Any]:
        rec = self.store.get_agreement(agreement_id)
        if rec is None:
            raise MarketError(f"no agreement {agreement_id}")
        if rec.status in ("revoked", "ended"):
            raise MarketError(f"agreement {agreement_id} is already {rec.status}")
        if rec.status == "pending_confirmation":
            return self.cancel(agreement_id)
        intent = self._intent(rec.intent_id)
        vendor = self.store.get_vendor(rec.vendor)
        # Sealed to the key of the vendor's pinned profile (the revocation must reach it even if
        # its key changed since; the reason is readable by it alone).
        if vendor is None:
            raise MarketError(f"vendor {rec.vendor} is not known any more; cannot send the revocation")
        enc_key = parse_dataclass(EncryptionKey, vendor.profile["enc_key"])
        _, token, sealed = agr.build_revocation(intent.identity, agreement_id=agreement_id,
                                                intent_id=rec.intent_id, reason=reason, now=self.now(),
                                                enc_key=enc_key)
        with self.store.transaction():
            self.store.add_revocation(agreement_id, token, delete=True)
            self.store.queue_outbox(topics.revocations(rec.vendor), sealed,
                                    expires_at=unverified_payload(token)["exp"])
        return {"agreement": agreement_id, "status": "revoked", "acknowledged": False}

    def waiting_for_answer(self) -> list[tuple[str, str]]:
        """(kind, agreement) of what waits for the vendor's answer: a confirmed agreement its
        countersignature, a revocation its acknowledgement (clear columns only)."""
        out = []
        for s in self.store.agreement_states():
            if s.revoked and not s.acknowledged:
                out.append(("revocation", s.agreement_id))
            elif s.status == "confirmed" and not s.revoked:
                out.append(("agreement", s.agreement_id))
        return out

    def message_again(self, kind: str, agreement_id: str) -> tuple[str, str, int] | None:
        """(topic, sealed token, exp) of a message waiting for its answer, sealed afresh to the
        vendor's key; None when it no longer waits or cannot be sealed. The signed token is the
        one sent before: the vendor knows it and answers it again."""
        rec = self.store.get_agreement(agreement_id)
        if rec is None:
            return None
        token = rec.revocation_token if kind == "revocation" else rec.token
        waits = (rec.revocation_ack is None) if kind == "revocation" else (rec.status == "confirmed")
        vendor = self.store.get_vendor(rec.vendor)
        if not token or not waits or vendor is None or not vendor.profile.get("enc_key"):
            return None
        try:
            sealed = seal(token, parse_dataclass(EncryptionKey, vendor.profile["enc_key"]))
        except (ProtocolError, ValueError) as exc:
            log.warning("cannot seal the %s for %s again: %s", kind, rec.vendor, exc)
            return None
        topic = topics.revocations(rec.vendor) if kind == "revocation" else topics.agreements(rec.vendor)
        return topic, sealed, int(unverified_payload(token)["exp"])

    def list_agreements(self) -> list[dict[str, Any]]:
        """`overdue`: confirmed and sent, but the vendor has not countersigned in time (no data
        was released; the person may cancel by revoking)."""
        out, now = [], self.now()
        for a in self.store.list_agreements():
            out.append({"agreement": a.agreement_id, "intent": a.intent_id, "offer": a.offer_id,
                        "vendor": a.vendor, "status": a.status, "fields": a.body.get("fields"),
                        "purpose": a.body.get("purpose"), "duration_days": a.body.get("duration_days"),
                        "countersigned": a.countersignature is not None,
                        "overdue": a.status == "confirmed"
                        and now - (a.updated_at or a.created_at) > self.settings.countersign_timeout_s,
                        "revocation": ("acknowledged" if a.revocation_ack else "pending")
                        if a.revocation_token else None,
                        "created_at": a.created_at})
        return out

    def list_vendors(self) -> list[dict[str, Any]]:
        counts: dict[str, dict[str, int]] = {}
        for reason, vendor, n in self.store.rejection_counts():
            counts.setdefault(vendor or "", {})[reason] = n
        return [{"vendor": v.vendor, "did": v.did, "name": v.profile.get("name"), "status": v.status,
                 "key_changed": v.pending_did is not None, "pending_did": v.pending_did,
                 "rejections": counts.get(v.vendor, {})} for v in self.store.list_vendors()]

    def accept_vendor_key(self, vendor: str, did: str) -> dict[str, Any]:
        try:
            self.store.accept_vendor_key(vendor, did)
        except StoreError as exc:
            raise MarketError(str(exc)) from exc
        return {"vendor": vendor, "did": did}

    def set_vendor_status(self, vendor: str, status: str) -> dict[str, Any]:
        try:
            self.store.set_vendor_status(vendor, status)
        except StoreError as exc:
            raise MarketError(str(exc)) from exc
        self._status_changes += 1
        self._boards.clear()
        waiting = [a.agreement_id for a in self.store.agreement_states()
                   if a.vendor == vendor and a.status == "pending_confirmation"]
        return {"vendor": vendor, "status": status, "pending_agreements": waiting}

    def rejections(self) -> list[dict[str, Any]]:
        return [{"reason": r, "vendor": v, "count": n} for r, v, n in self.store.rejection_counts()]

    def set_setting(self, key: str, value: Any) -> dict[str, Any]:
        if key != COMPANION_ONLY_SETTING or not isinstance(value, bool):
            raise MarketError(f"setting {key!r} = {value!r} is not a known setting/value")
        self.store.set_setting(key, value)
        return {key: value}

    # ---------------------------------------------------------------- what the box's face shows
    def presets(self) -> list[dict[str, Any]]:
        return [{"name": p["name"], "category": p["category"], "description": p.get("description")}
                for p in self.settings.presets]

    def settings_view(self) -> dict[str, Any]:
        return {COMPANION_ONLY_SETTING: bool(self.store.get_setting(COMPANION_ONLY_SETTING, False))}

    def accept_preview(self, offer_id: str) -> dict[str, Any]:
        """What accepting from the box would send: the default fields the profile has."""
        offer = self._open_offer(offer_id)
        self._refuse_blocked(offer.vendor, "its offers cannot be accepted")
        profile = self.store.get_profile()
        fields = [f for f in self.settings.default_fields if f in profile]
        return {"offer": offer_id, "vendor": offer.vendor, "fields": fields,
                "missing": [f for f in self.settings.default_fields if f not in profile],
                "purpose": self.settings.default_purpose,
                "duration_days": self.settings.default_duration_days}
