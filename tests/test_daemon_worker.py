"""The daemon's worker loop in-process (no broker connection is made): a message whose handling
fails is retried and its PUBACK is owed exactly once, a message the store cannot take is never
acknowledged, and the worker never blocks on itself."""
from __future__ import annotations

import sqlite3
import threading
import time

from device.config import load_config
from device.daemon.service import MAX_ATTEMPTS, Daemon, _Inbound
from device.intake import Outcome, Pre

from processes import wait_for


def make(tmp_path) -> Daemon:
    cfg = load_config(None, {"data_dir": str(tmp_path / "box"), "intake.max_queue": 2,
                             "intake.per_vendor_burst": 1}, env={})
    return Daemon(cfg)


def run_worker(d: Daemon, until) -> None:
    """Run the worker until `until()` holds, then until it has finished everything ahead of a
    barrier request, so an ack owed twice would be seen (the worker takes retries before the
    queue, and the queue in order)."""
    t = threading.Thread(target=d._work, daemon=True)
    t.start()
    wait_for(until, timeout=10, what="the acks")
    d.submit("settings", {}, "owner").result(timeout=10)   # the barrier: handled after all of it
    d._stop.set()
    t.join(5)
    assert not t.is_alive()


def test_a_failing_message_is_retried_then_acked_once(tmp_path):
    d = make(tmp_path)
    acks, calls = [], []

    def flaky(pre):
        calls.append(pre)
        if len(calls) == 1:  # the network thread fills the queue meanwhile
            while not d._queue.full():
                d._queue.put_nowait(_Inbound(Pre("t", b"", "offers", "i", "v"), mid=8, qos=1))
        if len(calls) < MAX_ATTEMPTS:
            raise sqlite3.OperationalError("database is locked")
        return Outcome("duplicate", {})
    d.intake.handle = flaky
    d._ack = lambda mid, qos, conn=0: acks.append(mid)
    d._queue.put(_Inbound(Pre("t", b"", "offers", "i", "v"), mid=7, qos=1))
    run_worker(d, lambda: 7 in acks and acks.count(8) == 2)
    assert acks.count(7) == 1 and acks.count(8) == 2   # a retry through the full queue would hang
    assert len(calls) == MAX_ATTEMPTS + 2


def test_a_message_the_store_keeps_failing_is_never_acked_and_is_retried_on_a_timer(tmp_path):
    d = make(tmp_path)
    d.storage_retry_s = 0.05
    acks, calls, events = [], [], []
    broken = threading.Event()
    broken.set()

    def handle(pre):
        calls.append(pre)
        if broken.is_set():
            raise sqlite3.OperationalError("database is locked")
        return Outcome("duplicate", {})
    d.intake.handle = handle
    d._ack = lambda mid, qos, conn=0: acks.append(mid)
    d.events.publish = events.append
    d._queue.put(_Inbound(Pre("t", b"", "offers", "i", "v"), mid=9, qos=1))
    t = threading.Thread(target=d._work, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < MAX_ATTEMPTS + 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(calls) >= MAX_ATTEMPTS + 3     # retried on the timer, past the immediate retries
        assert acks == []                         # never acknowledged while it is not stored
        assert d.status()["storage"] == "error" and d.status()["held"] == 1
        assert [e["type"] for e in events] == ["storage_error"]
        broken.clear()                            # the store works again
        while acks != [9] and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        d._stop.set()
        t.join(5)
    assert acks == [9]
    assert d.status()["storage"] == "ok" and d.status()["held"] == 0
    assert [e["type"] for e in events] == ["storage_error", "storage_ok"]


def test_a_message_that_fails_while_the_store_works_is_dropped_after_the_attempts(tmp_path):
    d = make(tmp_path)
    acks = []

    def broken(pre):
        raise KeyError("a bug its content triggers")
    d.intake.handle = broken
    d._ack = lambda mid, qos, conn=0: acks.append(mid)
    d._queue.put(_Inbound(Pre("t", b"", "offers", "i", "v"), mid=9, qos=1))
    run_worker(d, lambda: acks == [9])
    assert acks == [9]        # the broker's in-flight slot is freed, not held forever
    assert d.status()["storage"] == "ok"
