"""Supervising the demo's children: each in its own session (process group), dying with the demo
on Linux (PR_SET_PDEATHSIG), and stopped tier by tier: SIGTERM to the whole group, a wait,
SIGKILL for what is left, then reaped."""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1            # <linux/prctl.h>
# Stop order, for the demo itself and for its guard: front ends, vendors and the forger; the
# daemon; the broker.
TIER_FRONT, TIER_DAEMON, TIER_BROKER = 0, 1, 2


def _pdeathsig() -> None:
    """In the child before exec: die with the demo (Linux). Linux clears it when a process
    changes credentials, hence also the guard (demo/guard.py)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def child_kwargs() -> dict[str, Any]:
    kw: dict[str, Any] = {"start_new_session": True}
    if sys.platform.startswith("linux"):
        kw["preexec_fn"] = _pdeathsig
    return kw


def exited(pid: int) -> bool:
    """Has this child exited? Does not reap it: while unreaped its pid (and process group id)
    cannot be reused, so signalling the group afterwards is safe."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_tier(popens: list[subprocess.Popen], timeout: float) -> None:
    """SIGTERM each child's whole process group, wait, SIGKILL what is left of the group, reap."""
    live = [p for p in popens if p is not None and p.returncode is None]
    for p in live:
        _killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(exited(p.pid) for p in live):
        time.sleep(0.05)
    for p in live:
        if not exited(p.pid):
            log.warning("%s did not stop within %.0f s: killed", p.args[:4] if isinstance(p.args, list) else p.args,
                        timeout)
        _killpg(p.pid, signal.SIGKILL)    # the leader, and anything it started in its group
        p.wait()


