"""Pairing that strangers cannot close (device/pairing.py): wrong codes are limited per client and
per code, a code made on the box starts clean whatever strangers did, and the lockout shows in
`pairing_status` (the box's status screen) and `vrmbox status`. A real Store on disk; the last
test goes through the phone app and a real daemon, as a stranger on the Wi-Fi would."""
from __future__ import annotations

import json

import pytest

from device import pairing
from device.client import call
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


def wrong(code: str, i: int = 1) -> str:
    return code[:-1] + str((int(code[-1]) + i) % 10)


def failures_audited(store: Store) -> int:
    return sum(e.event_type == "pairing_failed" for e in store.audit.entries())


def test_five_wrong_codes_from_two_strangers_do_not_stop_the_owners_code(store):
    code = pairing.new_code(store)["code"]
    for client, n in (("10.0.0.66", 3), ("10.0.0.67", 2)):
        for i in range(n):
            assert pairing.complete(store, wrong(code, i + 1), "x", client=client)["refused"] == "wrong_code"
    done = pairing.complete(store, code, "Ann's phone", client="10.0.0.5")
    assert done["phone"].startswith("ph-")
    # and a fresh code after five more from the same two works from either of their addresses too
    code = pairing.new_code(store)["code"]
    for client in ("10.0.0.66",) * 3 + ("10.0.0.67",) * 2:
        pairing.complete(store, wrong(code), "x", client=client)
    assert "phone" in pairing.complete(store, code, "Ann's tablet", client="10.0.0.67")


def test_a_client_is_locked_for_this_code_only(store):
    code = pairing.new_code(store)["code"]
    for _ in range(pairing.MAX_CLIENT_FAILURES):
        pairing.complete(store, wrong(code), "x", client="10.0.0.66")
    locked = pairing.complete(store, code, "x", client="10.0.0.66")
    assert locked["refused"] == "locked" and 0 < locked["retry_after"] <= pairing.CODE_TTL_S
    assert "fresh code" in locked["message"]
    assert "phone" in pairing.complete(store, code, "owner", client="10.0.0.5")   # others may
    code = pairing.new_code(store)["code"]
    assert "phone" in pairing.complete(store, code, "x", client="10.0.0.66")       # a fresh code


def test_strangers_spend_a_code_then_a_fresh_one_from_the_box_works(store):
    code = pairing.new_code(store)["code"]
    clients = pairing.MAX_CODE_FAILURES // pairing.MAX_CLIENT_FAILURES
    for c in range(clients):
        for i in range(pairing.MAX_CLIENT_FAILURES):
            r = pairing.complete(store, wrong(code, i + 1), "x", client=f"10.0.1.{c}")
            assert r["refused"] == "wrong_code"
    assert "fresh one" in r["message"]
    view = pairing.lockout(store)
    assert view["code"] == "spent" and view["failures"] == pairing.MAX_CODE_FAILURES
    assert view["clients_locked"] == clients
    # spent: no guess is checked any more, not even the right one from a new address
    spent = pairing.complete(store, code, "owner", client="10.0.0.5")
    assert spent["refused"] == "spent" and "fresh one" in spent["message"]
    assert failures_audited(store) == pairing.MAX_CODE_FAILURES
    fresh = pairing.new_code(store)["code"]
    assert pairing.lockout(store) == {**pairing.lockout(store), "code": "active", "failures": 0,
                                      "clients_locked": 0}
    assert "phone" in pairing.complete(store, fresh, "owner", client="10.0.1.0")


def test_guesses_checked_against_one_code_are_bounded_however_many_addresses(store):
    code = pairing.new_code(store)["code"]
    checked = 0
    for c in range(100):                                # an attacker with 100 addresses
        for i in range(10):
            r = pairing.complete(store, wrong(code, i % 9 + 1), "x", client=f"fd00::{c:x}")
            checked += r["refused"] == "wrong_code"
    assert checked == pairing.MAX_CODE_FAILURES == failures_audited(store)
    state = store.get_setting(pairing.CODE_SETTING)
    assert len(state["clients"]) <= pairing.MAX_CODE_FAILURES      # what it keeps is bounded too
    # the bound the module's docstring states: one code falls with probability <= 3e-8
    assert pairing.MAX_CODE_FAILURES / 10 ** pairing.CODE_DIGITS <= 3e-8
    assert "3e-8" in pairing.__doc__ and "300 / 10**10" in pairing.__doc__


