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
from dataclasses import dataclass
from typing import Any, Iterable

from .rules import CompiledRules, Context, OfferFacts

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


@dataclass(frozen=True)
class Ranked:
    offer_id: str
    eligible: bool
    score: float
    explanation: Explanation

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


def _closeness(x: float, rng: Range | None, high: bool) -> float:
    """0..1: how close x is to the best end of the range (1.0 when the range is a single point)."""
    if rng is None or not math.isfinite(x):
        return 0.0
    lo, hi = rng
    if hi <= lo:
        return 1.0 if (x >= lo if high else x <= lo) else 0.0
    t = (x - lo) / (hi - lo) if high else (hi - x) / (hi - lo)
    return min(1.0, max(0.0, t))


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


def _contributions(rules: CompiledRules, f: OfferFacts, ctx: Context,
                   scale: _Scale) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    if rules.w_price:
        ceiling = _ceiling(rules, f, ctx)
        if ceiling is not None:
            p = (1.0 if f.price <= 0 else 0.0) if ceiling <= 0 else max(0.0, min(1.0, 1 - f.price / ceiling))
        else:
            p = _closeness(f.price, scale.price.get(f.currency), high=False)
        out.append(("price", rules.w_price * p))
    if rules.w_known_supplier:
        out.append(("known_supplier", rules.w_known_supplier if f.vendor in ctx.suppliers else 0.0))
    if rules.w_reputation:
        rep = ctx.reputation.get(f.vendor, 0.0)
        rep = max(-1.0, min(1.0, float(rep))) if isinstance(rep, (int, float)) and math.isfinite(rep) else 0.0
        out.append(("reputation", rules.w_reputation * rep))
    if rules.w_delivery:
        d = 0.0 if f.delivery_days is None else _closeness(float(f.delivery_days), scale.delivery, high=False)
        out.append(("delivery", rules.w_delivery * d))
    brand = f.brand.casefold() if isinstance(f.brand, str) else None
    if rules.w_brands_liked and rules.brands_liked:
        out.append(("brands_liked", rules.w_brands_liked if brand in rules.brands_liked else 0.0))
    if rules.w_brands_disliked and rules.brands_disliked:
        out.append(("brands_disliked", -rules.w_brands_disliked if brand in rules.brands_disliked else 0.0))
    for pref, rng in zip(rules.preferences, scale.prefs):
        if not pref.weight:
            continue
        if pref.prefer == "equals":
            v = 1.0 if pref.matches(f) else 0.0
        else:
            x = pref.number(f)
            v = 0.0 if x is None else _closeness(x, rng, high=pref.prefer == "high")
        out.append((pref.name, pref.weight * v))
    return out


def _sort_key(r: Ranked, f: OfferFacts) -> tuple[Any, ...]:
    return (-r.score, f.price, f.received_at, f.offer_id)


def rank(rules: CompiledRules, facts: Iterable[OfferFacts], ctx: Context, now: int) -> list[Ranked]:
    """Eligible offers first, best score first (ties: lower price, earlier received, offer id);
    then the ineligible ones in the same order. Offer ids are expected to be unique."""
    offers = list(facts)
    checks = [rules.check(f, ctx, now) for f in offers]
    eligible = [f for f, (_, failed) in zip(offers, checks) if not failed]
    scale = _scale(rules, eligible or offers)
    good: list[tuple[Ranked, OfferFacts]] = []
    bad: list[tuple[Ranked, OfferFacts]] = []
    for f, (passed, failed) in zip(offers, checks):
        contribs = tuple(_contributions(rules, f, ctx, scale))
        score = sum((v for _, v in contribs), 0.0)
        r = Ranked(f.offer_id, not failed, score, Explanation(passed, failed, contribs, score))
        (bad if failed else good).append((r, f))
    good.sort(key=lambda rf: _sort_key(*rf))
    bad.sort(key=lambda rf: _sort_key(*rf))
    return [r for r, _ in good] + [r for r, _ in bad]


def evaluate(rules: CompiledRules, facts: OfferFacts, ctx: Context, now: int) -> Ranked:
    """One offer on its own (set-relative parts see a set of one: see module docstring)."""
    return rank(rules, [facts], ctx, now)[0]
