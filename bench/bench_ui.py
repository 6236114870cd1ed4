"""The box's screen: frames per second for each screen (drawn and handed to luma's dummy
device, as the UI does), and the time from an `offer` event to the frame that shows it, through
the real daemon, broker and vendor kit. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_ui.py [FRAMES_PER_SCREEN] [OFFERS]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from device.ui.app import App  # noqa: E402
from device.ui.samples import NOW, states  # noqa: E402
from device.ui.screens import frame  # noqa: E402
from device.ui.state import BoxEvent  # noqa: E402
from hardware.display import make_display  # noqa: E402
from hardware.profile import emulated_profile  # noqa: E402
from provisioning.launch import Broker, Proc, child_env, python_module  # noqa: E402


# The same broker and children the tests and the demo start (provisioning/launch.py).
def _run(module: str, *args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = child_env()
    if data_dir is not None:   # in the environment, so ids starting with '-' can follow `--`
        env["VRMBOX_DATA_DIR"] = str(data_dir)
    p = subprocess.run(python_module(module, *args), capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed: {p.stdout}{p.stderr}")
    return p


def vrmbox(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return _run("vrmbox", *args, data_dir=data_dir)


def vrm_vendor(*args: str) -> subprocess.CompletedProcess:
    return _run("vendor_kit.cli", *args)


def daemon(data_dir: Path, broker_url: str, log: Path) -> Proc:
    return Proc(python_module("vrmbox", "-v", "run", "--data-dir", str(data_dir), "--broker", broker_url), log)


def vendor(vendor_dir: Path, broker_url: str, catalogue: Path, log: Path) -> Proc:
    return Proc(python_module("vendor_kit.cli", "run", "--dir", str(vendor_dir), "--broker", broker_url,
                              "--catalogue", str(catalogue)), log)


def frames_per_second(n: int) -> None:
    print(f"frames/s per screen ({n} frames each, render + dummy device display):")
    print(f"  {'screen':<18} {'128x64':>9} {'128x32':>9} {'64 hostile':>11}")
    for name in states():
        row = []
        for height, hostile in ((64, False), (32, False), (64, True)):
            device = make_display(emulated_profile(height), "dummy")
            state = states(hostile)[name]
            t0 = time.perf_counter()
            for i in range(n):
                device.display(frame(state, 128, height, NOW + i))
            row.append(n / (time.perf_counter() - t0))
        print(f"  {name:<18} {row[0]:9.0f} {row[1]:9.0f} {row[2]:11.0f}")


def offer_to_frame(offers: int) -> None:
    """Cast `offers` intents; the vendor answers each; time each offer event's arrival at the
    UI to the first frame whose state holds that offer."""
    import yaml

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["VRMBOX_CONFIG"] = str(tmp / "box.toml")
        (tmp / "box.toml").write_text("# defaults\n")
        broker = Broker(tmp / "broker")
        broker.start()
        data = tmp / "box"
        vdir = tmp / "vendor"
        vrm_vendor("init", "--dir", str(vdir), "--vendor", "beta", "--name", "Beta", "--categories", "bikes")
        (tmp / "cat.yaml").write_text(yaml.safe_dump({
            "currency": "EUR", "accept_terms": "*", "offer_validity_s": 86400,
            "items": [{"category": "bikes", "name": "Beta City", "sku": "b1", "price": 520.0}]}))
        procs = [daemon(data, broker.url, tmp / "daemon.log").start(),
                 vendor(vdir, broker.url, tmp / "cat.yaml", tmp / "vendor.log").start()]
        arrived: dict[str, float] = {}
        shown: dict[str, float] = {}
        app = App(data / "button.sock", make_display(emulated_profile(64), "dummy"),
                  power_kw={"dim_after": 1e9, "blank_after": 1e9})
        post = app.post

        def timed_post(event):
            if isinstance(event, BoxEvent) and event.event.get("type") == "offer":
                arrived.setdefault(str(event.event.get("offer")), time.perf_counter())
            post(event)

        def on_frame(state, _device):
            now = time.perf_counter()
            for o in state.data.offers:
                shown.setdefault(str(o.get("offer")), now)
        app.post, app.on_frame = timed_post, on_frame   # type: ignore[method-assign]
        thread = threading.Thread(target=app.run, daemon=True)
        thread.start()
        try:
            app.wait_for(lambda s: s.connected, timeout=20)
            for i in range(offers):
                vrmbox("intent", "add", "bikes", "--attr", f"n={i}", "--json", data_dir=data)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len([o for o in arrived if o in shown]) < offers:
                time.sleep(0.05)
            lat = sorted((shown[o] - t) * 1000 for o, t in arrived.items() if o in shown)
            if not lat:
                print("offer event -> frame: no offers arrived")
                return
            print(f"offer event -> frame showing it ({len(lat)} offers, real daemon/broker/vendor): "
                  f"median {statistics.median(lat):.1f} ms, max {lat[-1]:.1f} ms")
            stored = len(json.loads(vrmbox("offers", "--json", data_dir=data).stdout))
            print(f"  offers stored by the daemon: {stored}")
        finally:
            app.stop()
            for p in reversed(procs):
                p.stop()
            broker.stop()


if __name__ == "__main__":
    frames_per_second(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
    offer_to_frame(int(sys.argv[2]) if len(sys.argv) > 2 else 10)