def test_no_guess_is_counted_without_a_live_code(store, clock):
    assert pairing.complete(store, "1234567890", "x", client="10.0.0.66")["refused"] == "no_code"
    code = pairing.new_code(store)["code"]
    clock.t += pairing.CODE_TTL_S
    for _ in range(pairing.MAX_CLIENT_FAILURES + 1):
        assert pairing.complete(store, wrong(code), "x", client="10.0.0.66")["refused"] == "expired"
    assert failures_audited(store) == 0
    assert pairing.lockout(store)["code"] == "expired"


@pytest.mark.parametrize("client", ["", "   ", "a" * (pairing.MAX_CLIENT_ID + 1), "10.0.0.1\n", 5, ["x"]])
def test_a_bad_client_name_is_a_clear_error(store, client):
    code = pairing.new_code(store)["code"]
    with pytest.raises(PairingError, match="printable characters"):
        pairing.complete(store, code, "x", client=client)
    assert "phone" in pairing.complete(store, code, "x")      # nothing counted, the code still works


def test_the_lockout_view(store):
    assert pairing.lockout(store)["code"] == "none"
    code = pairing.new_code(store)["code"]
    for _ in range(pairing.MAX_CLIENT_FAILURES):
        pairing.complete(store, wrong(code), "x", client="10.0.0.66")
    pairing.complete(store, wrong(code), "x")                       # the box's own user: "local"
    view = pairing.lockout(store)
    assert view == {"code": "active", "expires_at": NOW + pairing.CODE_TTL_S,
                    "failures": pairing.MAX_CLIENT_FAILURES + 1,
                    "max_failures": pairing.MAX_CODE_FAILURES, "clients_locked": 1,
                    "client_max_failures": pairing.MAX_CLIENT_FAILURES, "last_failure_at": NOW}
    pairing.complete(store, code, "x")
    assert pairing.lockout(store)["code"] == "none"                 # used up


# ---------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_strangers_on_the_wifi_do_not_stop_the_owners_fresh_code(tmp_path):
    """Through the phone app and a real daemon: five wrong codes from two addresses, then the
    owner's code from `vrmbox pair`; `vrmbox status` and the box's button socket show the
    wrong codes meanwhile."""
    from companion_app.box import Box
    from processes import vrmbox
    from test_companion_helpers import csrf_from, make_app, new_code, running_box

    with running_box(tmp_path, with_profile=False) as b:
        app = make_app(b["socket"])

        def attempt(ip: str, value: str, name: str = "x"):
            c = app.test_client()
            c.environ_base["REMOTE_ADDR"] = ip
            token = csrf_from(c.get("/pair").get_data(as_text=True))
            return c.post("/pair", data={"code": value, "name": name, "csrf_token": token})

        for fresh, strangers in ((False, ("10.0.0.66", "10.0.0.67")), (True, ("10.0.0.68", "fd00::69"))):
            code = new_code(b["data"])
            for ip in (strangers[0],) * 3 + (strangers[1],) * 2:
                assert attempt(ip, wrong(code)).status_code in (400, 429)
            status = json.loads(vrmbox("status", "--json", data_dir=b["data"]).stdout)
            assert status["pairing"]["code"] == "active" and status["pairing"]["failures"] == 5
            text = vrmbox("status", data_dir=b["data"]).stdout
            assert f"pairing: code active, 5 of {pairing.MAX_CODE_FAILURES} wrong codes" in text
            assert call(b["data"] / "button.sock", "pairing_status")["failures"] == 5   # the screen's read
            name = "Ann's tablet" if fresh else "Ann's phone"
            r = attempt("10.0.0.5", code, name)
            assert r.status_code == 302, r.get_data(as_text=True)[:300]
        assert sorted(p["name"] for p in Box(b["socket"]).call("phones")) == ["Ann's phone", "Ann's tablet"]
        assert json.loads(vrmbox("status", "--json", data_dir=b["data"]).stdout)["pairing"]["code"] == "none"
