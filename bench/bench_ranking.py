"""Re-rank after a rule change, and incremental placement of new offers (prints figures,
asserts nothing).

Run: .venv/bin/python bench/bench_ranking.py [N] [--json]

rerank_ms: compile the rules, rank N synthetic offers, and build the explanations of the ten
best (what the box shows; explanations are built on demand, exactly as a full rank gives them).
place_us: one intent's leaderboard taking offers one at a time in random order (each scored
once and placed; the set is re-scored only when a normalisation range moves): mean per offer,
with how many re-scores that took.
"""
from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.leaderboard import Leaderboard  # noqa: E402
from device.ranking import rank  # noqa: E402
from device.rules import Context, OfferFacts, compile_rules  # noqa: E402

NOW = 1_800_000_000
RULES = {
    "filters": {"max_price": {"amount": 800, "currency": "EUR"}, "currencies": ["EUR", "GBP"],
                "regions": ["GB"], "min_validity_s": 3600, "require_terms_accepted": True,
                "vendors_block": ["vendor-13"], "categories": ["bikes"],
                "attributes": [{"path": "item.attributes.colour", "op": "in", "value": ["red", "blue"]},
                               {"path": "item.attributes.gears", "op": "ge", "value": 3}]},
    "weights": {"price": 1.0, "known_supplier": 0.5, "reputation": 0.5, "delivery": 0.3,
                "brands_liked": 0.4, "brands_disliked": 0.8,
                "attributes": [{"path": "item.attributes.gears", "prefer": "high", "weight": 0.2},
                               {"path": "item.attributes.weight_kg", "prefer": "low", "weight": 0.2}]},
    "brands": {"liked": ["Brompton"], "disliked": ["Cheapo"]},
}


def synthetic(n: int, seed: int = 7) -> list[OfferFacts]:
    rnd = random.Random(seed)
    return [OfferFacts(
        offer_id=f"offer-{i:06d}", intent_id="intent-0001", vendor=f"vendor-{rnd.randrange(50)}",
        category="bikes", price=round(rnd.uniform(100, 1000), 2), currency=rnd.choice(["EUR", "EUR", "GBP"]),
        valid_until=NOW + rnd.randrange(-600, 7 * 86400), delivery_days=rnd.choice([None, 1, 2, 3, 5, 10]),
        region=rnd.choice(["GB", "GB-LND", "FR", None]), terms_accepted=rnd.random() < 0.9,
        brand=rnd.choice(["Brompton", "Cheapo", "Other", None]), item_name="Bike",
        attributes={"colour": rnd.choice(["red", "blue", "green"]), "gears": rnd.randrange(1, 30),
                    "weight_kg": round(rnd.uniform(8, 20), 1)},
        received_at=NOW - rnd.randrange(86400)) for i in range(n)]


CTX = Context(suppliers=frozenset({"vendor-1", "vendor-2"}),
              reputation={f"vendor-{i}": (i % 7 - 3) / 3 for i in range(50)})


def rerank_ms(n: int, repeats: int = 3) -> float:
    """Best of `repeats`: compile the rules, rank n offers, explain the ten best (what a rule
    change costs)."""
    offers = synthetic(n)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = rank(compile_rules(RULES), offers, CTX, NOW)
        for r in out[:10]:
            r.explanation
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def place_us(n: int = 300, repeats: int = 3) -> dict:
    """Mean cost of placing each of n offers (arriving in random order) on one leaderboard."""
    offers = synthetic(n, seed=11)
    compiled = compile_rules(RULES)
    best, rescores = float("inf"), 0
    for _ in range(repeats):
        board = Leaderboard(compiled, CTX, [], NOW)
        t0 = time.perf_counter()
        for f in offers:
            board.add(f, NOW)
        dt = time.perf_counter() - t0
        if dt < best:
            best, rescores = dt, board.rescores - 1
    return {f"place_{n}_us": best / n * 1e6, f"place_{n}_rescores": rescores}


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--json"]
    n = int(args[0]) if args else 10_000
    out = {f"rerank_{n // 1000}k_ms" if n % 1000 == 0 else f"rerank_{n}_ms": rerank_ms(n), **place_us()}
    if "--json" in sys.argv:
        print(json.dumps(out))
        return
    eligible = sum(r.eligible for r in rank(compile_rules(RULES), synthetic(n), CTX, NOW))
    ms = next(iter(out.values()))
    print(f"compile+rank {n} offers ({eligible} eligible), top 10 explained: {ms:.1f} ms, "
          f"{n / ms * 1000:,.0f} offers/s")
    print(f"incremental: 300 offers placed one by one, {out['place_300_us']:.1f} us each, "
          f"{out['place_300_rescores']} re-scores of the set")


if __name__ == "__main__":
    main()
