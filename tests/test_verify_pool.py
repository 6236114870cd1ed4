"""The verify pool (device/daemon/verify_pool.py) with real processes: its verdicts are the
in-process verify's, and a killed pool process loses nothing."""
from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time

import pytest

from device.daemon.verify_pool import InProcess, VerifyPool, make_verifier, pool_size
from vrm_protocol import (Countersignature, DecryptionKey, Identity, Item, Offer, ProtocolError, TermsResponse,
                          VendorProfile, sign, verify)

NOW = time.time()


def _offer(identity: Identity, i: int = 0, now: float = NOW, ttl: int = 3600) -> str:
    return sign(identity, Offer(intent="I" * 22, vendor="acme", item=Item(name=f"bike {i}"), price=100.0 + i,
                                currency="EUR", valid_until=int(now) + ttl,
                                terms_response=TermsResponse(id="terms", sha256="A" * 43, decision="accept")),
                now=now, ttl=ttl)


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def messages() -> list[tuple[bytes, type]]:
    """Good ones and every kind of bad one, each with the type it must verify as."""
    me, other = Identity.generate(), Identity.generate()
    good = _offer(me)
    h, p, s = good.split(".")
    flipped = s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1]
    header = json.loads(base64.urlsafe_b64decode(h + "=="))
    payload = json.loads(base64.urlsafe_b64decode(p + "=="))
    out = [
        (good.encode(), Offer),                                                    # good
        (_offer(me, 1).encode(), Offer),                                           # good
        (f"{h}.{p}.{flipped}".encode(), Offer),                                    # bad_signature
        (f"{h}.{_b64({**payload, 'price': 1.0})}.{s}".encode(), Offer),            # altered payload
        (f"{_b64({**header, 'alg': 'none'})}.{p}.{s}".encode(), Offer),            # bad_alg
        (f"{_b64({**header, 'kid': other.did})}.{p}.{s}".encode(), Offer),         # key mismatch
        (good.encode(), Countersignature),                                         # wrong_type
        (_offer(me, 2, now=NOW - 7200, ttl=60).encode(), Offer),                   # expired
        (_offer(me, 3, now=NOW + 7200).encode(), Offer),                           # from the future
        (b"not a token", Offer),                                                   # bad_encoding
        (b"a.b.c", Offer),
        (f"{h}.{_b64({'v': 1})}.{s}".encode(), Offer),                             # bad fields
        ("é.é.é".encode(), Offer),                                                 # not ASCII
        (sign(me, VendorProfile(vendor="acme", name="Acme", categories=["bikes"],
                                   enc_key=DecryptionKey.generate().public), now=NOW, ttl=60).encode(),
         VendorProfile),                                                           # good profile
    ]
    return out


def expected(jobs: list[tuple[bytes, type]]) -> list:
    out = []
    for payload, expect in jobs:
        try:
            out.append(verify(payload, now=NOW, expect=expect))
        except ProtocolError as exc:
            out.append((exc.reason, exc.detail))
    return out


def comparable(verdicts: list) -> list:
    return [(v.reason, v.detail) if isinstance(v, ProtocolError) else v for v in verdicts]


@pytest.fixture
def pool():
    p = VerifyPool(2)
    yield p
    p.close()


def test_pool_verdicts_equal_in_process_verify_for_good_and_every_kind_of_bad(pool):
    jobs = messages() * 3
    want = expected(jobs)
    assert sum(not isinstance(v, tuple) for v in want) == 9      # the good ones verify
    assert len({v[0] for v in want if isinstance(v, tuple)}) >= 5   # several kinds of refusal
    assert comparable(pool.verify(jobs, NOW)) == want
    assert comparable(InProcess().verify(jobs, NOW)) == want
    assert pool.verify([], NOW) == []


def test_a_batch_is_split_over_the_processes_and_comes_back_in_order(pool):
    me = Identity.generate()
    jobs = [(_offer(me, i).encode(), Offer) for i in range(101)]
    got = pool.verify(jobs, NOW)
    assert [m.body.item.name for m in got] == [f"bike {i}" for i in range(101)]


def test_a_killed_pool_process_is_replaced_and_its_batch_verified_again(pool):
    me = Identity.generate()
    jobs = [(_offer(me, i).encode(), Offer) for i in range(400)]
    want = expected(jobs)
    victim = pool.pids()[0]
    os.kill(victim, signal.SIGSTOP)      # it holds its batch and never answers ...
    result: list = []
    t = threading.Thread(target=lambda: result.append(pool.verify(jobs, NOW)))
    t.start()
    os.kill(victim, signal.SIGKILL)      # ... then dies: before or after its batch was sent
    t.join(60)
    assert not t.is_alive()
    assert comparable(result[0]) == want          # nothing lost, nothing unverified
    assert pool.restarts >= 1 and victim not in pool.pids()
    assert comparable(pool.verify(jobs[:3], NOW)) == want[:3]   # the replacement works


def test_a_pool_whose_processes_are_all_gone_still_verifies(pool):
    for pid in pool.pids():
        os.kill(pid, signal.SIGKILL)
    jobs = messages()
    assert comparable(pool.verify(jobs, NOW)) == expected(jobs)
    assert pool.restarts >= 2


