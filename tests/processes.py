"""Run the box daemon and vendor-kit workers as real processes in tests."""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from provisioning import launch
from provisioning.launch import ROOT, python_module

__all__ = ["ROOT", "Proc", "box_config", "daemon", "vendor", "vrmbox", "vrm_vendor", "wait_for", "bike_vendor",
           "kill_broker", "widen_autosave", "vendor_offers", "receipted", "stored_offers"]


def _env() -> dict[str, str]:
    """A child's environment in a test: never the machine's /etc/vrmbox/config.toml."""
    env = launch.child_env()
    env["VRMBOX_CONFIG"] = os.environ.get("VRMBOX_CONFIG", os.devnull)
    return env


class Proc(launch.Proc):
    """A launcher Proc with the test environment (read at start)."""

    def environment(self) -> dict[str, str]:
        return _env()


def box_config(tmp_path: Path, monkeypatch: Any, text: str = "# defaults only\n") -> Path:
    """Write the box's TOML config for a test and point $VRMBOX_CONFIG (hence every child) at it."""
    path = tmp_path / "vrmbox.toml"
    path.write_text(text)
    monkeypatch.setenv("VRMBOX_CONFIG", str(path))
    return path


def daemon(data_dir: Path, broker_url: str, log: Path) -> Proc:
    return Proc(python_module("vrmbox", "-v", "run", "--data-dir", str(data_dir),
                              "--broker", broker_url), log)


def vendor(vendor_dir: Path, broker_url: str, catalogue: Path, log: Path, *extra: str) -> Proc:
    return Proc(python_module("vendor_kit.cli", "run", "--dir", str(vendor_dir), "--broker",
                              broker_url, "--catalogue", str(catalogue), *extra), log)


def vrmbox(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    """The data dir goes in $VRMBOX_DATA_DIR so ids (which may start with '-') can follow `--`."""
    env = _env()
    env["VRMBOX_DATA_DIR"] = str(data_dir)
    p = subprocess.run([sys.executable, "-m", "vrmbox", *args], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"vrmbox {' '.join(args)} failed: {p.stdout}{p.stderr}")
    return p


def vrm_vendor(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "vendor_kit.cli", *args], capture_output=True, text=True,
                       env=_env(), cwd=ROOT, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"vrm-vendor {' '.join(args)} failed: {p.stdout}{p.stderr}")
    return p


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def bike_vendor(tmp_path: Path, broker_url: str, slug: str = "alpha", price: float = 500.0,
                extra: tuple[str, ...] = ()) -> Proc:
    """A vendor-kit worker (identity made, not yet started) that answers every bikes intent with
    one Roadster at `price` and accepts any terms; `extra`: more `vrm-vendor run` options."""
    import yaml
    vdir = tmp_path / f"vendor-{slug}"
    vrm_vendor("init", "--dir", str(vdir), "--vendor", slug, "--name", slug.title(), "--categories", "bikes")
    cat = tmp_path / f"{slug}.yaml"
    cat.write_text(yaml.safe_dump({"currency": "EUR", "accept_terms": "*", "offer_validity_s": 86400,
                                   "items": [{"category": "bikes", "name": "Roadster", "sku": f"{slug}-1",
                                              "price": price}]}))
    return vendor(vdir, broker_url, cat, tmp_path / f"vendor-{slug}.log", *extra)


def kill_broker(broker: Any) -> None:
    """SIGKILL the broker (no save on the way out, unlike stop()); start() brings it back on the
    same port and persistence folder."""
    if broker.proc is None:
        return
    broker.proc.send_signal(signal.SIGKILL)
    broker.proc.wait(timeout=10)
    broker._reap()


def widen_autosave(broker: Any, seconds: int) -> None:
    """Make the broker save its persistence only every `seconds` (takes effect at its next
    start): a test can then lose what it acknowledged deterministically, not by a race."""
    text = broker.conf.read_text()
    broker.conf.write_text(re.sub(r"(?m)^autosave_interval .*$", f"autosave_interval {seconds}", text))


def vendor_offers(vendor_dir: Path) -> list[dict[str, Any]]:
    """The vendor's ledger, read-only: each offer sent, whether the broker and the box took it."""
    path = Path(vendor_dir) / "ledger.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT offers.id, offers.intent, offers.receipted_at, offers.resends, outbox.sent_at "
                          "FROM offers LEFT JOIN outbox ON outbox.id = offers.id").fetchall()
    except sqlite3.OperationalError:   # not set up yet
        return []
    finally:
        db.close()
    return [{"id": r[0], "intent": r[1], "receipted": r[2] is not None, "resends": r[3], "sent": r[4] is not None}
            for r in rows]


receipted = vendor_offers


def stored_offers(data_dir: Path) -> list[tuple[str, str]]:
    """(intent, offer id) of every offer in the box's store (read while the daemon runs)."""
    from device.store import Store
    with Store.open(data_dir) as s:
        return [(o.intent_id, o.offer_id) for o in s.list_offers()]
