"""Run the box daemon and vendor-kit workers as real processes in tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["VRMBOX_CONFIG"] = os.devnull if "VRMBOX_CONFIG" not in os.environ else env["VRMBOX_CONFIG"]
    return env


class Proc:
    """A child process whose stdout/stderr go to a log file; waits for a READY line."""

    def __init__(self, argv: list[str], log: Path, ready: str = "READY") -> None:
        self.argv, self.log_path, self.ready = argv, log, ready
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "Proc":
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=logf, env=_env(),
                                     cwd=ROOT, start_new_session=True)
        seen = threading.Event()

        def pump() -> None:
            assert self.proc and self.proc.stdout
            for line in self.proc.stdout:
                logf.write(line)
                logf.flush()
                if line.strip() == self.ready.encode():
                    seen.set()
        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not seen.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
        if not seen.is_set():
            self.kill()
            raise RuntimeError(f"{self.argv[:4]} not ready:\n{self.log_path.read_text()[-3000:]}")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None


def box_config(tmp_path: Path, monkeypatch: Any, text: str = "# defaults only\n") -> Path:
    """Write the box's TOML config for a test and point $VRMBOX_CONFIG (hence every child) at it."""
    path = tmp_path / "vrmbox.toml"
    path.write_text(text)
    monkeypatch.setenv("VRMBOX_CONFIG", str(path))
    return path


def daemon(data_dir: Path, broker_url: str, log: Path) -> Proc:
    return Proc([sys.executable, "-m", "device.cli", "-v", "run", "--data-dir", str(data_dir),
                 "--broker", broker_url], log)


def vendor(vendor_dir: Path, broker_url: str, catalogue: Path, log: Path, *extra: str) -> Proc:
    return Proc([sys.executable, "-m", "vendor_kit.cli", "run", "--dir", str(vendor_dir), "--broker",
                 broker_url, "--catalogue", str(catalogue), *extra], log)


def vrmbox(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    """The data dir goes in $VRMBOX_DATA_DIR so ids (which may start with '-') can follow `--`."""
    env = _env()
    env["VRMBOX_DATA_DIR"] = str(data_dir)
    p = subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True, text=True,
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