def test_heal_replaces_a_process_that_died_while_idle(pool):
    victim = pool.pids()[1]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not pool._procs[1].is_alive(), what="the process gone")
    pool.heal()
    assert victim not in pool.pids() and all(p.is_alive() for p in pool._procs)
    jobs = messages()
    assert comparable(pool.verify(jobs, NOW)) == expected(jobs)


def test_a_batch_abandoned_mid_way_leaves_no_verdict_for_the_next(pool, monkeypatch):
    """A replacement that cannot start (spawn refused) makes `verify` raise while another
    process's verdicts are still on their way: the next batch must get its own verdicts,
    never those left over (found in review: they were taken for the next batch's messages)."""
    real_start, fail = VerifyPool._start, [True]

    def flaky_start(self, i):
        if fail[0]:
            fail[0] = False
            raise OSError(11, "Resource temporarily unavailable")
        real_start(self, i)
    victim = pool.pids()[1]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not pool._procs[1].is_alive(), what="the process gone")
    monkeypatch.setattr(VerifyPool, "_start", flaky_start)
    first = [(_offer(Identity.generate(), i).encode(), Offer) for i in range(4)]
    with pytest.raises(OSError):
        pool.verify(first, NOW)
    second = [(_offer(Identity.generate(), 10 + i).encode(), Offer) for i in range(4)]
    got = pool.verify(second, NOW)
    assert [m.token.encode() for m in got] == [p for p, _ in second]


def test_settle_refuses_a_verdict_for_another_message(tmp_path):
    """The intake trusts a pool verdict only for the very payload it was asked about."""
    from device.intake import Claim, Rejection
    from tests.intake_box import Box
    box = Box(tmp_path / "box")
    me = Identity.generate()
    a, b = _offer(me, 1).encode(), _offer(me, 2).encode()
    claim = Claim("t", b, "offers", "I" * 22, "acme", me.did, Offer)
    out = box.intake.settle(claim, verify(a, now=NOW, expect=Offer))
    assert isinstance(out, Rejection) and out.reason == "bad_encoding"
    box.store.close()


def test_close_stops_every_process():
    p = VerifyPool(2)
    procs = list(p._procs)
    p.close()
    assert all(not proc.is_alive() for proc in procs)
    with pytest.raises(RuntimeError):
        p.verify(messages(), NOW)
    p.close()   # twice is harmless


def test_pool_size_follows_the_setting_and_one_cpu_means_no_pool(monkeypatch):
    assert pool_size(0) == 0 and pool_size(1) == 0 and pool_size(3) == 3
    import device.daemon.verify_pool as vp
    monkeypatch.setattr(vp, "cpu_count", lambda: 1)
    assert pool_size("auto") == 0
    assert isinstance(make_verifier("auto"), InProcess)
    monkeypatch.setattr(vp, "cpu_count", lambda: 4)
    assert pool_size("auto") == 4


# ---------------------------------------------------------------- in the daemon, on a real broker
from pathlib import Path  # noqa: E402

from processes import box_config, daemon, wait_for  # noqa: E402
from test_daemon_mqtt import FAST_INTAKE, _intent_token, _publisher, all_sent_stored, status, \
    wait_until_listening  # noqa: E402
from vendor_messages import TestVendor  # noqa: E402


def verify_children(pid: int) -> list[int]:
    """The daemon's verify processes (multiprocessing's spawned children, started by any of its
    threads: /proc lists a child under the thread that made it)."""
    out = []
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += (task / "children").read_text().split()
        except FileNotFoundError:      # the thread ended
            continue
    for child in children:
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"multiprocessing" in cmd and b"resource_tracker" not in cmd:
            out.append(int(child))
    return out


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_killing_the_daemons_verify_processes_loses_no_offer(tmp_path, broker, monkeypatch):
    box_config(tmp_path, monkeypatch, FAST_INTAKE.replace("[intake]\n", "[intake]\nverify_workers = 2\n"))
    box = {"data": tmp_path / "box", "tmp": tmp_path}
    proc = daemon(box["data"], broker.url, tmp_path / "daemon.log").start()
    try:
        workers = wait_for(lambda: len(verify_children(proc.pid)) == 2 and verify_children(proc.pid),
                           what="two verify processes")
        intent_id, token = _intent_token(box)
        wait_until_listening(broker, "bikes", intent_id)
        sent: list[str] = []
        done = threading.Event()
        _publisher(broker, TestVendor("steady"), token, 150, 0.01, sent, done)
        killed = set()
        for at in (30, 80):
            wait_for(lambda: len(sent) >= at, what=f"{at} offers sent")
            victim = verify_children(proc.pid)[0]
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
        assert done.wait(90), "publisher did not finish"
        stored = all_sent_stored(box, sent)
        assert sorted(stored) == sorted(sent) and len(set(stored)) == 150   # none lost, none twice
        assert status(box)["rejected_total"] == 0                           # none refused either
        now = wait_for(lambda: len(verify_children(proc.pid)) == 2 and verify_children(proc.pid),
                       what="the pool back to two processes")
        assert not killed & set(now) and set(workers) != set(now)
        assert "starting another" in (tmp_path / "daemon.log").read_text()
    finally:
        proc.stop()
