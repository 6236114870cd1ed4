"""The demo's guard: stops the demo's children if the demo dies without doing it (SIGKILL, crash).

Why a process and not only PR_SET_PDEATHSIG: Linux clears the parent-death signal when a process
changes credentials, and a Mosquitto started as root drops to its own account, so a SIGKILLed
demo would leave its broker behind. The guard runs in its own session; the demo writes one line
`TIER PGID` per child process group to the guard's stdin and `done` when it has stopped them
itself. End of input without `done` means the demo is gone: the guard sends SIGTERM to the
groups tier by tier (lowest first: vendors and front ends, the daemon, the broker), waits for
each tier, then SIGKILLs what is left; a line `remove PATH` names the demo's temporary folder,
which it then deletes too.

    python -m demo.guard < pipe
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time

TIER_WAIT_S = 10.0


def parse(lines: list[str]) -> tuple[dict[int, list[int]], bool, list[str]]:
    """The groups by tier, whether the demo said `done`, and folders to remove. Malformed lines
    are ignored."""
    tiers: dict[int, list[int]] = {}
    done = False
    remove = []
    for line in lines:
        parts = line.split()
        if parts == ["done"]:
            done = True
        elif line.startswith("remove /"):
            remove.append(line[len("remove "):].rstrip("\n"))
        elif len(parts) == 2 and all(p.isdigit() for p in parts) and int(parts[1]) > 1:
            tiers.setdefault(int(parts[0]), []).append(int(parts[1]))
    return tiers, done, remove


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _signal(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_groups(tiers: dict[int, list[int]], wait: float = TIER_WAIT_S) -> None:
    for tier in sorted(tiers):
        groups = tiers[tier]
        for g in groups:
            _signal(g, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_alive(g) for g in groups):
            time.sleep(0.05)
        for g in groups:
            _signal(g, signal.SIGKILL)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # a terminal's Ctrl-C is for the demo
    lines = []
    for line in sys.stdin:                          # until the demo closes the pipe or dies
        lines.append(line)
    tiers, done, remove = parse(lines)
    if not done:
        stop_groups(tiers)
        for path in remove:
            shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
