"""Incremental ranking of one intent's open offers: a new offer is scored once and placed.

Why: the intake used to re-rank the whole intent for every offer to learn the new offer's score
and position. Scores are set-relative (price, delivery and numeric preferences are normalised
over the eligible set, see ranking.py), so a new offer is scored alone only when it moves none
of those ranges; when it does, the set is re-scored once (for random offers the ranges move
O(log n) times). Eligibility changes with time only through not_expired and min_validity_s, so
the board knows the first moment one of its eligible offers lapses (and any outside moment the
caller names, e.g. a snooze ending) and re-ranks then. Rules, context or a removed offer:
re-rank. `ranking(now)` is, exactly, `ranking.rank` over the same offers (order, scores,
explanations): tests/test_ranking_incremental.py checks it on random histories.

Pure: no I/O, no clock (`now` is passed); the caller (Market) decides when a board is stale.
"""
from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable

from .ranking import Range, Ranked, _Scale, parts, scale_of
from .rules import CompiledRules, Context, OfferFacts

log = logging.getLogger(__name__)

_NEVER = math.inf


@dataclass(frozen=True)
class Placement:
    """Where an offer stands: `position` counts from 1 among the eligible offers (None if it is
    not eligible); `rescored` says whether placing it re-scored the whole set."""

    offer_id: str
    eligible: bool
    score: float
    position: int | None
    rescored: bool


def _widen(rng: Range | None, x: float | None) -> Range | None:
    """The range of a set after adding x (as ranking._range would compute it)."""
    if x is None or not math.isfinite(x):
        return rng
    if rng is None:
        return (x, x)
    lo, hi = rng
    return (min(lo, x), max(hi, x))


def _widened(rules: CompiledRules, scale: _Scale, f: OfferFacts) -> _Scale:
    price = scale.price
    old = price.get(f.currency)
    new = _widen(old, f.price)
    if new != old:
        price = {**price, f.currency: new}   # type: ignore[dict-item]
    delivery = _widen(scale.delivery, float(f.delivery_days) if f.delivery_days is not None else None)
    prefs = tuple(_widen(rng, p.number(f)) if p.prefer != "equals" else None
                  for p, rng in zip(rules.preferences, scale.prefs))
    return _Scale(price, delivery, prefs)


