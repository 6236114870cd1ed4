"""Rank offers by the person's compiled rules, with an explanation for every verdict.

Why explanations: the box acts for the person, so each offer carries which filters it passed,
which it failed and why ("max_price: 950 EUR > 800 EUR"), and how much each preference added to
its score; the contributions always sum to the score. Pure: no I/O, no clock (`now` is passed).

Normalisation (docs/rules.md has the details): price against the max_price ceiling (or the
context budget) when one applies in the offer's currency, else over the offers of that currency
in the set; delivery and numeric attribute preferences over the set. "The set" is the eligible
offers being ranked (all of them if none is eligible), so an ineligible offer cannot shift the
scores of the others. `evaluate` ranks a set of one.
"""
from __future__ import annotations

import logging
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .rules import AttributePreference, CompiledRules, Context, OfferFacts

log = logging.getLogger(__name__)

Range = tuple[float, float]


@dataclass(frozen=True)
class Explanation:
    passed: tuple[str, ...]
    failed: tuple[str, ...]
    contributions: tuple[tuple[str, float], ...]
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"passed": list(self.passed), "failed": list(self.failed),
                "contributions": {name: value for name, value in self.contributions},
                "score": self.score}


class Ranked:
    """One offer's verdict. Immutable; the explanation is built when first asked for (a rank of
    100k offers shows a few), from the same compiled parts that made the score, so it is exactly
    what building it eagerly would give."""

    __slots__ = ("offer_id", "eligible", "score", "_explanation", "_facts", "_why")

    def __init__(self, offer_id: str, eligible: bool, score: float,
                 explanation: Explanation | None = None, facts: OfferFacts | None = None,
                 why: tuple[Any, ...] | None = None) -> None:
        """Either the `explanation`, or the offer's `facts` and `why` = (rules, ctx, now, parts)
        to build it from when asked."""
        if explanation is None and (facts is None or why is None):
            raise TypeError("Ranked needs an explanation or what to build it from")
        set_ = object.__setattr__
        set_(self, "offer_id", offer_id)
        set_(self, "eligible", eligible)
        set_(self, "score", score)
        set_(self, "_explanation", explanation)
        set_(self, "_facts", facts)
        set_(self, "_why", why)

    @property
    def explanation(self) -> Explanation:
        if self._explanation is None:
            rules, ctx, now, terms = self._why                          # type: ignore[misc]
            object.__setattr__(self, "_explanation",
                               explain(rules, self._facts, ctx, now, terms, self.score))
            object.__setattr__(self, "_why", None)
        return self._explanation                                        # type: ignore[return-value]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Ranked is immutable (cannot set {name})")

    def _key(self) -> tuple[Any, ...]:
        return (self.offer_id, self.eligible, self.score, self.explanation)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ranked) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"Ranked(offer_id={self.offer_id!r}, eligible={self.eligible!r}, "
                f"score={self.score!r}, explanation={self.explanation!r})")

    def to_dict(self) -> dict[str, Any]:
        return {"offer_id": self.offer_id, "eligible": self.eligible, "score": self.score,
                "explanation": self.explanation.to_dict()}


@dataclass(frozen=True)
class _Scale:
    """Ranges over the reference set: price per currency, delivery, each numeric preference."""

    price: dict[str, Range]
    delivery: Range | None
    prefs: tuple[Range | None, ...]


def _range(values: Iterable[float | None]) -> Range | None:
    vs = [v for v in values if v is not None and math.isfinite(v)]
    return (min(vs), max(vs)) if vs else None


def _scale(rules: CompiledRules, pool: list[OfferFacts]) -> _Scale:
    by_currency: dict[str, list[float]] = {}
    for f in pool:
        by_currency.setdefault(f.currency, []).append(f.price)
    price = {c: r for c, vs in by_currency.items() if (r := _range(vs)) is not None}
    delivery = _range(float(f.delivery_days) if f.delivery_days is not None else None for f in pool)
    prefs = tuple(_range(p.number(f) for f in pool) if p.prefer != "equals" else None
                  for p in rules.preferences)
    return _Scale(price, delivery, prefs)


