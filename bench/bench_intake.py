"""Offer intake throughput on this machine, next to one core's raw Ed25519 verify of the same
offers measured in the same run. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_intake.py [N] [--intents K] [--json]

Through the broker (`wire`, `wire_latency`): the real daemon process on a real Mosquitto,
signed offers from several publisher PROCESSES (one pinned vendor each, all published at
once), counted when the daemon's event stream announces them stored and ranked:
`intake_ratio_1proc` (intake.verify_workers = 1: no pool) and `intake_ratio_pool` ("auto"),
each divided by one core's raw verify of the same messages in the same run; latency
publish -> announced at a steady 100 offers/s: `latency_p95_ms`.

In-process (`run`, `latency`; kept as `intake_ratio_inproc`, `latency_inproc_p95_ms`): the
pipeline is the daemon's own, in one process: the precheck (with the full verification of
a pinned vendor's offer) on the calling thread as paho's network thread runs it, the daemon's
worker thread storing (group commit, synchronous=FULL), ranking the offer's intent and
announcing it; an offer counts when its PUBACK would go out. No broker: MQTT is not measured.
Latency: offers at a steady 100/s, from the precheck to the event announcing the stored, ranked
offer (p95). Also: the precheck of a flooding vendor past its rate limit (its offers verify first).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------- through the broker
class Events:
    """The daemon's event stream (its control socket): when each offer was announced."""

    def __init__(self, sock: Path) -> None:
        self._s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._s.connect(str(sock))
        self._s.sendall(json.dumps({"op": "subscribe"}).encode() + b"\n")
        self._f = self._s.makefile("rb")
        if not json.loads(self._f.readline() or b"{}").get("ok"):
            raise RuntimeError("the event stream refused us")
        self.offers: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self._f:
                e = json.loads(line)
                with self.changed:
                    kind = e.get("type", "?")
                    self.counts[kind] = self.counts.get(kind, 0) + 1
                    if kind == "offer":
                        self.offers[e["offer"]] = time.perf_counter()   # CLOCK_MONOTONIC: all processes
                    self.changed.notify_all()
        except (OSError, ValueError):
            pass

    def wait(self, pred, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(pred, timeout)

    def close(self) -> None:
        self._s.close()


def _publisher(host: str, port: int, items: list[tuple[str, bytes]], go: Any, ready: Any) -> None:
    """A vendor process: connect, wait for the start, publish everything (QoS 1) at once."""
    import paho.mqtt.client as mqtt
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{os.getpid()}", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(host, port)
    c.loop_start()
    ready.release()
    go.wait()
    infos = [c.publish(t, p, qos=1) for t, p in items]
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


class WireBox:
    """A real Mosquitto and the real daemon process, with `vendors` pinned vendors (profiles
    through the broker) and `intents` open intents; its event stream subscribed."""

    def __init__(self, tmp: Path, vendors: list[str], intents: int, config: str) -> None:
        from device.market import Market
        from device.store import Store
        from provisioning.launch import Broker, Proc, child_env, python_module
        self.tmp, data = tmp, tmp / "box"
        store = Store.open(data)
        market = Market(store)
        self.intents = [market.add_intent("bikes", {"budget_max": 800})["intent"] for _ in range(intents)]
        self.terms = {i: unverified_payload(store.get_intent(i).token)["terms"] for i in self.intents}
        store.close()
        self.broker = Broker(tmp / "broker").start()
        (tmp / "vrmbox.toml").write_text(config)
        env = child_env()
        env["VRMBOX_CONFIG"] = str(tmp / "vrmbox.toml")
        self.proc = Proc(python_module("vrmbox", "run", "--data-dir", str(data), "--broker",
                                       self.broker.url), tmp / "daemon.log", env=env)
        self.proc.start(timeout=60)
        self.events = Events(data / "control.sock")
        self.vendors = {v: Identity.generate() for v in vendors}
        self.client = self.mqtt_client("bench")
        now = time.time()
        for v, ident in self.vendors.items():
            self.client.publish(topics.vendor_profile(v), sign(ident, VendorProfile(
                vendor=v, name=v.title(), categories=["bikes"], enc_key=DecryptionKey.generate().public),
                now=now, ttl=86400), qos=1, retain=True)
        if not self.events.wait(lambda: self.events.counts.get("vendor_new", 0) >= len(vendors), 60):
            raise RuntimeError("the daemon did not pin the vendors")
        self._wait_subscribed()

    def mqtt_client(self, name: str) -> Any:
        import paho.mqtt.client as mqtt
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{os.getpid()}",
                        protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.connect(self.broker.host, self.broker.port)
        c.loop_start()
        return c

    def _wait_subscribed(self) -> None:
        """Until the daemon listens on every intent's inbox: it publishes each intent after
        subscribing to its inbox, on one connection, so a retained intent seen means listening."""
        seen: set[str] = set()
        got = threading.Event()

        def on_message(_c: Any, _u: Any, m: Any) -> None:
            if m.payload:
                seen.add(unverified_payload(m.payload.decode())["intent"])
                if seen >= set(self.intents):
                    got.set()
        watcher = self.mqtt_client("watch")
        watcher.on_message = on_message
        watcher.subscribe(topics.intents("bikes"), qos=1)
        if not got.wait(60):
            raise RuntimeError("the daemon did not publish its intents")
        watcher.loop_stop()
        watcher.disconnect()

    def offer(self, vendor: str, i: int, now: float) -> tuple[str, bytes]:
        intent = self.intents[i % len(self.intents)]
        t = self.terms[intent]
        tr = TermsResponse(id=t["id"], sha256=t["sha256"], decision="accept")
        return topics.offers(intent), sign(self.vendors[vendor], Offer(
            intent=intent, vendor=vendor, item=Item(name=f"bike {i}"), price=100.0 + i % 700, currency="EUR",
            valid_until=int(now) + 3600, terms_response=tr), now=now, ttl=3600).encode()

    def status(self) -> dict:
        from device.client import call
        return call(self.tmp / "box" / "control.sock", "status", {})

    def close(self) -> None:
        self.events.close()
        self.client.loop_stop()
        self.client.disconnect()
        self.proc.stop()
        self.broker.stop()


def _raw_mixed(keys: dict[str, Identity], items: list[tuple[str, bytes, str]]) -> float:
    """One core's raw verify of exactly these messages (each with its signer's key, imported once)."""
    pub = {v: k.private_key.public_key() for v, k in keys.items()}
    inputs = []
    for _, token, vendor in items:
        h, p, sig = token.decode().split(".")
        inputs.append((pub[vendor], b64url_decode(sig), f"{h}.{p}".encode()))
    t0 = time.perf_counter()
    for key, sig, msg in inputs:
        key.verify(sig, msg)
    return len(inputs) / (time.perf_counter() - t0)


WIRE_CONFIG = """
[intake]
max_queue = 10000
per_vendor_per_minute = 100000
per_vendor_burst = 10000
max_offers_per_vendor_intent = 10000
verify_workers = {workers}
"""


def wire(n: int = 3000, publishers: int = 4, intents: int = 30, workers: str = "auto") -> dict:
    """`n` offers from `publishers` processes (one vendor each) through Mosquitto into the
    daemon, all published at once; intake rate = n / (first publish -> n-th offer announced)."""
    import multiprocessing
    w = f'"{workers}"' if workers == "auto" else workers
    with tempfile.TemporaryDirectory() as d:
        vendors = [f"vendor{k}" for k in range(publishers)]
        box = WireBox(Path(d), vendors, intents, WIRE_CONFIG.format(workers=w))
        try:
            now = time.time()
            per = {v: [box.offer(v, i, now) for i in range(k, n, publishers)] for k, v in enumerate(vendors)}
            mixed = [(t, p, v) for v, items in per.items() for t, p in items]
            raw_before = _raw_mixed(box.vendors, mixed)
            ctx = multiprocessing.get_context("spawn")
            go, ready = ctx.Event(), ctx.Semaphore(0)
            procs = [ctx.Process(target=_publisher, args=(box.broker.host, box.broker.port, per[v], go, ready))
                     for v in vendors]
            for p in procs:
                p.start()
            for _ in procs:
                ready.acquire(timeout=60)
            t0 = time.perf_counter()
            go.set()
            ok = box.events.wait(lambda: len(box.events.offers) >= n, 600)
            dt = (max(box.events.offers.values()) if box.events.offers else time.perf_counter()) - t0
            for p in procs:
                p.join(60)
            raw_after = _raw_mixed(box.vendors, mixed)
            got = len(box.events.offers)
            status = box.status()
        finally:
            box.close()
    if not ok:
        raise RuntimeError(f"only {got} of {n} offers announced")
    raw = (raw_before + raw_after) / 2
    return {"intake_per_s": n / dt, "raw_verify_per_s": raw, "ratio": n / dt / raw, "offers": n,
            "publishers": publishers, "intents": intents, "verify_workers": status.get("verify_workers")}


def wire_latency(rate: float = 100.0, seconds: float = 10.0, intents: int = 10) -> dict:
    """A steady `rate` of offers/s from one publisher through Mosquitto: publish -> the event
    announcing the stored, ranked offer (p50/p95)."""
    n = int(rate * seconds)
    with tempfile.TemporaryDirectory() as d:
        box = WireBox(Path(d), ["acme"], intents, WIRE_CONFIG.format(workers='"auto"'))
        try:
            now = time.time()
            warm = 20          # first: the pool processes and the caches warm up, untimed
            offers = [box.offer("acme", i, now) for i in range(n + warm)]
            for topic, token in offers[:warm]:
                box.client.publish(topic, token, qos=1)
            box.events.wait(lambda: len(box.events.offers) >= warm, 60)
            offers = offers[warm:]
            ids = [unverified_payload(t.decode())["id"] for _, t in offers]
            sent: dict[str, float] = {}
            t0 = time.perf_counter()
            for i, (topic, token) in enumerate(offers):
                wait = t0 + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                sent[ids[i]] = time.perf_counter()
                box.client.publish(topic, token, qos=1)
            ok = box.events.wait(lambda: len(box.events.offers) >= n + warm, 120)
            got = dict(box.events.offers)
        finally:
            box.close()
    if not ok:
        raise RuntimeError(f"only {len(got)} of {n} offers announced")
    lat = sorted((got[i] - sent[i]) * 1000 for i in ids)
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
