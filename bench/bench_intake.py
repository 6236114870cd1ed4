"""Offer intake throughput on this machine, next to one core's raw Ed25519 verify of the same
offers measured in the same run: `intake_ratio_1proc`. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_intake.py [N] [--intents K] [--json]

The pipeline is the daemon's own, in one process: the precheck (with the full verification of
a pinned vendor's offer) on the calling thread as paho's network thread runs it, the daemon's
worker thread storing (group commit, synchronous=FULL), ranking the offer's intent and
announcing it; an offer counts when its PUBACK would go out. No broker: MQTT is not measured.
Latency: offers at a steady 100/s, from the precheck to the event announcing the stored, ranked
offer (p95). Also: the precheck of a flooding vendor past its rate limit (its offers verify first).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.config import load_config  # noqa: E402
from device.daemon.service import Daemon, _Inbound  # noqa: E402
from device.intake import Pre  # noqa: E402
from device.ratelimit import RateLimiter  # noqa: E402
from vrm_protocol import (DecryptionKey, Identity, Item, Offer, TermsResponse, VendorProfile,  # noqa: E402
                          sign, topics)
from vrm_protocol.codec import b64url_decode, unverified_payload  # noqa: E402


def _raw_rate(vendor: Identity, tokens: list[bytes]) -> float:
    """One core's raw verify of the same signing inputs (cryptography, key imported once)."""
    key = vendor.private_key.public_key()
    parts = [t.decode().split(".") for t in tokens]
    inputs = [(b64url_decode(s), f"{h}.{p}".encode()) for h, p, s in parts]
    t0 = time.perf_counter()
    for sig, msg in inputs:
        key.verify(sig, msg)
    return len(inputs) / (time.perf_counter() - t0)


class _Box:
    """A daemon in-process (no broker) with one pinned vendor and `intents` open intents; its
    PUBACKs and events are timed instead of sent."""

    def __init__(self, d: str, intents: int) -> None:
        cfg = load_config(None, {"data_dir": str(Path(d) / "box"), "intake.max_queue": 1000,
                                 "intake.per_vendor_per_minute": 100000, "intake.per_vendor_burst": 1000,
                                 "intake.max_offers_per_vendor_intent": 10000}, env={})
        self.d = box = Daemon(cfg)
        box.intake.limiter = RateLimiter(10**9, 10**6)
        self.acked: list[int] = []
        self.announced: dict[str, float] = {}     # offer id -> when its event went out
        self.target = 0
        self.done = threading.Event()
        box._ack = self._ack  # type: ignore[method-assign]
        real_publish = box.events.publish

        def publish(event: dict) -> None:
            if event.get("type") == "offer":
                self.announced[event["offer"]] = time.perf_counter()
            real_publish(event)
        box.events.publish = publish  # type: ignore[method-assign]
        self.vendor = Identity.generate()
        now = time.time()
        profile = sign(self.vendor, VendorProfile(vendor="acme", name="Acme", categories=["bikes"],
                                                  enc_key=DecryptionKey.generate().public), now=now, ttl=86400)
        box.intake.handle(box.intake.precheck(topics.vendor_profile("acme"), profile.encode()))  # type: ignore[arg-type]
        self.intents = [box.market.add_intent("bikes", {"budget_max": 800})["intent"] for _ in range(intents)]
        self.terms = {i: unverified_payload(box.store.get_intent(i).token)["terms"] for i in self.intents}
        box.intake.refresh()
        self.worker = threading.Thread(target=box._work, daemon=True)

    def _ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)
        if len(self.acked) >= self.target:
            self.done.set()

    def offers(self, n: int) -> list[tuple[str, bytes]]:
        now = time.time()
        out = []
        for i in range(n):
            intent = self.intents[i % len(self.intents)]
            t = self.terms[intent]
            tr = TermsResponse(id=t["id"], sha256=t["sha256"], decision="accept")
            out.append((topics.offers(intent), sign(self.vendor, Offer(
                intent=intent, vendor="acme", item=Item(name=f"bike {i}"), price=100.0 + i % 700,
                currency="EUR", valid_until=int(now) + 3600, terms_response=tr), now=now, ttl=3600).encode()))
        return out

    def feed(self, mid: int, topic: str, token: bytes) -> None:
        """What paho's network thread does with a message: precheck (verify), queue."""
        pre = self.d.intake.precheck(topic, token)
        assert isinstance(pre, Pre), pre
        self.d._put(_Inbound(pre, mid, 1))

    def close(self) -> None:
        self.d._stop.set()
        self.worker.join(10)
        self.d.store.close()


