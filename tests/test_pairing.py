"""Pairing codes and paired phones (device/pairing.py) on a real encrypted Store on disk."""
from __future__ import annotations

import math

import pytest

from device import pairing
from device.pairing import PairingError
from device.store import Store

NOW = 1_800_000_000


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    s = Store.open(tmp_path / "box", clock=clock)
    yield s
    s.close()


def events(store: Store) -> list[str]:
    return [e.event_type for e in store.audit.entries()]


def wrong(code: str) -> str:
    return code[:-1] + str((int(code[-1]) + 1) % 10)


def test_code_shape_and_entropy(store):
    codes = {pairing.new_code(store)["code"] for _ in range(50)}
    assert len(codes) == 50
    for c in codes:
        assert len(c) == pairing.CODE_DIGITS and c.isdigit()
    assert math.log2(10 ** pairing.CODE_DIGITS) >= 30


def test_code_stored_only_as_hash(store):
    code = pairing.new_code(store)["code"]
    state = store.get_setting(pairing.CODE_SETTING)
    assert code not in repr(state)
    assert set(state) == {"hash", "expires", "failures", "clients", "last_failure"}
    assert state["expires"] == NOW + pairing.CODE_TTL_S


def test_pair_once_then_code_is_used_up(store):
    code = pairing.new_code(store)["code"]
    done = pairing.complete(store, pairing.format_code(code), "Ann's phone", client="10.0.0.5")
    assert done["phone"].startswith("ph-") and len(done["secret"]) >= 40
    again = pairing.complete(store, code, "thief")
    assert again["refused"] == "no_code"
    assert [p["name"] for p in pairing.list_phones(store)] == ["Ann's phone"]
    assert "phone_paired" in events(store)
    # the secret is never stored, only its hash
    assert done["secret"] not in repr(store.get_setting(pairing.PHONES_SETTING))


def test_code_expires_after_five_minutes(store, clock):
    code = pairing.new_code(store)["code"]
    clock.t += pairing.CODE_TTL_S
    assert pairing.complete(store, code, "late")["refused"] == "expired"
    assert pairing.list_phones(store) == []


def test_a_new_code_replaces_the_old(store):
    first = pairing.new_code(store)["code"]
    second = pairing.new_code(store)["code"]
    assert first != second
    assert pairing.complete(store, first, "x")["refused"] == "wrong_code"
    assert "phone" in pairing.complete(store, second, "x")


def test_wrong_codes_lock_out_the_client_then_spend_the_code(store):
    """Per-client and total limits (tests/test_pairing_lockout.py has the strangers' cases)."""
    code = pairing.new_code(store)["code"]
    for i in range(pairing.MAX_CLIENT_FAILURES - 1):
        r = pairing.complete(store, wrong(code), "x", client="10.0.0.9")
        assert r == {"refused": "wrong_code", "retry_after": 0, "message": r["message"]}
    r = pairing.complete(store, wrong(code), "x", client="10.0.0.9")
    assert r["refused"] == "wrong_code" and 0 < r["retry_after"] <= pairing.CODE_TTL_S
    # this client is locked for this code, even with the right one
    assert pairing.complete(store, code, "x", client="10.0.0.9")["refused"] == "locked"
    assert events(store).count("pairing_failed") == pairing.MAX_CLIENT_FAILURES


@pytest.mark.parametrize("bad", ["", "123", "12345678901", "abcdefghij", "１２３４５６７８９０", None, 5,
                                 "1" * 1000])
def test_malformed_codes_count_as_wrong_and_never_crash(store, bad):
    pairing.new_code(store)
    assert pairing.complete(store, bad, "x")["refused"] == "wrong_code"


@pytest.mark.parametrize("name", ["", "   ", "a" * 65, "bad\nname", None, 3])
def test_phone_name_checked(store, name):
    code = pairing.new_code(store)["code"]
    with pytest.raises(PairingError, match="phone name"):
        pairing.complete(store, code, name)
    assert "phone" in pairing.complete(store, code, "fine")     # the code was not used up


def test_session_and_last_seen(store, clock):
    code = pairing.new_code(store)["code"]
    done = pairing.complete(store, code, "Ann")
    me = pairing.session(store, done["secret"])
    assert me == {"phone": done["phone"], "name": "Ann", "created": NOW, "last_seen": NOW}
    n = len(events(store))
    clock.t += 10
    assert pairing.session(store, done["secret"])["last_seen"] == NOW   # not rewritten every request
    assert len(events(store)) == n
    clock.t += pairing.LAST_SEEN_RESOLUTION_S
    assert pairing.session(store, done["secret"])["last_seen"] == clock.t
    for bad in ("", "nope", done["secret"] + "x", None, "x" * 300):
        with pytest.raises(PairingError, match="not a paired phone"):
            pairing.session(store, bad)


def test_unpair_kills_the_session(store):
    a = pairing.complete(store, pairing.new_code(store)["code"], "A")
    b = pairing.complete(store, pairing.new_code(store)["code"], "B")
    assert pairing.unpair(store, a["phone"]) == {"phone": a["phone"], "unpaired": True}
    with pytest.raises(PairingError, match="not a paired phone"):
        pairing.session(store, a["secret"])
    assert pairing.session(store, b["secret"])["phone"] == b["phone"]
    with pytest.raises(PairingError, match="no paired phone"):
        pairing.unpair(store, a["phone"])
    assert "phone_unpaired" in events(store)
    assert store.audit.verify().ok


def test_phones_survive_reopen(tmp_path, clock):
    s = Store.open(tmp_path / "box", clock=clock)
    done = pairing.complete(s, pairing.new_code(s)["code"], "Ann")
    s.close()
    s = Store.open(tmp_path / "box", clock=clock)
    try:
        assert pairing.session(s, done["secret"])["name"] == "Ann"
    finally:
        s.close()


def test_phone_limit(store, monkeypatch):
    monkeypatch.setattr(pairing, "MAX_PHONES", 2)
    for name in ("A", "B"):
        pairing.complete(store, pairing.new_code(store)["code"], name)
    with pytest.raises(PairingError, match="at most 2 phones"):
        pairing.complete(store, pairing.new_code(store)["code"], "C")
