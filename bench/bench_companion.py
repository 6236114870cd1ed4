"""Companion app latency with a full box: 10,000 stored offers (signed, over 5 intents and 20
vendors), a real daemon, the app as `vrmbox companion` (cheroot) on loopback, 20 concurrent
paired clients (threads in this process).
Prints p50/p95 of the dashboard page and of the offers API (target p95 <= 50 ms); asserts nothing.

    .venv/bin/python bench/bench_companion.py [OFFERS] [CLIENTS] [REQUESTS_PER_CLIENT]
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from companion_app.box import Box  # noqa: E402
from device.market import Market  # noqa: E402
from device.store import Store  # noqa: E402
from vrm_protocol import Identity, Item, Offer, TermsResponse, sign  # noqa: E402
from vrm_protocol.codec import unverified_payload  # noqa: E402
from vrm_protocol.messages import body_to_dict  # noqa: E402

INTENTS = 5
VENDORS = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(data: Path, n: int) -> None:
    """n signed offers straight into the store (intake's per-offer re-rank is bench_intake's job)."""
    with Store.open(data) as store:
        market = Market(store)
        intents = [store.get_intent(market.add_intent("bikes", {"budget_max": 800})["intent"])
                   for _ in range(INTENTS)]
        vendors = [(f"vendor-{i:02d}", Identity.generate()) for i in range(VENDORS)]
        now = int(time.time())
        with store.transaction():
            for i in range(n):
                intent = intents[i % INTENTS]
                slug, key = vendors[i % VENDORS]
                terms = unverified_payload(intent.token)["terms"]
                body = Offer(intent=intent.intent_id, vendor=slug, item=Item(name=f"bike {i}", brand="Acme"),
                             price=100.0 + (i * 7919) % 900, currency="EUR", valid_until=now + 86400,
                             delivery_days=1 + i % 9,
                             terms_response=TermsResponse(id=terms["id"], sha256=terms["sha256"],
                                                          decision="accept"))
                token = sign(key, body, now=now, ttl=86400)
                offer_id = unverified_payload(token)["id"]
                store.add_offer(offer_id, intent.intent_id, slug, key.did, token, body_to_dict(body), now)


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run_clients(base: str, cookies: Any, path: str, clients: int, each: int) -> list[float]:
    times: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        s = requests.Session()
        s.cookies.update(cookies)
        mine = []
        for _ in range(each):
            t0 = time.perf_counter()
            r = s.get(base + path, timeout=60)
            mine.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                errors.append(f"{path}: {r.status_code}")
        with lock:
            times.extend(mine)
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print(f"  {len(errors)} failed requests, e.g. {errors[0]}")
    return times


def main(n: int = 10_000, clients: int = 20, each: int = 25) -> None:
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "box"
        t0 = time.perf_counter()
        fill(data, n)
        print(f"stored {n} signed offers in {time.perf_counter() - t0:.1f} s")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "VRMBOX_CONFIG": os.devnull, "VRMBOX_DATA_DIR": str(data)}
        # no broker needed for this: the daemon keeps trying one on an unused loopback port
        daemon = subprocess.Popen([sys.executable, "-m", "vrmbox", "run", "--data-dir", str(data),
                                   "--broker", f"mqtt://127.0.0.1:{_free_port()}"], env=env, cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert daemon.stdout is not None
            for line in daemon.stdout:
                if line.strip() == "READY":
                    break
            the_box = Box(data / "control.sock")
            t0 = time.perf_counter()
            for _ in range(3):
                ranked = the_box.call("offers", {})
            print(f"daemon: `offers` ranks {n} stored offers ({len(ranked)} eligible) in "
                  f"{(time.perf_counter() - t0) / 3 * 1000:.0f} ms (what a cache miss costs)")
            port = _free_port()
            app = subprocess.Popen([sys.executable, "-m", "vrmbox", "companion", "--bind", "127.0.0.1",
                                    "--port", str(port), "--data-dir", str(data)], env=env, cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            assert app.stdout is not None
            for line in app.stdout:
                if line.strip() == "READY":
                    break
            base = f"http://127.0.0.1:{port}"
            code = json.loads(subprocess.run([sys.executable, "-m", "vrmbox", "pair", "--json"], env=env,
                                             cwd=ROOT, capture_output=True, text=True, check=True).stdout)["code"]
            s = requests.Session()
            token = s.get(base + "/api/v1/session").json()["csrf_token"]
            r = s.post(base + "/api/v1/pair", json={"code": code, "name": "bench"}, headers={"X-CSRFToken": token})
            assert r.status_code == 200, r.text
            cookies = s.cookies
            shown = len(s.get(base + "/api/v1/offers").json())
            print(f"offers API answers {shown} ranked eligible offers; dashboard shows the top "
                  f"10 of each of {INTENTS} intents")
            for path, name in (("/", "dashboard page"), ("/api/v1/offers", "offers API")):
                run_clients(base, cookies, path, 2, 3)                       # warm-up
                t0 = time.perf_counter()
                times = run_clients(base, cookies, path, clients, each)
                wall = time.perf_counter() - t0
                print(f"{name:15s} {clients} clients x {each}: p50 {statistics.median(times):7.1f} ms   "
                      f"p95 {percentile(times, 95):7.1f} ms   max {max(times):7.1f} ms   "
                      f"{len(times) / wall:6.1f} req/s   (target p95 <= 50 ms)")
            app.terminate()
            app.wait(timeout=20)
        finally:
            daemon.terminate()
            daemon.wait(timeout=20)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
