"""Sign/verify throughput of one Offer: how many messages a box or a vendor worker can check per second,
next to the raw `cryptography` Ed25519 verify of the same signing input, measured in the same run
(interleaved rounds, so load from elsewhere hits both sides alike): `verify_ratio`.

    .venv/bin/python bench/bench_protocol.py [--seconds 2]

Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vrm_protocol import (DecryptionKey, Identity, Item, Offer, ReplayGuard, TermsResponse,  # noqa: E402
                          decrypt_json, encrypt_json, new_id, read_header, sign, token_hash, verify)
from vrm_protocol.codec import b64url_decode  # noqa: E402

TTL = 7 * 86400          # an offer's valid_until is its JWS exp (§8.4)

NOW = 1_750_000_000
SHA = base64.urlsafe_b64encode(hashlib.sha256(b"terms").digest()).rstrip(b"=").decode()


def offer() -> Offer:
    return Offer(intent="intent-0001-bench", vendor="acme-bikes",
                 item=Item(name="City E-Bike 500", sku="ceb-500-m", brand="Acme",
                           description="500 Wh battery, hub motor, medium frame",
                           attributes={"battery_wh": 500, "weight_kg": 22.5, "colours": ["grey", "green"]}),
                 price=749.0, currency="EUR", valid_until=NOW + 7 * 86400,
                 terms_response=TermsResponse(id="basic", sha256=SHA, decision="accept"),
                 delivery_days=3, region="GB")


def measure(fn: Callable[[int], object], seconds: float) -> tuple[int, float]:
    """Run fn(i) for about `seconds` (after a short warm-up); return (count, elapsed)."""
    for i in range(50):
        fn(i)
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            fn(n)
            n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n, now - start


def report(name: str, n: int, elapsed: float) -> None:
    print(f"{name:<34} {n / elapsed:>10,.0f} msg/s   {elapsed / n * 1e6:>8.1f} µs mean   (n={n})")


def ratio_rounds(seconds: float, rounds: int = 5) -> list[tuple[int, float, int, float]]:
    """Protocol verify and raw Ed25519 verify of the same token, in alternating rounds of
    seconds/rounds each: (raw count, raw time, protocol count, protocol time) per round."""
    vendor = Identity.generate()
    token = sign(vendor, offer(), now=NOW, ttl=TTL)
    h, p, s = token.split(".")
    key, sig, signing_input = vendor.private_key.public_key(), b64url_decode(s), f"{h}.{p}".encode()
    out = []
    for _ in range(rounds):
        raw = measure(lambda i: key.verify(sig, signing_input), seconds / rounds / 2)
        proto = measure(lambda i: verify(token, now=NOW, expect=Offer), seconds / rounds / 2)
        out.append((*raw, *proto))
    return out


def verify_ratio(seconds: float, rounds: int = 5) -> dict[str, float]:
    """The ratio of the totals over alternating rounds (rates in messages/s)."""
    per_round = ratio_rounds(seconds, rounds)
    raw = sum(r[0] for r in per_round) / sum(r[1] for r in per_round)
    proto = sum(r[2] for r in per_round) / sum(r[3] for r in per_round)
    return {"raw_verify_per_s": raw, "verify_per_s": proto, "verify_ratio": proto / raw}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args(argv)

    vendor = Identity.generate()
    body = offer()
    ids = [new_id() for _ in range(1000)]
    token = sign(vendor, body, now=NOW, ttl=TTL)
    tokens = [sign(vendor, body, now=NOW, ttl=TTL, msg_id=i) for i in ids]
    dk = DecryptionKey.generate()
    jwe = encrypt_json({"agreement": SHA, "fields": {"email": "pat@example.org"}}, dk.public)

    print(f"Offer token: {len(token)} bytes; Python {sys.version.split()[0]}")
    per_round = ratio_rounds(args.seconds * 2, rounds=10)
    raw = sum(r[0] for r in per_round) / sum(r[1] for r in per_round)
    proto = sum(r[2] for r in per_round) / sum(r[3] for r in per_round)
    ratios = sorted((pn / pt) / (rn / rt) for rn, rt, pn, pt in per_round)
    print(f"raw Ed25519 verify (cryptography)  {raw:>10,.0f} msg/s")
    print(f"verify(Offer), same run            {proto:>10,.0f} msg/s   verify_ratio {proto / raw:.3f}")
    print(f"verify_ratio per round (10)        min {ratios[0]:.3f}  median {ratios[5]:.3f}  max {ratios[-1]:.3f}")
    report("sign(Offer)", *measure(lambda i: sign(vendor, body, now=NOW, ttl=TTL, msg_id=ids[i % 1000]),
                                   args.seconds))
    report("verify(Offer, expect=Offer)", *measure(lambda i: verify(token, now=NOW, expect=Offer), args.seconds))

    state = {"n": 0, "guard": ReplayGuard()}

    def verify_with_replay(_: int) -> None:
        n = state["n"] = state["n"] + 1
        if n % len(tokens) == 0:  # a fresh guard per round, so no message is a replay
            state["guard"] = ReplayGuard()
        verify(tokens[n % len(tokens)], now=NOW, replay=state["guard"], expect=Offer)

    report("verify(Offer) + ReplayGuard", *measure(verify_with_replay, args.seconds))
    report("read_header (pre-check)", *measure(lambda i: read_header(token), args.seconds))
    report("token_hash", *measure(lambda i: token_hash(token), args.seconds))
    report("encrypt_json (disclosure)", *measure(
        lambda i: encrypt_json({"agreement": SHA, "fields": {"email": "pat@example.org"}}, dk.public),
        args.seconds))
    report("decrypt_json (disclosure)", *measure(lambda i: decrypt_json(jwe, dk), args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
