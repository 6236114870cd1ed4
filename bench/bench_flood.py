"""Genuine offers under a forged flood, through a real Mosquitto into the real daemon process.
Prints figures; asserts nothing.

    .venv/bin/python bench/bench_flood.py [--seconds 20] [--intake-rate R] [--json]

Two genuine vendors (alpha, beta) send within their limits (default rate limit 60/min: one
offer every 1.25 s each) while flooder processes publish, as fast as they can up to a target
of 10x the intake rate (`--intake-rate`, e.g. bench_intake's intake_per_s; else measured
here), forgeries of two kinds: offers naming alpha's own key (kid and iss) but signed by
another — only a full signature check tells them apart, and they wait in alpha's lane — and
offers signed by fresh keys the box never pinned (the shared unknown lane). beta is never
forged: its figures show what fairness buys; alpha's what a forger naming your key costs you.

flood_genuine_p95_s: publish -> stored, ranked and announced (event stream), p95 over both
vendors; flood_genuine_lost: genuine offers not announced 30 s after the flood ended.
flood_rate_per_s is what the broker took from the flooders (PUBACKed); flood_limit says
whether the target (10x intake) or the broker was the limit.
"""
from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_intake  # noqa: E402
from vrm_protocol import Identity, Item, Offer, TermsResponse, sign, topics  # noqa: E402
from vrm_protocol.codec import unverified_payload  # noqa: E402

FLOODERS = 2
GENUINE_EVERY_S = 1.25          # each genuine vendor: inside 60/min (the default limit)

CONFIG = """
[intake]
max_offers_per_vendor_intent = 1000
verify_workers = "auto"
"""


def _seg(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()


def forged_as(victim_did: str, token: bytes) -> bytes:
    """`token` re-labelled as signed by `victim_did` (kid and iss); its signature is another's."""
    h, p, s = token.decode().split(".")
    header = json.loads(base64.urlsafe_b64decode(h + "=="))
    payload = json.loads(base64.urlsafe_b64decode(p + "=="))
    header["kid"] = victim_did
    payload["iss"] = victim_did
    return f"{_seg(header)}.{_seg(payload)}.{s}".encode()


def _forgeries(intent: str, terms: dict, victim: str, victim_did: str, n: int) -> list[bytes]:
    now = time.time()
    tr = TermsResponse(id=terms["id"], sha256=terms["sha256"], decision="accept")
    strangers = [Identity.generate() for _ in range(50)]
    out = []
    for i in range(n):
        key = strangers[i % len(strangers)]
        tok = sign(key, Offer(intent=intent, vendor=victim if i % 2 == 0 else f"stranger{i % 50}",
                              item=Item(name=f"forged {i}"), price=1.0, currency="EUR",
                              valid_until=int(now) + 3600, terms_response=tr), now=now, ttl=3600).encode()
        out.append(forged_as(victim_did, tok) if i % 2 == 0 else tok)   # half each kind
    return out


def _flooder(host: str, port: int, topic: str, payloads: list[bytes], rate: float, seconds: float,
             go: Any, ready: Any, acked: Any) -> None:
    """Publish `payloads` round and round at up to `rate`/s for `seconds`; count PUBACKs."""
    import paho.mqtt.client as mqtt
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"flood-{os.getpid()}", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    done = [0]
    c.on_publish = lambda *_a: done.__setitem__(0, done[0] + 1)
    c.connect(host, port)
    c.loop_start()
    ready.release()
    go.wait()
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < seconds:
        if i - done[0] >= 2000 or i >= rate * (time.perf_counter() - t0):   # paho's queue short; the pace
            time.sleep(0.002)
            continue
        c.publish(topic, payloads[i % len(payloads)], qos=1)
        i += 1
    acked.value = done[0]
    c.disconnect()
    c.loop_stop()


def run(seconds: float = 20.0, intake_rate: float | None = None) -> dict:
    if intake_rate is None:
        intake_rate = bench_intake.wire(1000, 4, 20)["intake_per_s"]
    target = 10 * intake_rate
    with tempfile.TemporaryDirectory() as d:
        box = bench_intake.WireBox(Path(d), ["alpha", "beta"], 1, CONFIG)
        try:
            intent = box.intents[0]
            topic = topics.offers(intent)
            forged = _forgeries(intent, box.terms[intent], "alpha", box.vendors["alpha"].did, 2000)
            ctx = multiprocessing.get_context("spawn")
            go, ready = ctx.Event(), ctx.Semaphore(0)
            acked = [ctx.Value("q", 0) for _ in range(FLOODERS)]
            procs = [ctx.Process(target=_flooder, args=(box.broker.host, box.broker.port, topic,
                                                        forged[k::FLOODERS], target / FLOODERS, seconds,
                                                        go, ready, acked[k])) for k in range(FLOODERS)]
            for p in procs:
                p.start()
            for _ in procs:
                ready.acquire(timeout=60)
            rejected0 = box.status().get("rejected_total", 0)
            now = time.time()
            n = int(seconds / GENUINE_EVERY_S)
            genuine = {v: [box.offer(v, i, now) for i in range(n)] for v in ("alpha", "beta")}
            sent: dict[str, tuple[str, float]] = {}
            t0 = time.perf_counter()
            go.set()
            for i in range(n):
                for v in ("alpha", "beta"):
                    wait = t0 + (i + 0.5) * GENUINE_EVERY_S - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    t, tok = genuine[v][i]
                    sent[unverified_payload(tok.decode())["id"]] = (v, time.perf_counter())
                    box.client.publish(t, tok, qos=1)
            for p in procs:
                p.join(seconds + 60)
            flood_s = time.perf_counter() - t0
            box.events.wait(lambda: set(sent) <= set(box.events.offers), 30)
            got = dict(box.events.offers)
            rejected = box.status().get("rejected_total", 0) - rejected0
        finally:
            box.close()
    flooded = sum(a.value for a in acked)
    lat = {v: sorted(got[i] - at for i, (w, at) in sent.items() if w == v and i in got) for v in ("alpha", "beta")}
    both = sorted(lat["alpha"] + lat["beta"])

    def p95(xs: list[float]) -> float | None:
        return xs[min(len(xs) - 1, int(len(xs) * 0.95))] if xs else None
    rate = flooded / seconds
    return {"flood_genuine_p95_s": p95(both), "flood_genuine_lost": sum(i not in got for i in sent),
            "flood_genuine_sent": len(sent), "flood_forged_lane_p95_s": p95(lat["alpha"]),
            "flood_clean_lane_p95_s": p95(lat["beta"]), "flood_rate_per_s": rate,
            "flood_target_per_s": target, "flood_rejected_per_s": rejected / flood_s,
            "flood_limit": "10x intake" if rate >= 0.95 * target else "the broker (most it passed here)",
            "flood_seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--intake-rate", type=float, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = run(args.seconds, args.intake_rate)
    if args.json:
        print(json.dumps(r))
        return 0
    for k, v in r.items():
        print(f"{k:28} {v:.3f}" if isinstance(v, float) else f"{k:28} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
