"""Crash safety: SIGKILL a writer at random points; nothing committed is lost, the log verifies.

Run as a script this file *is* the writer: it writes profile fields and audit entries in a
loop and prints "P <field>" / "A <seq> <i>" after each commit (flushed), so the test knows
exactly what was committed before the kill.
"""
from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

KILLS = 22


def writer(data_dir: str, run: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from device.store import Store

    store = Store.open(Path(data_dir))
    print("READY", flush=True)
    i = 0
    while True:
        name = f"r{run}_f{i}"
        store.set_profile_field(name, {"run": run, "i": i, "pad": "x" * (i % 300)})
        print(f"P {name}", flush=True)
        entry = store.audit.append("crash_test", {"run": run, "i": i})
        print(f"A {entry.seq} {run}:{i}", flush=True)
        if i % 7 == 0:
            store.count_rejection("bad_signature", f"v{i % 3}")
        i += 1


def _read_until_ready(proc: subprocess.Popen, timeout: float) -> bytes:
    """Wait (bounded) for READY; return whatever the writer printed after it."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"READY\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("writer did not start in time")
        r, _, _ = select.select([proc.stdout], [], [], left)
        if r:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError("writer exited before it was ready")
            buf += chunk
    return buf.split(b"READY\n", 1)[1]


@pytest.mark.slow
def test_sigkill_loses_no_committed_entry(tmp_path):
    from device.store import Store

    rng = random.Random(int(os.environ.get("CRASH_SEED", "0")) or None)
    d = tmp_path / "box"
    Store.open(d).close()
    committed_fields: set[str] = set()
    committed_entries: dict[int, str] = {}
    for run in range(KILLS):
        proc = subprocess.Popen([sys.executable, __file__, str(d), str(run)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        try:
            rest = _read_until_ready(proc, timeout=30)
            time.sleep(rng.uniform(0.0, 0.25))
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        for line in (rest + out).decode().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "P":
                committed_fields.add(parts[1])
            elif len(parts) == 3 and parts[0] == "A":
                committed_entries[int(parts[1])] = parts[2]

        with Store.open(d) as s:
            result = s.audit.verify()
            assert result.ok, (run, result)
            profile = s.get_profile()
            missing = committed_fields - set(profile)
            assert not missing, (run, sorted(missing)[:5])
            entries = {e.seq: e for e in s.audit.entries()}
            for seq, tag in committed_entries.items():
                assert seq in entries, (run, seq)
                e = entries[seq]
                assert e.event_type == "crash_test" and f"{e.data['run']}:{e.data['i']}" == tag
    assert len(committed_entries) > KILLS  # the writer really was killed mid-stream, many times


if __name__ == "__main__":
    writer(sys.argv[1], int(sys.argv[2]))
