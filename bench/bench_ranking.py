"""Throughput of compile + rank over 10k synthetic offers (prints offers/s, asserts nothing).

Run: .venv/bin/python bench/bench_ranking.py [N]
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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


def rerank_ms(n: int, repeats: int = 3) -> float:
    """Best of `repeats`: compile the rules and rank n offers (what a rule change costs)."""
    offers = synthetic(n)
    ctx = Context(suppliers=frozenset({"vendor-1", "vendor-2"}),
                  reputation={f"vendor-{i}": (i % 7 - 3) / 3 for i in range(50)})
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        rank(compile_rules(RULES), offers, ctx, NOW)
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    offers = synthetic(n)
    ctx = Context(suppliers=frozenset({"vendor-1", "vendor-2"}),
                  reputation={f"vendor-{i}": (i % 7 - 3) / 3 for i in range(50)})
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        out = rank(compile_rules(RULES), offers, ctx, NOW)
        best = min(best, time.perf_counter() - t0)
    eligible = sum(r.eligible for r in out)
    print(f"compile+rank {n} offers ({eligible} eligible): {best * 1000:.1f} ms, "
          f"{n / best:,.0f} offers/s")


if __name__ == "__main__":
    main()
