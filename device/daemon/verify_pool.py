"""Signature checks on every core: a pool of verify processes fed in batches.

Why processes: an Ed25519 check is the one cost per offer that cannot be avoided, and one
Python process verifies on one core. Each pool process takes a batch of (raw payload, expected
type) and sends back one compact verdict per message: the verified `Message` (unpickled here in
a few µs, next to ~150 µs of verify) or the refusal's (reason, detail). The parent never verifies
again what a verdict covers, and the store keeps its one writer (the daemon's worker thread).

A pool process that dies is replaced, and the batch it held is verified again by its
replacement (after MAX_DEATHS deaths on the same batch, in-process): nothing is lost and
nothing passes unverified. With one CPU (or `intake.verify_workers` 0 or 1) there is no pool:
`make_verifier` returns the in-process verifier, exactly today's cost.
"""
from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from typing import Any, Sequence

from vrm_protocol import Message, ProtocolError, verify

log = logging.getLogger(__name__)

MAX_DEATHS = 3          # deaths of pool processes on one batch before it is verified in-process
HUNG_S = 10.0           # no verdicts for this long: the process is hung, replaced like a dead one
Job = tuple[bytes, type]                  # raw payload, the message type it must verify as
Verdict = Message | ProtocolError


def cpu_count() -> int:
    """CPUs this process may run on (its affinity), not the machine's total."""
    counter = getattr(os, "process_cpu_count", None)        # 3.13+
    if counter is not None:
        return counter() or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:                                  # not on Linux
        return os.cpu_count() or 1


def pool_size(setting: int | str) -> int:
    """`intake.verify_workers`: "auto" = one per CPU this process may use; 0 or 1 = none."""
    n = cpu_count() if setting == "auto" else int(setting)
    return n if n >= 2 else 0


def _verdict(payload: bytes, expect: type, now: float) -> Any:
    """Verify one message: the Message, or (reason, detail) of its refusal (small to send)."""
    try:
        return verify(payload, now=now, expect=expect)
    except ProtocolError as exc:
        return (exc.reason, exc.detail)


def _serve(conn: multiprocessing.connection.Connection) -> None:
    """A pool process: batches in, verdicts out, until the parent closes its end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)        # the parent decides when we stop
    while True:
        try:
            got = conn.recv()
        except (EOFError, OSError):
            return
        if got is None:
            return
        seq, now, jobs = got
        conn.send((seq, [_verdict(p, t, now) for p, t in jobs]))


def _as_verdict(raw: Any) -> Verdict:
    if isinstance(raw, tuple):
        return ProtocolError(*raw)
    return raw


class InProcess:
    """No pool: verify on the calling thread."""

    size = 0

    def verify(self, jobs: Sequence[Job], now: float) -> list[Verdict]:
        return [_as_verdict(_verdict(p, t, now)) for p, t in jobs]

    def heal(self) -> None:
        pass

    def close(self) -> None:
        pass


class VerifyPool:
    """`size` verify processes. `verify` splits a batch among them and waits for all verdicts
    (one caller at a time: the daemon's dispatcher thread)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one process")
        self.size = size
        self._ctx = multiprocessing.get_context("spawn")   # the daemon has threads: never fork
        self._lock = threading.Lock()
        self._closed = False
        self._procs: list[Any] = [None] * size
        self._conns: list[Any] = [None] * size
        self.restarts = 0
        self._seq = 0      # each batch sent is tagged: a reply to an older one is never taken for it
        for i in range(size):
            self._start(i)

    def _start(self, i: int) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_serve, args=(child,), name=f"vrmbox-verify-{i}", daemon=True)
        proc.start()
        child.close()
        self._procs[i], self._conns[i] = proc, parent

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def _replace(self, i: int) -> None:
        proc, conn = self._procs[i], self._conns[i]
        conn.close()
        proc.join(timeout=1)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=1)
        log.warning("verify process %s ended (exit %s); starting another", proc.pid, proc.exitcode)
        self.restarts += 1
        self._start(i)

    def verify(self, jobs: Sequence[Job], now: float) -> list[Verdict]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the verify pool is closed")
            n = len(jobs)
            if n == 0:
                return []
            step = -(-n // min(self.size, n))
            chunks = [(a, list(jobs[a:a + step])) for a in range(0, n, step)]   # chunk i -> process i
            out: list[Any] = [None] * n
            deaths = [0] * len(chunks)
            pending: set[int] = set()
            tags = [0] * len(chunks)

            def dispatch(i: int) -> None:
                start, chunk = chunks[i]
                while deaths[i] < MAX_DEATHS:
                    try:
                        self._seq += 1
                        tags[i] = self._seq
                        self._conns[i].send((tags[i], now, chunk))
                        pending.add(i)
                        return
                    except OSError:
                        deaths[i] += 1
                        self._replace(i)
                log.error("verify processes died %d times on one batch; verifying it in-process",
                          deaths[i])
                out[start:start + len(chunk)] = [_as_verdict(_verdict(p, t, now)) for p, t in chunk]

            for i in range(len(chunks)):
                dispatch(i)
            while pending:
                by_handle = {self._conns[i]: i for i in pending}
                by_handle.update({self._procs[i].sentinel: i for i in pending})
                ready = multiprocessing.connection.wait(list(by_handle), timeout=HUNG_S)
                if not ready:   # hung, not dead: replaced, and its batch sent again
                    for i in sorted(pending):
                        log.error("verify process %s gave no verdicts in %.0f s", self._procs[i].pid, HUNG_S)
                        pending.discard(i)
                        deaths[i] += 1
                        self._replace(i)
                        dispatch(i)
                    continue
                for i in sorted({by_handle[r] for r in ready}):
                    start, chunk = chunks[i]
                    conn = self._conns[i]
                    pending.discard(i)
                    try:
                        if not conn.poll():          # its sentinel fired: it died, no verdicts
                            raise EOFError("the verify process ended")
                        tag, verdicts = conn.recv()
                    except (EOFError, OSError, TypeError, ValueError):
                        deaths[i] += 1
                        self._replace(i)
                        dispatch(i)                  # its whole batch again: nothing lost
                        continue
                    if tag != tags[i]:               # left over from a batch abandoned earlier
                        pending.add(i)
                        continue
                    if not isinstance(verdicts, list) or len(verdicts) != len(chunk):
                        deaths[i] += 1
                        self._replace(i)
                        dispatch(i)
                        continue
                    out[start:start + len(chunk)] = [_as_verdict(v) for v in verdicts]
            return out

    def heal(self) -> None:
        """Replace any process that died while idle (called when there is nothing to verify),
        so a flood does not find the pool short."""
        with self._lock:
            if self._closed:
                return
            for i, proc in enumerate(self._procs):
                if not proc.is_alive():
                    self._replace(i)

    def close(self) -> None:
        """Ask each process to stop, then make sure it has."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for conn in self._conns:
                try:
                    conn.send(None)
                except OSError:
                    pass
            for proc, conn in zip(self._procs, self._conns):
                proc.join(timeout=2)
                if proc.is_alive():
                    proc.kill()
                    proc.join(timeout=1)
                conn.close()


def make_verifier(setting: int | str) -> InProcess | VerifyPool:
    n = pool_size(setting)
    if n == 0:
        log.info("signature checks in-process (one CPU or intake.verify_workers <= 1)")
        return InProcess()
    log.info("signature checks in a pool of %d processes", n)
    return VerifyPool(n)

