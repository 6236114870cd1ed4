"""The daemon as a process on a real Mosquitto: start-up to ready, idle CPU, and resident memory
with many stored offers. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_daemon.py [--offers 100000] [--idle-s 60]

startup_s: spawn to the READY line (printed right after systemd's READY=1 notification).
idle_cpu_pct: user+system CPU of the daemon over --idle-s seconds, connected and idle.
rss_mb: VmRSS after start-up and the idle period, with --offers offers stored (spread over
100 intents of one vendor; every offer's token is one real signed offer's, ids distinct).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.market import Market  # noqa: E402
from device.store import Store  # noqa: E402
from provisioning.launch import Broker, Proc, child_env, python_module  # noqa: E402
from vrm_protocol import (DecryptionKey, Identity, Item, Offer, TermsResponse, VendorProfile,  # noqa: E402
                          sign)
from vrm_protocol.codec import ENVELOPE, unverified_payload  # noqa: E402

INTENTS = 100


def _body(token: str) -> dict:
    p = unverified_payload(token)
    return {k: v for k, v in p.items() if k not in ENVELOPE}


def populate(data_dir: Path, offers: int) -> None:
    """A store with `offers` offers, written directly (one transaction)."""
    store = Store.open(data_dir)
    market = Market(store)
    vendor = Identity.generate()
    now = time.time()
    profile = sign(vendor, VendorProfile(vendor="acme", name="Acme", categories=["bikes"],
                                         enc_key=DecryptionKey.generate().public), now=now, ttl=86400)
    store.upsert_vendor_profile("acme", vendor.did, profile, _body(profile))
    intents = [market.add_intent("bikes", {"budget_max": 800})["intent"] for _ in range(INTENTS if offers else 0)]
    with store.transaction():
        for n, intent in enumerate(intents):
            terms = unverified_payload(store.get_intent(intent).token)["terms"]
            token = sign(vendor, Offer(intent=intent, vendor="acme", item=Item(name="City bike"), price=500.0,
                                       currency="EUR", valid_until=int(now) + 86400,
                                       terms_response=TermsResponse(id=terms["id"], sha256=terms["sha256"],
                                                                    decision="accept")),
                         now=now, ttl=86400)
            body = _body(token)
            for i in range(n, offers, INTENTS):
                store.add_offer(f"bench-{i:08d}", intent, "acme", vendor.did, token, body, int(now))
    store.close()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def run(offers: int = 100_000, idle_s: float = 60.0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "box"
        t0 = time.perf_counter()
        populate(data, offers)
        populate_s = time.perf_counter() - t0
        broker = Broker(tmp_path / "broker").start()
        env = child_env()
        env["VRMBOX_CONFIG"] = os.devnull
        proc = Proc(python_module("vrmbox", "run", "--data-dir", str(data), "--broker", broker.url),
                    tmp_path / "daemon.log", env=env)
        try:
            t0 = time.perf_counter()
            proc.start(timeout=60)
            startup = time.perf_counter() - t0
            assert proc.pid is not None
            time.sleep(2.0)                      # connected, subscribed, first ticks done
            cpu0, w0 = _cpu_s(proc.pid), time.perf_counter()
            time.sleep(idle_s)
            idle = (_cpu_s(proc.pid) - cpu0) / (time.perf_counter() - w0) * 100
            rss = _rss_mb(proc.pid)
        finally:
            proc.stop()
            broker.stop()
    return {"startup_s": startup, "idle_cpu_pct": idle, "rss_mb": rss, "offers": offers,
            "idle_s": idle_s, "populate_s": populate_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--offers", type=int, default=100_000)
    ap.add_argument("--idle-s", type=float, default=60.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = run(args.offers, args.idle_s)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"start-up to READY: {r['startup_s']:.2f} s with {r['offers']} offers stored")
        print(f"idle CPU over {r['idle_s']:.0f} s: {r['idle_cpu_pct']:.2f} %")
        print(f"resident memory: {r['rss_mb']:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