def _ceiling(rules: CompiledRules, f: OfferFacts, ctx: Context) -> float | None:
    limits = [m.amount for m in (rules.max_price, ctx.budget) if m is not None and m.currency == f.currency]
    return min(limits) if limits else None


Part = tuple[str, Callable[[OfferFacts], float]]


def parts(rules: CompiledRules, ctx: Context, scale: _Scale) -> tuple[Part, ...]:
    """The score's terms for one (rules, context, scale), each a closure over what it needs.

    The one formula of every contribution: scores and explanations both come from these, so an
    explanation's contributions always sum to exactly the score. Per-vendor and per-currency
    values (reputation, known supplier, price ceiling) are computed once per vendor/currency."""
    out: list[Part] = []
    if rules.w_price:
        w_price = rules.w_price
        ceilings: dict[str, float | None] = {}
        price_ranges = scale.price
        closers: dict[str, Callable[[float], float]] = {}

        def price(f: OfferFacts) -> float:
            c = f.currency
            if c in ceilings:
                ceiling = ceilings[c]
            else:
                ceiling = ceilings[c] = _ceiling(rules, f, ctx)
            if ceiling is not None:
                p = (1.0 if f.price <= 0 else 0.0) if ceiling <= 0 else max(0.0, min(1.0, 1 - f.price / ceiling))
            else:
                close = closers.get(c)
                if close is None:
                    close = closers[c] = _closer(price_ranges.get(c), high=False)
                p = close(f.price)
            return w_price * p
        out.append(("price", price))
    if rules.w_known_supplier:
        w_known, suppliers = rules.w_known_supplier, ctx.suppliers
        out.append(("known_supplier", lambda f: w_known if f.vendor in suppliers else 0.0))
    if rules.w_reputation:
        w_rep, reputation = rules.w_reputation, ctx.reputation
        by_vendor: dict[str, float] = {}

        def reputation_part(f: OfferFacts) -> float:
            v = f.vendor
            if v not in by_vendor:
                rep = reputation.get(v, 0.0)
                rep = (max(-1.0, min(1.0, float(rep)))
                       if isinstance(rep, (int, float)) and math.isfinite(rep) else 0.0)
                by_vendor[v] = w_rep * rep
            return by_vendor[v]
        out.append(("reputation", reputation_part))
    if rules.w_delivery:
        w_delivery, close_delivery = rules.w_delivery, _closer(scale.delivery, high=False)
        out.append(("delivery", lambda f: w_delivery * (
            0.0 if f.delivery_days is None else close_delivery(float(f.delivery_days)))))
    if rules.w_brands_liked and rules.brands_liked:
        out.append(("brands_liked", _brand_part(rules.w_brands_liked, rules.brands_liked)))
    if rules.w_brands_disliked and rules.brands_disliked:
        out.append(("brands_disliked", _brand_part(-rules.w_brands_disliked, rules.brands_disliked)))
    for pref, rng in zip(rules.preferences, scale.prefs):
        if pref.weight:
            out.append((pref.name, _pref_part(pref, rng)))
    return tuple(out)


def _brand_part(value: float, brands: frozenset[str]) -> Callable[[OfferFacts], float]:
    """`value` when the offer's brand (casefolded) is one of `brands`, else 0; once per brand."""
    by_brand: dict[str | None, float] = {}

    def part(f: OfferFacts) -> float:
        b = f.brand
        if b is not None and type(b) is not str:      # never a dict key: computed each time
            return value if (b.casefold() if isinstance(b, str) else None) in brands else 0.0
        v = by_brand.get(b)
        if v is None:
            v = by_brand[b] = value if (b.casefold() if b is not None else None) in brands else 0.0
        return v
    return part