def run(n: int = 2000, intents: int = 10) -> dict:
    with tempfile.TemporaryDirectory() as d:
        box = _Box(d, intents)
        offers = box.offers(n)
        raw_before = _raw_rate(box.vendor, [o for _, o in offers])
        box.target = n
        box.worker.start()
        t0 = time.perf_counter()
        for mid, (topic, token) in enumerate(offers, 1):
            box.feed(mid, topic, token)
        if not box.done.wait(600):
            raise RuntimeError(f"only {len(box.acked)} of {n} offers acknowledged")
        dt = time.perf_counter() - t0
        raw_after = _raw_rate(box.vendor, [o for _, o in offers])
        stored = len(box.d.store.list_offers())
        box.d.intake.limiter = RateLimiter(60, 20)
        m = 5000
        topic, token = offers[0]
        t1 = time.perf_counter()
        for _ in range(m):
            box.d.intake.precheck(topic, token)
        flood_rate = m / (time.perf_counter() - t1)
        box.close()
    raw = (raw_before + raw_after) / 2
    return {"intake_per_s": n / dt, "raw_verify_per_s": raw, "intake_ratio_1proc": n / dt / raw,
            "offers": n, "intents": intents, "stored": stored, "flood_precheck_per_s": flood_rate}


def latency(rate: float = 100.0, seconds: float = 10.0, intents: int = 10) -> dict:
    """A steady `rate` of offers/s: precheck start -> stored, ranked and announced (p50/p95)."""
    n = int(rate * seconds)
    with tempfile.TemporaryDirectory() as d:
        box = _Box(d, intents)
        offers = box.offers(n)
        ids = [unverified_payload(t.decode())["id"] for _, t in offers]
        box.target = n
        box.worker.start()
        sent: dict[str, float] = {}
        t0 = time.perf_counter()
        for i, (topic, token) in enumerate(offers):
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            sent[ids[i]] = time.perf_counter()
            box.feed(i + 1, topic, token)
        if not box.done.wait(600):
            raise RuntimeError(f"only {len(box.acked)} of {n} offers acknowledged")
        box.close()
    lat = sorted((box.announced[i] - sent[i]) * 1000 for i in ids)
    return {"latency_p50_ms": lat[len(lat) // 2], "latency_p95_ms": lat[int(len(lat) * 0.95)],
            "latency_rate": rate, "latency_offers": n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=2000)
    ap.add_argument("--intents", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = {**run(args.n, args.intents), **latency(100.0, 10.0, args.intents)}
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"full intake (precheck+verify, group-committed store, rank, event): {r['offers']} offers "
          f"over {r['intents']} intents: {r['intake_per_s']:8.1f} offers/s")
    print(f"raw Ed25519 verify, same run: {r['raw_verify_per_s']:8.1f}/s  "
          f"intake_ratio_1proc {r['intake_ratio_1proc']:.2f}")
    print(f"latency at a steady {r['latency_rate']:.0f} offers/s (precheck -> stored, ranked, announced): "
          f"p50 {r['latency_p50_ms']:.1f} ms, p95 {r['latency_p95_ms']:.1f} ms")
    print(f"precheck of a flooding vendor (verified, then rate-limited): {r['flood_precheck_per_s']:10.0f} msgs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
