"""Ranking: a hand-computed example, explanations, deterministic ties, weights re-order, properties."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.ranking import Explanation, Ranked, evaluate, rank
from device.rules import Context, Money, OfferFacts, compile_rules

NOW = 1_800_000_000


def facts(offer_id: str, **kw) -> OfferFacts:
    base = dict(offer_id=offer_id, intent_id="intent-0001", vendor="acme", category="bikes",
                price=700.0, currency="EUR", valid_until=NOW + 86400, delivery_days=3,
                region="GB", terms_accepted=True, brand=None, item_name="Bike",
                attributes={}, received_at=NOW)
    base.update(kw)
    return OfferFacts(**base)


RULES = {
    "filters": {"max_price": {"amount": 1000, "currency": "EUR"}, "require_terms_accepted": True,
                "vendors_block": ["spammy"]},
    "weights": {"price": 1.0, "known_supplier": 0.5, "reputation": 0.5, "delivery": 0.3,
                "brands_liked": 0.4, "brands_disliked": 0.8,
                "attributes": [{"path": "item.attributes.gears", "prefer": "high", "weight": 0.2}]},
    "brands": {"liked": ["Brompton"], "disliked": ["Cheapo"]},
}
CTX = Context(suppliers=frozenset({"known"}), reputation={"acme": 0.5, "bikeco": -0.2})
OFFERS = [
    facts("A", vendor="acme", price=800.0, delivery_days=2, brand="BROMPTON", attributes={"gears": 6}),
    facts("B", vendor="bikeco", price=500.0, delivery_days=5, brand="Cheapo", attributes={"gears": 21}),
    facts("C", vendor="known", price=900.0, delivery_days=1, brand=None, attributes={"gears": 3}),
    facts("D", vendor="spammy", price=1200.0, delivery_days=1, brand="Brompton", attributes={"gears": 30}),
]
GEARS = "item.attributes.gears (high)"


def test_hand_computed_example():
    out = rank(compile_rules(RULES), OFFERS, CTX, NOW)
    assert [r.offer_id for r in out] == ["A", "C", "B", "D"]
    by = {r.offer_id: dict(r.explanation.contributions) for r in out}
    # price: 1 - price/1000 (the max_price ceiling); delivery over eligible 1..5 days (lower better);
    # gears over eligible 3..21 (higher better); reputation from the context; brands case-insensitive.
    assert by["A"] == pytest.approx({"price": 0.2, "known_supplier": 0.0, "reputation": 0.25,
                                     "delivery": 0.3 * 0.75, "brands_liked": 0.4,
                                     "brands_disliked": 0.0, GEARS: 0.2 * 3 / 18})
    assert by["B"] == pytest.approx({"price": 0.5, "known_supplier": 0.0, "reputation": -0.1,
                                     "delivery": 0.0, "brands_liked": 0.0,
                                     "brands_disliked": -0.8, GEARS: 0.2})
    assert by["C"] == pytest.approx({"price": 0.1, "known_supplier": 0.5, "reputation": 0.0,
                                     "delivery": 0.3, "brands_liked": 0.0,
                                     "brands_disliked": 0.0, GEARS: 0.0})
    scores = {r.offer_id: r.score for r in out}
    assert scores["A"] == pytest.approx(0.2 + 0.25 + 0.225 + 0.4 + 0.2 / 6)
    assert scores["B"] == pytest.approx(-0.2)
    assert scores["C"] == pytest.approx(0.9)
    # D is ineligible; its gears (30) and price (1200) are clipped to the eligible ranges.
    assert by["D"]["price"] == 0.0 and by["D"][GEARS] == pytest.approx(0.2)
    for r in out:
        assert sum(v for _, v in r.explanation.contributions) == r.score == r.explanation.score


def test_explanation_content():
    out = {r.offer_id: r for r in rank(compile_rules(RULES), OFFERS, CTX, NOW)}
    a, d = out["A"], out["D"]
    assert a.eligible and a.explanation.failed == ()
    assert a.explanation.passed == ("not_expired", "require_terms_accepted", "max_price", "vendors_block")
    assert not d.eligible
    assert d.explanation.failed == ("max_price: 1200 EUR > 1000 EUR", "vendors_block: spammy is blocked")
    assert d.explanation.passed == ("not_expired", "require_terms_accepted")
    doc = d.to_dict()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["offer_id"] == "D" and doc["eligible"] is False
    assert doc["explanation"]["failed"][0] == "max_price: 1200 EUR > 1000 EUR"
    assert set(doc["explanation"]["contributions"]) == {"price", "known_supplier", "reputation",
                                                        "delivery", "brands_liked",
                                                        "brands_disliked", GEARS}


def test_changing_weights_reorders():
    heavier_price = {**RULES, "weights": {**RULES["weights"], "price": 3.0, "brands_liked": 0,
                                           "brands_disliked": 0}}
    out = rank(compile_rules(heavier_price), OFFERS, CTX, NOW)
    assert [r.offer_id for r in out] == ["B", "A", "C", "D"]
    names = dict(out[0].explanation.contributions)
    assert "brands_liked" not in names and "brands_disliked" not in names   # weight 0: not shown
    supplier_first = {**RULES, "weights": {**RULES["weights"], "known_supplier": 5.0}}
    assert [r.offer_id for r in rank(compile_rules(supplier_first), OFFERS, CTX, NOW)][0] == "C"


def test_ties_are_deterministic():
    flat = compile_rules({"weights": {k: 0 for k in ("price", "known_supplier", "reputation",
                                                       "delivery", "brands_liked", "brands_disliked")}})
    offers = [facts("z", price=10.0, received_at=5), facts("y", price=10.0, received_at=5),
              facts("x", price=10.0, received_at=6), facts("w", price=9.0, received_at=9)]
    expected = ["w", "y", "z", "x"]         # lower price, then earlier received, then offer id
    assert [r.offer_id for r in rank(flat, offers, Context(), NOW)] == expected
    assert [r.offer_id for r in rank(flat, offers[::-1], Context(), NOW)] == expected
    assert all(r.score == 0.0 and r.explanation.contributions == () for r in rank(flat, offers, Context(), NOW))


def test_price_without_ceiling_is_relative_to_eligible_offers_of_the_currency():
    r = compile_rules({"filters": {"vendors_block": ["spammy"]},
                       "weights": {"price": 1.0, "known_supplier": 0, "reputation": 0, "delivery": 0}})
    offers = [facts("a", price=100.0), facts("b", price=200.0), facts("c", price=150.0),
              facts("g", price=999.0, currency="GBP")]
    price = {x.offer_id: x.score for x in rank(r, offers, Context(), NOW)}
    assert price == {"a": 1.0, "b": 0.0, "c": 0.5, "g": 1.0}
    # a cheap ineligible offer does not move the others
    spam = facts("s", price=1.0, vendor="spammy")
    again = {x.offer_id: x.score for x in rank(r, offers + [spam], Context(), NOW)}
    assert {k: again[k] for k in price} == price
    assert again["s"] == 1.0                                # clipped to the eligible range


def test_budget_is_a_ceiling_and_evaluate_matches_rank_with_a_ceiling():
    r = compile_rules({"weights": {"price": 1.0, "known_supplier": 0, "reputation": 0, "delivery": 0}})
    ctx = Context(budget=Money(400.0, "EUR"))
    one = evaluate(r, facts("a", price=100.0), ctx, NOW)
    assert one.score == pytest.approx(0.75) and one.eligible
    many = {x.offer_id: x.score for x in rank(r, [facts("a", price=100.0), facts("b", price=300.0)], ctx, NOW)}
    assert many["a"] == one.score and many["b"] == pytest.approx(0.25)


def test_evaluate_single_offer():
    r = compile_rules(RULES)
    one = evaluate(r, OFFERS[0], CTX, NOW)
    assert isinstance(one, Ranked) and isinstance(one.explanation, Explanation)
    assert one == rank(r, [OFFERS[0]], CTX, NOW)[0]
    assert dict(one.explanation.contributions)[GEARS] == 0.2     # a set of one: best of its set


def test_unknown_delivery_and_junk_reputation_count_zero():
    r = compile_rules({"weights": {"price": 0, "known_supplier": 0, "reputation": 1, "delivery": 1}})
    ctx = Context(reputation={"acme": float("nan"), "big": 7.0})
    out = {x.offer_id: dict(x.explanation.contributions)
           for x in rank(r, [facts("a", delivery_days=None), facts("b", vendor="big", delivery_days=4)], ctx, NOW)}
    assert out["a"] == {"reputation": 0.0, "delivery": 0.0}
    assert out["b"] == {"reputation": 1.0, "delivery": 1.0}


def test_equals_preference_and_negative_weight():
    r = compile_rules({"weights": {"price": 0, "known_supplier": 0, "reputation": 0, "delivery": 0,
                                   "attributes": [
                                       {"path": "item.attributes.colour", "prefer": "equals", "value": "red", "weight": 1},
                                       {"path": "item.attributes.weight_kg", "prefer": "low", "weight": 2},
                                       {"path": "item.attributes.colour", "prefer": "equals", "value": "pink", "weight": -1}]}})
    out = rank(r, [facts("a", attributes={"colour": "Red", "weight_kg": 12}),
                   facts("b", attributes={"colour": "pink", "weight_kg": 10}),
                   facts("c", attributes={"weight_kg": "heavy"})], Context(), NOW)
    got = {x.offer_id: dict(x.explanation.contributions) for x in out}
    assert got["a"] == {"item.attributes.colour = 'red'": 1.0, "item.attributes.weight_kg (low)": 0.0,
                        "item.attributes.colour = 'pink'": 0.0}
    assert got["b"] == {"item.attributes.colour = 'red'": 0.0, "item.attributes.weight_kg (low)": 2.0,
                        "item.attributes.colour = 'pink'": -1.0}
    assert got["c"] == {"item.attributes.colour = 'red'": 0.0, "item.attributes.weight_kg (low)": 0.0,
                        "item.attributes.colour = 'pink'": 0.0}
    assert [x.offer_id for x in out] == ["a", "b", "c"]


def test_empty_input():
    assert rank(compile_rules({}), [], Context(), NOW) == []


# ------------------------------------------------------------------------------ properties
_weights = st.fixed_dictionaries({k: st.floats(0, 10) for k in (
    "price", "known_supplier", "reputation", "delivery", "brands_liked", "brands_disliked")})
_filters = st.fixed_dictionaries({}, optional={
    "max_price": st.builds(lambda a, c: {"amount": a, "currency": c}, st.floats(0, 2000), st.sampled_from(["EUR", "GBP"])),
    "require_terms_accepted": st.booleans(),
    "vendors_block": st.lists(st.sampled_from(["acme", "bikeco", "known"]), max_size=2),
    "max_delivery_days": st.integers(0, 10),
    "attributes": st.lists(st.fixed_dictionaries({
        "path": st.just("item.attributes.gears"), "op": st.sampled_from(["lt", "ge", "exists"]),
        "value": st.integers(0, 30)}).map(lambda c: {**c, "value": bool(c["value"] % 2)} if c["op"] == "exists" else c),
        max_size=2),
})
_rules = st.builds(lambda w, f, gw: {"weights": {**w, "attributes": [
    {"path": "item.attributes.gears", "prefer": "high", "weight": gw}]}, "filters": f,
    "brands": {"liked": ["Brompton"], "disliked": ["cheapo"]}}, _weights, _filters, st.floats(-5, 5))
_gears = st.one_of(st.integers(0, 30), st.floats(-1e6, 1e6), st.just("many"), st.just(None))


@st.composite
def _offers(draw):
    n = draw(st.integers(0, 12))
    out = []
    for i in range(n):
        g = draw(_gears)
        out.append(facts(
            f"offer-{i}", vendor=draw(st.sampled_from(["acme", "bikeco", "known", "new"])),
            price=draw(st.floats(0, 1e7)), currency=draw(st.sampled_from(["EUR", "GBP"])),
            valid_until=NOW + draw(st.integers(-100, 100_000)),
            delivery_days=draw(st.one_of(st.none(), st.integers(0, 60))),
            terms_accepted=draw(st.booleans()),
            brand=draw(st.sampled_from([None, "Brompton", "CHEAPO", "other"])),
            attributes={} if g is None else {"gears": g},
            received_at=draw(st.integers(0, 5))))
    return out


_ctx = st.builds(lambda rep, b: Context(suppliers=frozenset({"known"}), reputation=rep, budget=b),
                 st.dictionaries(st.sampled_from(["acme", "bikeco", "new"]), st.floats(-1, 1)),
                 st.one_of(st.none(), st.builds(Money, st.floats(0, 1e7), st.sampled_from(["EUR", "GBP"]))))


@settings(max_examples=150, deadline=None)
@given(rules=_rules, offers=_offers(), ctx=_ctx, data=st.data())
def test_ranking_properties(rules, offers, ctx, data):
    compiled = compile_rules(rules)
    out = rank(compiled, offers, ctx, NOW)
    assert sorted(r.offer_id for r in out) == sorted(f.offer_id for f in offers)
    flags = [r.eligible for r in out]
    assert flags == sorted(flags, reverse=True)                      # eligible first
    for r in out:
        assert math.isfinite(r.score)
        assert r.eligible == (r.explanation.failed == ())
        assert sum(v for _, v in r.explanation.contributions) == r.score
    good = [r.score for r in out if r.eligible]
    assert good == sorted(good, reverse=True)
    shuffled = data.draw(st.permutations(offers))
    assert [r.to_dict() for r in rank(compiled, shuffled, ctx, NOW)] == [r.to_dict() for r in out]