def _closer(rng: Range | None, high: bool) -> Callable[[float], float]:
    """0..1: how close x is to the best end of `rng` (1.0 when the range is a single point),
    with the range's bounds fixed once; clipped to 0..1 for values outside the range."""
    if rng is None:
        return lambda x: 0.0
    lo, hi = rng
    isfinite = math.isfinite
    if hi <= lo:
        if high:
            return lambda x: (1.0 if x >= lo else 0.0) if isfinite(x) else 0.0
        return lambda x: (1.0 if x <= lo else 0.0) if isfinite(x) else 0.0
    span = hi - lo

    def close(x: float) -> float:
        if not isfinite(x):
            return 0.0
        t = (x - lo) / span if high else (hi - x) / span
        t = t if t > 0.0 else 0.0          # max(0.0, t), NaN and -0.0 included
        return t if t < 1.0 else 1.0       # min(1.0, t)
    return close


def _pref_part(pref: AttributePreference, rng: Range | None) -> Callable[[OfferFacts], float]:
    weight = pref.weight
    if pref.prefer == "equals":
        matches = pref.matches
        return lambda f: weight * (1.0 if matches(f) else 0.0)
    close, get, number, isfinite = _closer(rng, pref.prefer == "high"), pref.get, pref.number, math.isfinite

    def part(f: OfferFacts) -> float:
        v = get(f)
        t = type(v)
        if t is float or t is int:          # what JSON gives: AttributePreference.number, inlined
            return weight * (close(float(v)) if isfinite(v) else 0.0)
        x = number(f)
        return weight * (0.0 if x is None else close(x))
    return part


def explain(rules: CompiledRules, f: OfferFacts, ctx: Context, now: int,
            terms: tuple[Part, ...], score: float) -> Explanation:
    """The full explanation of one offer's verdict (filters re-checked with their reasons)."""
    passed, failed = rules.check(f, ctx, now)
    return Explanation(passed, failed, tuple((name, fn(f)) for name, fn in terms), score)


def order(items: list[Ranked]) -> None:
    """Sort in place by (-score, price, received_at, offer_id), as stable sorts by one scalar
    each (least significant first; C-level getters): no key tuple per offer."""
    items.sort(key=_OFFER_ID)
    items.sort(key=_RECEIVED_AT)
    items.sort(key=_PRICE)
    items.sort(key=_SCORE, reverse=True)     # reverse keeps equal scores in their order


_OFFER_ID = operator.attrgetter("offer_id")
_RECEIVED_AT = operator.attrgetter("_facts.received_at")
_PRICE = operator.attrgetter("_facts.price")
_SCORE = operator.attrgetter("score")


def scale_of(rules: CompiledRules, offers: list[OfferFacts], eligible: list[OfferFacts]) -> _Scale:
    """The ranges over "the set": the eligible offers, or all of them if none is eligible."""
    return _scale(rules, eligible or offers)


def rank(rules: CompiledRules, facts: Iterable[OfferFacts], ctx: Context, now: int) -> list[Ranked]:
    """Eligible offers first, best score first (ties: lower price, earlier received, offer id);
    then the ineligible ones in the same order. Offer ids are expected to be unique."""
    offers = list(facts)
    passes = rules.passes
    ok = [passes(f, ctx, now) for f in offers]
    eligible = [f for f, good in zip(offers, ok) if good]
    terms = parts(rules, ctx, scale_of(rules, offers, eligible))
    fns = tuple(fn for _, fn in terms)
    why = (rules, ctx, now, terms)
    good: list[Ranked] = []
    bad: list[Ranked] = []
    for f, is_ok in zip(offers, ok):
        (good if is_ok else bad).append(
            Ranked(f.offer_id, is_ok, sum([fn(f) for fn in fns], 0.0), facts=f, why=why))
    order(good)
    order(bad)
    return good + bad


def evaluate(rules: CompiledRules, facts: OfferFacts, ctx: Context, now: int) -> Ranked:
    """One offer on its own (set-relative parts see a set of one: see module docstring)."""
    return rank(rules, [facts], ctx, now)[0]
