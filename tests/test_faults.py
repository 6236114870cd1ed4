"""Fault tests: the box never acknowledges what it has not stored.

A full disk is met three ways: an injected OSError(ENOSPC) in the store's offer write, a real
SQLITE_FULL from SQLite itself (the database held to its current size with max_page_count), and,
when the suite runs as root, a real small tmpfs as the data dir of the real daemon process on a
real Mosquitto. In each: the daemon stops acknowledging, says so (status, event stream, log),
loses nothing already stored, and catches up by itself, storing every offer exactly once.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import queue
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device.config import load_config
from device.daemon.service import Daemon, _Inbound
from device.intake import Pre
from device.store import Store
from vrm_protocol import TermsResponse, sign, topics
from vrm_protocol.codec import unverified_payload

from processes import box_config, daemon, vrmbox, wait_for
from vendor_messages import TestVendor

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

N = 40


def _until(pred, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Box:
    """A daemon in-process (no broker connection): its real worker, store and intake; the
    PUBACKs it sends are recorded instead of going to a broker."""

    def __init__(self, tmp_path: Path) -> None:
        cfg = load_config(None, {"data_dir": str(tmp_path / "box"), "intake.max_queue": 100,
                                 "intake.per_vendor_per_minute": 100000, "intake.per_vendor_burst": 100,
                                 "intake.max_offers_per_vendor_intent": 1000}, env={})
        self.d = d = Daemon(cfg)
        d.storage_retry_s = 0.05
        self.acks: list[int] = []
        self.events: list[dict] = []
        d._ack = lambda mid, qos, conn=0: self.acks.append(mid)
        d.events.publish = self.events.append
        self.intent = d.market.add_intent("bikes", {"budget_max": 800})["intent"]
        self.token = d.store.get_intent(self.intent).token
        d.intake.refresh()
        self.vendor = TestVendor("acme")
        pre = d.intake.precheck(topics.vendor_profile("acme"), self.vendor.profile().encode())
        assert d.intake.handle(pre).kind == "profile"
        self.by_mid: dict[int, str] = {}
        self.thread = threading.Thread(target=d._work, daemon=True)

    def offer(self, mid: int) -> None:
        token = self.vendor.offer(self.token, price=100 + mid)
        pre = self.d.intake.precheck(topics.offers(self.intent), token.encode())
        assert isinstance(pre, Pre), pre
        self.by_mid[mid] = unverified_payload(token)["id"]
        self.d._put(_Inbound(pre, mid=mid, qos=1))

    def stored(self) -> list[str]:
        """What is committed, read on a connection of its own."""
        with Store.open(self.d.cfg.data_dir) as s:
            return [o.offer_id for o in s.list_offers(self.intent)]

    def stop(self) -> None:
        self.d._stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.d.store.close()


def _check_pause_and_catch_up(box: Box, release) -> None:
    """Offers arrive while the store cannot write; then space returns."""
    box.thread.start()
    try:
        for mid in range(1, N + 1):
            box.offer(mid)
        _until(lambda: box.d.status()["storage"] == "full", what="status to say full")
        time.sleep(0.3)   # the worker keeps retrying: still nothing acknowledged that is not stored
        assert box.d.status()["storage"] == "full"
        stored = set(box.stored())
        assert {box.by_mid[m] for m in box.acks} <= stored      # acked => stored
        assert len(box.acks) < N and box.d.status()["held"] >= 1
        assert [e["type"] for e in box.events if e["type"].startswith("storage")] == ["storage_full"]
        release()
        _until(lambda: len(box.acks) == N, what="every offer acknowledged")
    finally:
        box.stop()
    with Store.open(box.d.cfg.data_dir) as s:
        ids = [o.offer_id for o in s.list_offers(box.intent)]
    assert sorted(box.acks) == list(range(1, N + 1))             # each acknowledged once
    assert sorted(ids) == sorted(box.by_mid.values())            # all stored, none twice
    assert box.d.status()["storage"] == "ok"
    assert [e["type"] for e in box.events if e["type"].startswith("storage")] == \
        ["storage_full", "storage_ok"]
    offers = [e for e in box.events if e["type"] == "offer"]
    assert sorted(e["offer"] for e in offers) == sorted(ids)     # each announced once


def test_injected_enospc_pauses_intake_and_it_catches_up(tmp_path, caplog):
    box = Box(tmp_path)
    real = box.d.store.add_offer
    full = threading.Event()
    calls = {"n": 0}

    def add_offer(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 6:   # the disk fills after five offers
            full.set()
        if full.is_set():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **kw)
    box.d.store.add_offer = add_offer
    with caplog.at_level("WARNING", logger="device.daemon.service"):
        _check_pause_and_catch_up(box, full.clear)
    assert calls["n"] > N                    # retried on its timer
    assert any("is full" in r.getMessage() for r in caplog.records)
    assert any("resumed" in r.getMessage() for r in caplog.records)


def test_a_real_sqlite_full_pauses_intake_and_it_catches_up(tmp_path):
    box = Box(tmp_path)
    conn = box.d.store._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")   # SQLite's own SQLITE_FULL from here on
    _check_pause_and_catch_up(box, lambda: conn.execute("PRAGMA max_page_count = 1073741823"))


# ---------------------------------------------------------------- group commit
def _queue_then_run(box: Box, n: int) -> None:
    """n offers queued before the worker starts: the worker finds them all waiting."""
    for mid in range(1, n + 1):
        box.offer(mid)
    box.thread.start()


def test_queued_offers_are_stored_in_few_commits_and_acked_after_them(tmp_path):
    box = Box(tmp_path)
    box.d._queue = queue.Queue()                         # unbounded here: all 150 wait together
    commits: list[int] = []                              # acks seen at each COMMIT
    box.d.store._conn.set_trace_callback(
        lambda sql: commits.append(len(box.acks)) if sql.strip().upper() == "COMMIT" else None)
    _queue_then_run(box, 150)
    try:
        _until(lambda: len(box.acks) == 150, what="all acknowledged")
    finally:
        box.stop()
    assert sorted(box.acks) == list(range(1, 151))
    assert sorted(box.stored()) == sorted(box.by_mid.values())
    assert 3 <= len(commits) <= 10                       # 150 offers, at most BATCH_MAX a commit
    assert commits[0] == 0                               # nothing acknowledged before a commit


def test_a_refused_offer_in_a_batch_writes_nothing_and_the_rest_commit(tmp_path):
    box = Box(tmp_path)
    box.offer(1)
    box.offer(2)
    body = box.vendor.offer_body(box.token, price=5)
    body = dataclasses.replace(body, terms_response=TermsResponse(
        id=body.terms_response.id, sha256="A" * 43, decision="accept"))   # other terms: refused
    wrong = sign(box.vendor.identity, body, now=time.time(), ttl=3600)
    box.d._put(_Inbound(box.d.intake.precheck(topics.offers(box.intent), wrong.encode()), mid=3, qos=1))
    box.offer(4)
    box.thread.start()
    try:
        _until(lambda: len(box.acks) == 4, what="all acknowledged")
    finally:
        box.stop()
    assert sorted(box.acks) == [1, 2, 3, 4]
    assert sorted(box.stored()) == sorted([box.by_mid[1], box.by_mid[2], box.by_mid[4]])
    assert [e["reason"] for e in box.events if e["type"] == "rejected"] == ["terms_mismatch"]


def test_a_message_failing_mid_batch_does_not_cost_the_others(tmp_path):
    box = Box(tmp_path)
    real = box.d.intake.handle
    bad: dict[str, str] = {}

    def handle(pre):
        out = real(pre)                                  # its writes and memory happen first
        if pre.msg is not None and pre.msg.id == bad.get("id"):
            raise KeyError("a bug this message triggers, after its writes")
        return out
    box.d.intake.handle = handle
    for mid in range(1, 11):
        box.offer(mid)
    bad["id"] = box.by_mid[5]
    box.thread.start()
    try:
        for mid in range(11, 61):                        # and more keep coming meanwhile
            box.offer(mid)
        _until(lambda: len(box.acks) == 60, what="all acknowledged")
    finally:
        box.stop()
    assert sorted(box.acks) == list(range(1, 61))        # each once; the bad one dropped at last
    assert sorted(box.stored()) == sorted(v for m, v in box.by_mid.items() if m != 5)


# ---------------------------------------------------------------- the real daemon on a real tmpfs
FAST = """
[intake]
per_vendor_per_minute = 100000
per_vendor_burst = 1000
max_offers_per_vendor_intent = 1000
"""


def _status(data: Path) -> dict:
    return json.loads(vrmbox("status", "--json", data_dir=data).stdout)


def _fill(path: Path) -> None:
    """Fill the file system `path` is on, to the last byte (unbuffered writes, halving the size)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        size = 1 << 20
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                size //= 2
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (the in-process tests "
                    "above inject ENOSPC instead)")
