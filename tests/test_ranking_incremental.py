"""Incremental ranking (device/leaderboard.py) equals ranking from scratch, exactly.

Random histories of offers arriving, rules changing, offers leaving and coming back (status),
the context changing and time passing: after every step the board's ranking is compared with
`ranking.rank` over the same offers (order, scores, eligibility, explanations, compared with
==), and the placement reported for a new offer with its place in that full ranking. The full
rank itself is compared with a reference copy of the eager algorithm it replaced (reasons and
contributions built for every offer), so the fast paths cannot drift from today's semantics.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.leaderboard import Leaderboard
from device.ranking import Explanation, _scale, rank
from device.rules import CompiledRules, Context, Money, OfferFacts, compile_rules

NOW = 1_800_000_000


# ------------------------------------------------------------------------------ the reference
def _closeness(x, rng, high):
    """ranking._closeness as it was before the fast paths."""
    if rng is None or not math.isfinite(x):
        return 0.0
    lo, hi = rng
    if hi <= lo:
        return 1.0 if (x >= lo if high else x <= lo) else 0.0
    t = (x - lo) / (hi - lo) if high else (hi - x) / (hi - lo)
    return min(1.0, max(0.0, t))


def _reference_contributions(rules, f, ctx, scale):
    """ranking._contributions as it was before the fast paths (one eager list per offer)."""
    out = []
    if rules.w_price:
        limits = [m.amount for m in (rules.max_price, ctx.budget) if m is not None and m.currency == f.currency]
        ceiling = min(limits) if limits else None
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


def reference_rank(rules: CompiledRules, offers: list[OfferFacts], ctx: Context, now: int):
    """(offer id, eligible, score, Explanation) in the order the eager rank gave."""
    checks = [rules.check(f, ctx, now) for f in offers]
    eligible = [f for f, (_, failed) in zip(offers, checks) if not failed]
    scale = _scale(rules, eligible or offers)
    good, bad = [], []
    for f, (passed, failed) in zip(offers, checks):
        contribs = tuple(_reference_contributions(rules, f, ctx, scale))
        score = sum((v for _, v in contribs), 0.0)
        row = ((-score, f.price, f.received_at, f.offer_id),
               (f.offer_id, not failed, score, Explanation(passed, failed, contribs, score)))
        (bad if failed else good).append(row)
    good.sort(key=lambda r: r[0])
    bad.sort(key=lambda r: r[0])
    return [r for _, r in good] + [r for _, r in bad]


def _rows(ranked):
    return [(r.offer_id, r.eligible, r.score, r.explanation) for r in ranked]


# ------------------------------------------------------------------------------ strategies
_vendors = st.sampled_from(["acme", "bikeco", "known", "new", "spammy"])
_weights = st.fixed_dictionaries({k: st.sampled_from([0.0, 0.3, 1.0, 2.5]) for k in (
    "price", "known_supplier", "reputation", "delivery", "brands_liked", "brands_disliked")})
_filters = st.fixed_dictionaries({}, optional={
    "max_price": st.builds(lambda a, c: {"amount": a, "currency": c},
                           st.sampled_from([0.0, 300.0, 800.0, 1500.0, 5000.0]), st.sampled_from(["EUR", "GBP"])),
    "require_terms_accepted": st.booleans(),
    "vendors_block": st.lists(st.sampled_from(["spammy", "bikeco"]), max_size=2, unique=True),
    "max_delivery_days": st.integers(3, 12),
    "min_validity_s": st.sampled_from([0, 30, 120]),
    "currencies": st.lists(st.sampled_from(["EUR", "GBP"]), min_size=1, unique=True),
    "attributes": st.lists(st.fixed_dictionaries({
        "path": st.just("item.attributes.gears"), "op": st.sampled_from(["lt", "ge", "exists"]),
        "value": st.integers(0, 30)}).map(
            lambda c: {**c, "value": bool(c["value"] % 2)} if c["op"] == "exists" else c), max_size=1),
})
_prefs = st.lists(st.one_of(
    st.builds(lambda p, w: {"path": "item.attributes.gears", "prefer": p, "weight": w},
              st.sampled_from(["high", "low"]), st.sampled_from([-1.0, 0.5, 2.0])),
    st.builds(lambda v, w: {"path": "item.attributes.colour", "prefer": "equals", "value": v, "weight": w},
              st.sampled_from(["red", "blue"]), st.sampled_from([-0.5, 1.0]))), max_size=3)
_rules = st.builds(lambda w, f, prefs: {"weights": {**w, "attributes": prefs}, "filters": f,
                                        "brands": {"liked": ["Brompton"], "disliked": ["cheapo"]}},
                   _weights, _filters, _prefs)
_ctx = st.builds(lambda rep, b: Context(suppliers=frozenset({"known"}), reputation=rep, budget=b),
                 st.dictionaries(st.sampled_from(["acme", "bikeco", "new"]), st.sampled_from([-1.0, -0.2, 0.5, 1.0])),
                 st.one_of(st.none(), st.none(), st.none(),
                           st.builds(Money, st.sampled_from([200.0, 900.0, 5000.0]), st.sampled_from(["EUR", "GBP"]))))
_gears = st.one_of(st.integers(0, 30), st.floats(-50, 50, allow_nan=False), st.just("many"), st.none())


@st.composite
def _facts(draw, n: int, now: int = NOW) -> OfferFacts:
    gears = draw(_gears)
    attributes = {} if gears is None else {"gears": gears}
    if draw(st.booleans()):
        attributes["colour"] = draw(st.sampled_from(["red", "Blue", "green"]))
    return OfferFacts(
        offer_id=f"offer-{n:03d}", intent_id="intent-1", vendor=draw(_vendors), category="bikes",
        price=draw(st.one_of(st.sampled_from([0.0, 100.0, 500.0, 799.5, 1200.0]), st.floats(0, 2000))),
        currency=draw(st.sampled_from(["EUR", "EUR", "GBP"])),
        valid_until=now + draw(st.one_of(st.integers(1, 400), st.integers(-50, 4000))),
        delivery_days=draw(st.sampled_from([0, 1, 2, 3, 5, 8, 12, None])), region="GB",
        terms_accepted=draw(st.sampled_from([True, True, True, False])), brand=draw(st.sampled_from([None, "BROMPTON", "Cheapo", "x"])),
        item_name="Bike", attributes=attributes, received_at=draw(st.integers(0, 3)))


_step = st.one_of(
    st.tuples(st.just("add")),
    st.tuples(st.just("add")),
    st.tuples(st.just("add")),
    st.tuples(st.just("rules"), _rules),
    st.tuples(st.just("status"), st.integers(0, 10_000)),
    st.tuples(st.just("time"), st.sampled_from([1, 29, 31, 250, 1000, 3000, -5])),
    st.tuples(st.just("context"), _ctx),
)


# ------------------------------------------------------------------------------ properties
@settings(max_examples=200, deadline=None)
@given(rules=_rules, ctx=_ctx, steps=st.lists(_step, min_size=1, max_size=40), data=st.data())
def test_incremental_equals_rank_from_scratch(rules, ctx, steps, data):
    compiled, now = compile_rules(rules), NOW
    open_: dict[str, OfferFacts] = {}
    closed: dict[str, OfferFacts] = {}
    board = Leaderboard(compiled, ctx, [], now)
    made = 0
    for step in steps:
        if step[0] == "add":
            f = data.draw(_facts(made, now))
            made += 1
            open_[f.offer_id] = f
            placed = board.add(f, now)
            full = rank(compiled, list(open_.values()), ctx, now)
            mine = next(r for r in full if r.offer_id == f.offer_id)
            eligible_ids = [r.offer_id for r in full if r.eligible]
            assert (placed.eligible, placed.score) == (mine.eligible, mine.score)
            assert placed.position == (eligible_ids.index(f.offer_id) + 1 if mine.eligible else None)
        elif step[0] == "rules":
            compiled = compile_rules(step[1])
            board.set_rules(compiled, now)
        elif step[0] == "context":
            ctx = step[1]
            board.set_context(ctx, now)
        elif step[0] == "status":
            pool = sorted(open_) + sorted(closed)
            if not pool:
                continue
            oid = pool[step[1] % len(pool)]
            if oid in open_:                         # declined / accepted / snoozed: leaves
                closed[oid] = open_.pop(oid)
                board.remove(oid, now)
            else:                                    # cancelled / snooze over: back, unchanged
                open_[oid] = closed.pop(oid)
                board.add(open_[oid], now)
        else:
            now += step[1]
        full = rank(compiled, list(open_.values()), ctx, now)
        assert board.ranking(now) == full
        assert _rows(full) == reference_rank(compiled, list(open_.values()), ctx, now)
        for r in full:
            assert sum(v for _, v in r.explanation.contributions) == r.score == r.explanation.score


@settings(max_examples=300, deadline=None)
@given(rules=_rules, ctx=_ctx, data=st.data(), n=st.integers(0, 15),
       now=st.integers(NOW - 100, NOW + 5000))
def test_fast_paths_agree_with_the_reasons(rules, ctx, data, n, now):
    """`passes` is `check` without reasons; rank equals the eager reference at any time."""
    compiled = compile_rules(rules)
    offers = [data.draw(_facts(i, now)) for i in range(n)]
    for f in offers:
        assert compiled.passes(f, ctx, now) == (compiled.check(f, ctx, now)[1] == ())
        lapse = compiled.stays_eligible_until(f)
        if compiled.passes(f, ctx, now):
            assert lapse > now and not compiled.passes(f, ctx, lapse)
            assert compiled.passes(f, ctx, lapse - 1)
    assert _rows(rank(compiled, offers, ctx, now)) == reference_rank(compiled, offers, ctx, now)


def test_a_new_offer_inside_the_ranges_is_scored_alone():
    compiled = compile_rules({"weights": {"price": 1.0, "delivery": 1.0, "known_supplier": 0,
                                          "reputation": 0}})

    def offer(i: int, price: float, days: int) -> OfferFacts:
        return OfferFacts(f"o{i}", "intent-1", "acme", "bikes", price, "EUR", NOW + 3600, days,
                          "GB", True, None, "Bike", {}, 0)
    board = Leaderboard(compiled, Context(), [offer(0, 100.0, 1), offer(1, 900.0, 9)], NOW)
    built = board.rescores
    inside = board.add(offer(2, 500.0, 5), NOW)
    assert not inside.rescored and board.rescores == built and inside.position == 2
    outside = board.add(offer(3, 50.0, 5), NOW)            # a new cheapest price: ranges move
    assert outside.rescored and board.rescores == built + 1 and outside.position == 2
    assert board.ranking(NOW) == rank(compiled, [offer(i, p, d) for i, p, d in
                                                 ((0, 100.0, 1), (1, 900.0, 9), (2, 500.0, 5),
                                                  (3, 50.0, 5))], Context(), NOW)


def test_an_offer_lapsing_re_ranks_the_board():
    compiled = compile_rules({"filters": {"min_validity_s": 60},
                              "weights": {"price": 1.0, "known_supplier": 0, "reputation": 0, "delivery": 0}})
    cheap = OfferFacts("cheap", "intent-1", "acme", "bikes", 100.0, "EUR", NOW + 100, None, None,
                       True, None, "Bike", {}, 0)
    dear = OfferFacts("dear", "intent-1", "acme", "bikes", 300.0, "EUR", NOW + 5000, None, None,
                      True, None, "Bike", {}, 0)
    board = Leaderboard(compiled, Context(), [cheap, dear], NOW)
    assert [r.eligible for r in board.ranking(NOW + 40)] == [True, True]
    assert board.stale(NOW + 41)                        # 59 s left < 60 s needed
    later = board.ranking(NOW + 41)
    assert [(r.offer_id, r.eligible) for r in later] == [("dear", True), ("cheap", False)]
    assert later == rank(compiled, [cheap, dear], Context(), NOW + 41)


def test_an_offer_that_moved_a_range_and_lapses_first_re_ranks_the_board():
    compiled = compile_rules({})
    lasting = OfferFacts("lasting", "intent-1", "acme", "bikes", 100.0, "EUR", NOW + 5000, None, None,
                         True, None, "Bike", {}, 0)
    brief = OfferFacts("brief", "intent-1", "acme", "bikes", 50.0, "EUR", NOW + 10, None, None,
                       True, None, "Bike", {}, 0)
    board = Leaderboard(compiled, Context(), [lasting], NOW)
    placed = board.add(brief, NOW)                       # a new lowest price: the set is re-scored
    assert placed.rescored and placed.position == 1
    assert board.stale(NOW + 10)
    assert board.ranking(NOW + 20) == rank(compiled, [lasting, brief], Context(), NOW + 20)


def test_the_same_offer_twice_is_refused():
    compiled = compile_rules({})
    f = OfferFacts("o", "intent-1", "acme", "bikes", 1.0, "EUR", NOW + 10, None, None, True, None, "B", {}, 0)
    board = Leaderboard(compiled, Context(), [f], NOW)
    with pytest.raises(ValueError, match="already on the board"):
        board.add(f, NOW)


# ------------------------------------------------------------------------------ through the intake
def test_intake_events_match_the_full_ranking_as_the_market_changes(tmp_path):
    """On a real store: each offer's event (eligible, score, position) is what a full re-rank of
    its intent gives, while offers are declined, snoozed and un-snoozed, the rules change, and
    offers lapse; and the board is reused (offers scored alone) between those changes."""
    import random
    import time

    from device.intake import Intake, Outcome
    from device.market import Market
    from device.ratelimit import RateLimiter
    from device.store import Store
    from tests.vendor_messages import TestVendor
    from vrm_protocol import topics

    t = [float(int(time.time()))]
    clock = lambda: t[0]                                  # noqa: E731
    store = Store.open(tmp_path / "box", clock=clock)
    market = Market(store, clock=clock)
    intake = Intake(market, limiter=RateLimiter(10**6, 10**6), max_bytes=64 * 1024, clock=clock,
                    max_offers_per_vendor_intent=1000)
    try:
        intent = market.add_intent("bikes", {"budget_max": 800})["intent"]
        intake.refresh()
        token = store.get_intent(intent).token
        vendors = [TestVendor(s) for s in ("acme", "bolt")]
        for v in vendors:
            assert intake.handle(intake.precheck(topics.vendor_profile(v.slug), v.profile().encode())).kind == "profile"
        rnd = random.Random(13)
        placed_alone = 0
        for i in range(80):
            v = rnd.choice(vendors)
            payload = v.offer(token, now=t[0], price=rnd.choice([100.0, 300.0, 500.0, 650.0, rnd.uniform(50, 900)]),
                              ttl=rnd.choice([40, 120, 3600]), delivery_days=rnd.choice([None, 1, 3, 7]))
            before = market._boards.get(intent)
            rescores = before.board.rescores if before else None
            out = intake.handle(intake.precheck(topics.offers(intent), payload.encode()))
            assert isinstance(out, Outcome) and out.kind == "offer", out
            full = market.ranked_offers(intent, include_ineligible=True)
            mine = next(r for r in full if r["offer"] == out.event["offer"])
            eligible = [r["offer"] for r in full if r["eligible"]]
            assert (out.event["eligible"], out.event["score"]) == (mine["eligible"], mine["score"])
            assert out.event["position"] == (eligible.index(mine["offer"]) + 1 if mine["eligible"] else None)
            after = market._boards.get(intent)
            if before is not None and after is before and after.board.rescores == rescores:
                placed_alone += 1
            roll = rnd.random()
            open_ = [r["offer"] for r in full if r["status"] in ("new", "snoozed")]
            if roll < 0.08 and open_:
                market.decline(rnd.choice(open_))
            elif roll < 0.16 and open_:
                market.snooze(rnd.choice(open_), rnd.choice([5, 60]))
            elif roll < 0.2:
                market.set_rules({"filters": {"max_price": {"amount": rnd.choice([400, 700, 900]),
                                                            "currency": "EUR"}},
                                  "weights": {"price": 1.0, "delivery": rnd.choice([0.0, 0.5])}})
            t[0] += rnd.choice([0, 1, 1, 3, 20])
        assert placed_alone >= 10, placed_alone         # the board was reused, not rebuilt each time
    finally:
        store.close()


def test_a_version_1_store_gains_the_intent_vendor_index(tmp_path):
    """Schema 1 -> 2 in place: the (intent, vendor) index replaces the intent one; rows stay."""
    import sqlite3

    from device.store import Store
    from device.store.migrations import SCHEMA_VERSION

    store = Store.open(tmp_path / "box")
    intent = "i" * 22
    store.add_offer("o" * 22, intent, "acme", "did:key:z6Mk", "a.b.c", {"price": 1}, NOW)
    store.close()
    conn = sqlite3.connect(tmp_path / "box" / "store.db")
    conn.executescript("DROP INDEX offers_intent_vendor; CREATE INDEX offers_intent ON offers(intent_id);"
                       " ALTER TABLE outbox DROP COLUMN expires_at;"
                       " PRAGMA user_version = 1;")
    conn.close()
    store = Store.open(tmp_path / "box")
    try:
        indexes = {r[0] for r in store._conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='offers' AND sql IS NOT NULL")}
        assert indexes == {"offers_intent_vendor"}
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert store.count_offers(intent, "acme") == store.count_intent_offers(intent) == 1
        plan = " ".join(str(r) for r in store._conn.execute(
            "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM offers WHERE intent_id=? AND vendor=?", (intent, "acme")))
        assert "offers_intent_vendor" in plan
    finally:
        store.close()