class Leaderboard:
    """The ranking of one set of offers under fixed rules and context, kept current as offers
    arrive. Not thread-safe: one owner (the market's worker thread)."""

    def __init__(self, rules: CompiledRules, ctx: Context, facts: Iterable[OfferFacts], now: int,
                 wake_at: float | None = None) -> None:
        """`wake_at`: a moment from outside after which the set itself may differ (the caller
        re-builds then; `stale` reports it)."""
        self.rules = rules
        self.ctx = ctx
        self.wake_at = _NEVER if wake_at is None else wake_at
        self.rescores = 0
        self._facts: dict[str, OfferFacts] = {}
        for f in facts:
            if f.offer_id in self._facts:
                raise ValueError(f"offer {f.offer_id} given twice")
            self._facts[f.offer_id] = f
        self._rebuild(now)

    def __len__(self) -> int:
        return len(self._facts)

    def __contains__(self, offer_id: object) -> bool:
        return offer_id in self._facts

    # ---------------------------------------------------------------- state
    def _rebuild(self, now: int) -> None:
        rules, ctx = self.rules, self.ctx
        offers = list(self._facts.values())
        passes = rules.passes
        ok = [passes(f, ctx, now) for f in offers]
        eligible = [f for f, good in zip(offers, ok) if good]
        self._scale = scale_of(rules, offers, eligible)
        self._terms = parts(rules, ctx, self._scale)
        self._fns = tuple(fn for _, fn in self._terms)
        self._eligible: dict[str, bool] = {}
        self._scores: dict[str, float] = {}
        good: list[tuple[Any, ...]] = []
        bad: list[tuple[Any, ...]] = []
        lapses = _NEVER
        for f, is_ok in zip(offers, ok):
            score = self._score(f)
            self._eligible[f.offer_id] = is_ok
            self._scores[f.offer_id] = score
            (good if is_ok else bad).append(self._key(f, score))
            if is_ok:
                lapses = min(lapses, rules.stays_eligible_until(f))
        good.sort()
        bad.sort()
        self._good, self._bad = good, bad
        self._valid_from = now   # the latest moment any eligibility here was decided
        self._lapses_at = lapses
        self.rescores += 1

    def _rescore(self, scale: _Scale) -> None:
        """A range moved, eligibility did not: re-score and re-sort every offer once."""
        self._scale = scale
        self._terms = parts(self.rules, self.ctx, scale)
        self._fns = fns = tuple(fn for _, fn in self._terms)
        eligible, scores = self._eligible, self._scores
        good: list[tuple[Any, ...]] = []
        bad: list[tuple[Any, ...]] = []
        for oid, f in self._facts.items():
            score = scores[oid] = sum([fn(f) for fn in fns], 0.0)
            (good if eligible[oid] else bad).append((-score, f.price, f.received_at, oid))
        good.sort()
        bad.sort()
        self._good, self._bad = good, bad
        self.rescores += 1

    def _score(self, f: OfferFacts) -> float:
        return sum([fn(f) for fn in self._fns], 0.0)

    @staticmethod
    def _key(f: OfferFacts, score: float) -> tuple[Any, ...]:
        return (-score, f.price, f.received_at, f.offer_id)

    def stale(self, now: int) -> bool:
        """True when `now` may see other eligibility than the board holds (an offer lapsed, the
        clock went back before a verdict the board holds, or the outside `wake_at` passed)."""
        return now < self._valid_from or now >= self._lapses_at or now >= self.wake_at

    def _current(self, now: int) -> None:
        if now < self._valid_from or now >= self._lapses_at:
            self._rebuild(now)

    # ---------------------------------------------------------------- changes
    def add(self, f: OfferFacts, now: int) -> Placement:
        """Score the new offer once and place it; re-score the set only if it moves a range."""
        if f.offer_id in self._facts:
            raise ValueError(f"offer {f.offer_id} is already on the board")
        self._facts[f.offer_id] = f
        if now < self._valid_from or now >= self._lapses_at:
            self._rebuild(now)
            return self._placement(f, rescored=True)
        rules = self.rules
        is_ok = rules.passes(f, self.ctx, now)
        self._valid_from = now          # f's verdict holds from now on (an offer lapses, never revives)
        if is_ok and not self._good:
            # the first eligible offer: the reference set is no longer "all offers" but f alone
            self._rebuild(now)
            return self._placement(f, rescored=True)
        if is_ok or not self._good:     # f joins the reference set (eligible, or none is)
            scale = _widened(rules, self._scale, f)
            if scale != self._scale:
                self._eligible[f.offer_id] = is_ok
                if is_ok:
                    self._lapses_at = min(self._lapses_at, rules.stays_eligible_until(f))
                self._rescore(scale)
                return self._placement(f, rescored=True)
        score = self._score(f)
        self._eligible[f.offer_id] = is_ok
        self._scores[f.offer_id] = score
        bisect.insort(self._good if is_ok else self._bad, self._key(f, score))
        if is_ok:
            self._lapses_at = min(self._lapses_at, rules.stays_eligible_until(f))
        return self._placement(f, rescored=False)

    def remove(self, offer_id: str, now: int) -> None:
        """An offer left the set (declined, accepted, snoozed): re-rank once."""
        if self._facts.pop(offer_id, None) is not None:
            self._rebuild(now)

    def set_rules(self, rules: CompiledRules, now: int) -> None:
        self.rules = rules
        self._rebuild(now)

    def set_context(self, ctx: Context, now: int) -> None:
        self.ctx = ctx
        self._rebuild(now)

    # ---------------------------------------------------------------- reading
    def _placement(self, f: OfferFacts, rescored: bool) -> Placement:
        is_ok = self._eligible[f.offer_id]
        score = self._scores[f.offer_id]
        position = bisect.bisect_left(self._good, self._key(f, score)) + 1 if is_ok else None
        return Placement(f.offer_id, is_ok, score, position, rescored)

    def placement(self, offer_id: str, now: int) -> Placement:
        self._current(now)
        return self._placement(self._facts[offer_id], rescored=False)

    def ranking(self, now: int) -> list[Ranked]:
        """The whole ranking at `now`: what `ranking.rank` gives for these offers (explanations
        built on first use, with the reasons as of `now`)."""
        self._current(now)
        why = (self.rules, self.ctx, now, self._terms)
        out: list[Ranked] = []
        for keys in (self._good, self._bad):    # kept sorted by ranking's key
            out += [Ranked(k[3], self._eligible[k[3]], self._scores[k[3]], facts=self._facts[k[3]],
                           why=why) for k in keys]
        return out