def test_real_daemon_on_a_full_tmpfs_acks_nothing_it_lost(tmp_path, broker, monkeypatch):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    box_config(tmp_path, monkeypatch, FAST)
    data = mnt / "box"
    proc = daemon(data, broker.url, tmp_path / "daemon.log")
    c = None
    try:
        proc.start()
        intent = json.loads(vrmbox("intent", "add", "bikes", "--json", data_dir=data).stdout)["intent"]
        with Store.open(data) as s:
            token = s.get_intent(intent).token
        vendor = TestVendor("acme")
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}",
                        protocol=mqtt.MQTTv5)
        c.connect(broker.host, broker.port)
        c.loop_start()
        c.publish(topics.vendor_profile("acme"), vendor.profile(), qos=1, retain=True).wait_for_publish(5)
        def pinned() -> bool:
            with Store.open(data) as s:
                return any(v.vendor == "acme" for v in s.list_vendors())
        wait_for(pinned, what="the vendor pinned")
        filler = mnt / "filler"
        _fill(filler)
        sent: list[str] = []
        for i in range(N):
            t = vendor.offer(token, price=100 + i)
            sent.append(unverified_payload(t)["id"])
            c.publish(topics.offers(intent), t, qos=1).wait_for_publish(5)   # the broker has it
        wait_for(lambda: _status(data)["storage"] == "full", what="status to say full")
        log_text = (tmp_path / "daemon.log").read_text()
        assert "intake paused" in log_text
        # Still paused after a retry: the daemon logs each retry that finds the store still full.
        retried = log_text.count("storage still full")
        wait_for(lambda: (tmp_path / "daemon.log").read_text().count("storage still full") > retried,
                 what="a retry of the full store")
        assert _status(data)["storage"] == "full"       # still paused: not given up, not acked
        filler.unlink()                                 # space returns
        wait_for(lambda: _status(data)["storage"] == "ok", timeout=60, what="storage ok again")

        def stored() -> list[str]:
            with Store.open(data) as s:
                return [o.offer_id for o in s.list_offers(intent)]
        wait_for(lambda: len(stored()) >= N, timeout=60, what=f"{N} offers stored")
        # Any duplicate has arrived once a marker sent after every offer, on the same connection,
        # has been refused (not a JWS: bad_encoding): the broker delivers to the box in order.
        refused = _status(data)["rejected_total"]
        c.publish(topics.offers(intent), b"marker", qos=1).wait_for_publish(5)
        wait_for(lambda: _status(data)["rejected_total"] > refused, what="the marker refused")
        ids = stored()
        assert sorted(ids) == sorted(sent) and len(ids) == len(set(ids)) == N
        assert "intake resumed" in (tmp_path / "daemon.log").read_text()
        assert json.loads(vrmbox("audit", "verify", "--json", data_dir=data).stdout)["ok"]
    finally:
        if c is not None:
            c.loop_stop()
            c.disconnect()
        proc.stop()
        subprocess.run(["umount", "-l", str(mnt)], check=False)
