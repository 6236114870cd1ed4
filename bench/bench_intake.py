"""Offer intake throughput on this machine: the full pipeline (verify, store with fsync, rank)
and the cheap precheck that sheds a flood. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_intake.py [N]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.intake import Intake, Pre  # noqa: E402
from device.market import Market  # noqa: E402
from device.ratelimit import RateLimiter  # noqa: E402
from device.store import Store  # noqa: E402
from vrm_protocol import (DecryptionKey, Identity, Item, Offer, TermsResponse, VendorProfile,  # noqa: E402
                          sign, topics)
from vrm_protocol.codec import unverified_payload  # noqa: E402


def main(n: int = 300) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = Store.open(Path(d))
        market = Market(store)
        intake = Intake(market, limiter=RateLimiter(10**9, 10**6), max_bytes=65536, clock=time.time,
                        max_offers_per_vendor_intent=10**6)
        intent = store.get_intent(market.add_intent("bikes", {"budget_max": 800})["intent"])
        intake.refresh()
        p = unverified_payload(intent.token)
        vendor = Identity.generate()
        now = time.time()
        profile = sign(vendor, VendorProfile(vendor="acme", name="Acme", categories=["bikes"],
                                             enc_key=DecryptionKey.generate().public), now=now, ttl=86400)
        intake.handle(intake.precheck(topics.vendor_profile("acme"), profile.encode()))  # type: ignore[arg-type]
        tr = TermsResponse(id=p["terms"]["id"], sha256=p["terms"]["sha256"], decision="accept")
        offers = [sign(vendor, Offer(intent=intent.intent_id, vendor="acme", item=Item(name=f"bike {i}"),
                                     price=100.0 + i, currency="EUR", valid_until=int(now) + 3600,
                                     terms_response=tr), now=now, ttl=3600).encode() for i in range(n)]
        topic = topics.offers(intent.intent_id)

        t0 = time.perf_counter()
        first = 0.0
        for i, o in enumerate(offers):
            pre = intake.precheck(topic, o)
            assert isinstance(pre, Pre)
            out = intake.handle(pre)
            assert getattr(out, "kind", None) == "offer", out  # measure stored offers, not refusals
            if i == 19:
                first = time.perf_counter() - t0
        dt = time.perf_counter() - t0
        print(f"full intake (verify + store + re-rank the intent): first 20 offers "
              f"{first / 20 * 1000:6.2f} ms each; all {n}: {n / dt:8.1f} offers/s, "
              f"{dt / n * 1000:6.2f} ms each (ranking grows with the offers per intent)")

        flood = RateLimiter(60, 20)
        intake.limiter = flood
        m = 20000
        t0 = time.perf_counter()
        for _ in range(m):
            intake.precheck(topic, offers[0])
        dt = time.perf_counter() - t0
        print(f"precheck of a flooding vendor (rate-limited, no verify): {m / dt:10.0f} msgs/s, "
              f"{dt / m * 1e6:6.1f} µs each")
        store.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
