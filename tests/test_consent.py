"""Consent that cannot be faked: the kernel's word on who is connected decides what a socket
client may do, a confirmation's source is the caller's role, and what could release data or
weaken that rule waits for a press on the box (docs/architecture.md, device/daemon/ops.py).

The daemon runs in-process with its sockets and worker but no broker; the store is real.
Tests that need a second uid run a client as `nobody` (only possible as root; skipped otherwise).
"""
from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from device.client import ControlError, call
from device.config import load_config
from device.daemon import Daemon, ops
from device.daemon.access import BUTTON, COMPANION, OWNER, build_access
from device.market import Market, MarketError
from device.store import Store
from processes import _env as child_env   # this tree first on PYTHONPATH, as for every child
from intake_box import Box
from vendor_messages import TestVendor
from vrm_protocol import topics

ROOT = Path(__file__).resolve().parent.parent
AS_ROOT = os.geteuid() == 0
SYSTEM_PYTHON = Path("/usr/bin/python3")   # the venv's interpreter may sit in root's home
needs_root = pytest.mark.skipif(not AS_ROOT or not SYSTEM_PYTHON.exists(),
                                reason="a second uid needs root to switch to, and /usr/bin/python3")


def seed(data_dir: Path) -> str:
    """A box with a profile, a vendor, an offer and an accepted (pending) agreement."""
    box = Box(data_dir)
    box.store.set_profile_field("email", "ann@example.org")
    intent_id = box.market.add_intent("bikes", {"budget_max": 800})["intent"]
    box.intake.refresh()
    vendor = TestVendor("acme")
    box.feed(topics.vendor_profile("acme"), vendor.profile())
    box.feed(topics.offers(intent_id), vendor.offer(box.store.get_intent(intent_id).token))
    offer = box.store.list_offers(intent_id)[0].offer_id
    agreement = box.market.accept(offer, ["email"])["agreement"]
    box.store.close()
    return agreement


class Running:
    """The daemon's sockets and worker, no MQTT connection."""

    def __init__(self, data_dir: Path, sock_dir: Path, **control: list[str]) -> None:
        overrides = {"data_dir": str(data_dir), "control.socket": str(sock_dir / "control.sock"),
                     "control.button_socket": str(sock_dir / "button.sock")}
        overrides.update({f"control.{k}": v for k, v in control.items()})
        self.cfg = load_config(None, overrides, env={})
        self.daemon = Daemon(self.cfg)

    def __enter__(self) -> "Running":
        d = self.daemon
        d.control.start()
        d.button.start()
        self.worker = threading.Thread(target=d._work, daemon=True)
        self.worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        d = self.daemon
        d._stop.set()
        self.worker.join(10)
        d.control.stop()
        d.button.stop()
        d.store.close()
        d._lockfile.close()

    def control(self, op: str, args: dict | None = None):
        return call(self.cfg.control.socket, op, args or {})

    def button(self, op: str, args: dict | None = None):
        return call(self.cfg.control.button, op, args or {})

    def agreement_status(self, agreement: str) -> str:
        return next(a["status"] for a in self.control("agreements") if a["agreement"] == agreement)

    def sent_agreements(self) -> list:
        with Store.open(self.cfg.data_dir) as store:       # a reader beside the worker, as the CLI is
            return [r for r in store.pending_outbox() if r.topic == topics.agreements("acme")]


@pytest.fixture
def sock_dir():
    """Sockets in a folder a second uid can reach (pytest's tmp dirs are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="vrmbox-sock-"))
    d.chmod(0o755)
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


# ---------------------------------------------------------------- the allow-list itself
def test_every_operation_has_roles_and_the_phone_can_never_press():
    for name, spec in ops.OPS.items():
        assert spec.roles and spec.roles <= {BUTTON, COMPANION, OWNER}, name
    assert COMPANION not in ops.OPS["approve"].roles and OWNER not in ops.OPS["approve"].roles
    assert ops.OPS["approve"].roles == ops.OPS["deny"].roles == {BUTTON}
    assert ops.confirm_source(BUTTON) == "button"
    assert ops.confirm_source(COMPANION) == ops.confirm_source(OWNER) == "companion"


def test_architecture_doc_lists_every_operation_with_its_roles():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for name, roles, _writes, press in ops.allow_list():
        row = re.search(rf"^\| `{name}` \|([^\n]*)$", doc, re.M)
        assert row, f"{name} missing from the allow-list table in docs/architecture.md"
        for role in roles:
            assert role in row.group(1), f"{name}: role {role} not in its docs row"
        cells = [c.strip() for c in row.group(1).split("|")]
        assert (cells[2] == "press") == press, f"{name}: press column wrong"


def test_the_source_argument_is_ignored(tmp_path):
    """A caller saying `source: button` on the phone's socket is still the phone."""
    agreement = seed(tmp_path / "box")
    with Store.open(tmp_path / "box") as store:
        market = Market(store)
        with pytest.raises(MarketError, match="press of the button"):
            ops.run(market, "confirm", {"agreement": agreement, "source": "button"}, COMPANION)
        with pytest.raises(MarketError, match="press of the button"):
            ops.run(market, "confirm", {"agreement": agreement, "source": "button"}, OWNER)
        assert store.get_agreement(agreement).status == "pending_confirmation"
        assert ops.run(market, "confirm", {"agreement": agreement, "source": "companion"},
                       BUTTON)["source"] == "button"


# ---------------------------------------------------------------- bypass 2: no daemon, no confirm
def test_offline_cli_refuses_to_confirm_and_says_why(tmp_path):
    data = tmp_path / "box"
    agreement = seed(data)
    env = {**child_env(), "VRMBOX_CONFIG": os.devnull, "VRMBOX_DATA_DIR": str(data)}
    r = subprocess.run([sys.executable, "-m", "vrmbox", "agreement", "confirm", "--", agreement],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 1
    assert "needs the box daemon running" in r.stderr
    with Store.open(data) as store:
        assert store.get_agreement(agreement).status == "pending_confirmation"
        assert [o for o in store.pending_outbox() if o.topic == topics.agreements("acme")] == []
    with Store.open(data) as store:        # nor can the offline path be told it is the button
        with pytest.raises(ops.OpRefused, match="needs the box daemon"):
            ops.run_offline(Market(store), "confirm", {"agreement": agreement, "source": "button"})
        for op, args in (("erase", {}), ("vendor_accept_key", {"vendor": "acme", "did": "did:key:z6Mk"}),
                         ("setting_set", {"key": "companion_only_confirmation", "value": True})):
            with pytest.raises(ops.OpRefused):
                ops.run_offline(Market(store), op, args)
        assert not store.get_setting("companion_only_confirmation", False)


# ---------------------------------------------------------------- bypass 3: the phone cannot let itself press
def test_control_socket_cannot_turn_on_companion_only_and_then_confirm(tmp_path, sock_dir):
    agreement = seed(tmp_path / "box")
    with Running(tmp_path / "box", sock_dir) as box:
        held = box.control("setting_set", {"key": "companion_only_confirmation", "value": True})
        assert held["status"] == "waiting_for_button" and held["op"] == "setting_set"
        assert box.control("settings") == {"companion_only_confirmation": False}
        with pytest.raises(ControlError, match="press of the button"):
            box.control("confirm", {"agreement": agreement})
        assert box.agreement_status(agreement) == "pending_confirmation" and box.sent_agreements() == []
        with pytest.raises(ControlError, match="not available"):      # the phone cannot approve itself
            box.control("approve", {"request": held["request"]})
        assert [r["request"] for r in box.button("pending")["requests"]] == [held["request"]]
        done = box.button("approve", {"request": held["request"]})    # the person pressed on the box
        assert done["status"] == "done"
        assert box.control("request", {"request": held["request"]})["status"] == "done"
        assert box.control("settings") == {"companion_only_confirmation": True}
        assert box.control("confirm", {"agreement": agreement})["source"] == "companion"
        assert box.agreement_status(agreement) == "confirmed"


def test_erase_and_key_acceptance_wait_for_the_press_and_can_be_denied(tmp_path, sock_dir):
    agreement = seed(tmp_path / "box")
    with Running(tmp_path / "box", sock_dir) as box:
        did = box.control("vendors")[0]["did"]
        erase = box.control("erase")
        key = box.control("vendor_accept_key", {"vendor": "acme", "did": did})
        assert {erase["status"], key["status"]} == {"waiting_for_button"}
        assert box.agreement_status(agreement) == "pending_confirmation"      # nothing erased
        assert {r["op"] for r in box.button("pending")["requests"]} == {"erase", "vendor_accept_key"}
        assert box.button("deny", {"request": erase["request"]})["status"] == "denied"
        with pytest.raises(ControlError, match="denied"):
            box.button("approve", {"request": erase["request"]})
        assert box.agreement_status(agreement) == "pending_confirmation"
        assert box.control("request", {"request": erase["request"]})["status"] == "denied"
        # turning companion-only OFF is safer, so it needs no press
        assert box.control("setting_set", {"key": "companion_only_confirmation", "value": False}) == \
            {"companion_only_confirmation": False}


def test_pending_lists_agreements_waiting_for_the_button(tmp_path, sock_dir):
    agreement = seed(tmp_path / "box")
    with Running(tmp_path / "box", sock_dir) as box:
        pending = box.button("pending")["agreements"]
        assert [(p["agreement"], p["vendor"], p["fields"]) for p in pending] == [(agreement, "acme", ["email"])]
        status = box.button("status")
        assert status["single_user"] is True and status["role"] == "button"
        assert "single-user" in status["access"]
        assert box.control("status")["role"] == "owner"
        assert box.button("confirm", {"agreement": agreement})["source"] == "button"
        assert box.button("pending")["agreements"] == []
        with pytest.raises(ControlError, match="not available"):
            box.button("profile_set", {"name": "email", "value": "x@example.org"})


# ---------------------------------------------------------------- bypass 1: the box's own user is not the button
def test_once_deployed_the_boxs_own_user_cannot_press(tmp_path, sock_dir):
    agreement = seed(tmp_path / "box")
    other = "nobody" if AS_ROOT else str(os.geteuid() + 1)
    with Running(tmp_path / "box", sock_dir, button_users=[other]) as box:
        with pytest.raises(ControlError, match="may not use this socket"):
            box.button("confirm", {"agreement": agreement})
        # what `vrmbox agreement confirm` does: refused the same way
        env = {**child_env(), "VRMBOX_CONFIG": os.devnull}
        r = subprocess.run([sys.executable, "-m", "vrmbox", "agreement", "confirm",
                            "--data-dir", str(tmp_path / "box"), "--", agreement],
                           capture_output=True, text=True, env={
                               **env, "VRMBOX_CONFIG": str(_config_file(tmp_path, sock_dir, other))},
                           cwd=ROOT, timeout=60)
        assert r.returncode == 1 and "may not use this socket" in r.stderr, r.stderr
        assert box.agreement_status(agreement) == "pending_confirmation" and box.sent_agreements() == []
        assert box.control("status")["single_user"] is False


def _config_file(tmp_path: Path, sock_dir: Path, button_user: str) -> Path:
    p = tmp_path / "deployed.toml"
    p.write_text(f'[control]\nsocket = "{sock_dir}/control.sock"\nbutton_socket = "{sock_dir}/button.sock"\n'
                 f'button_users = ["{button_user}"]\n')
    return p


def test_access_config_refuses_the_boxs_own_user_as_the_button():
    from device.daemon.access import AccessConfigError
    with pytest.raises(AccessConfigError, match="own user"):
        build_access(os.geteuid(), button_users=[str(os.geteuid())])
    with pytest.raises(AccessConfigError, match="no user named"):
        build_access(os.geteuid(), button_users=["no-such-user-vrmbox"])


# ---------------------------------------------------------------- a second uid
CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
s.sendall(json.dumps({"op": sys.argv[2], "args": json.loads(sys.argv[3])}).encode() + b"\n")
print(s.makefile("rb").readline().decode())
"""


def as_user(user: str, sock: Path, op: str, args: dict | None = None) -> dict:
    r = subprocess.run([str(SYSTEM_PYTHON), "-I", "-c", CLIENT, str(sock), op, json.dumps(args or {})],
                       capture_output=True, text=True, timeout=60, user=user, group=pwd.getpwnam(user).pw_gid,
                       extra_groups=[], cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@needs_root
def test_a_second_uid_is_refused_on_both_sockets_unless_listed(tmp_path, sock_dir):
    agreement = seed(tmp_path / "box")
    with Running(tmp_path / "box", sock_dir, button_users=["daemon"]) as box:
        for sock in (box.cfg.control.socket, box.cfg.control.button):
            reply = as_user("nobody", sock, "agreements")
            assert reply["ok"] is False and "may not use this socket" in reply["error"]
            reply = as_user("nobody", sock, "confirm", {"agreement": agreement})
            assert reply["ok"] is False and "may not use this socket" in reply["error"]
        assert box.agreement_status(agreement) == "pending_confirmation"


@needs_root
def test_the_ui_user_presses_and_the_companion_user_cannot(tmp_path, sock_dir):
    agreement = seed(tmp_path / "box")
    with Running(tmp_path / "box", sock_dir, button_users=["daemon"], control_users=["nobody"]) as box:
        phone = as_user("nobody", box.cfg.control.socket, "confirm", {"agreement": agreement, "source": "button"})
        assert phone["ok"] is False and "press of the button" in phone["error"]
        held = as_user("nobody", box.cfg.control.socket, "erase")
        assert held["ok"] and held["result"]["status"] == "waiting_for_button"
        assert as_user("nobody", box.cfg.control.button, "pending")["ok"] is False   # not the UI's user
        ui = as_user("daemon", box.cfg.control.button, "confirm", {"agreement": agreement})
        assert ui["ok"] and ui["result"]["source"] == "button"
        assert as_user("daemon", box.cfg.control.button, "deny", {"request": held["result"]["request"]})["ok"]
        assert as_user("daemon", box.cfg.control.socket, "agreements")["ok"] is False  # UI: button.sock only
        assert box.agreement_status(agreement) == "confirmed"
        assert box.sent_agreements()[0].payload.count(".") == 4          # sealed to the vendor (JWE)


def test_rules_preview_ranks_under_unsaved_rules_and_changes_nothing(tmp_path):
    box = Box(tmp_path / "box")
    intent_id = box.market.add_intent("bikes", {})["intent"]
    box.intake.refresh()
    v = TestVendor("acme")
    box.feed(topics.vendor_profile("acme"), v.profile())
    for price in (100.0, 900.0):
        box.feed(topics.offers(intent_id), v.offer(box.store.get_intent(intent_id).token, price=price))
    saved = box.market.rules()
    strict = {**saved, "filters": {**saved.get("filters", {}), "max_price": {"amount": 500, "currency": "EUR"}}}
    preview = ops.run(box.market, "rules_preview", {"rules": strict}, COMPANION)
    assert {(r["price"], r["eligible"]) for r in preview} == {(100.0, True), (900.0, False)}
    assert box.market.rules() == saved and all(r["eligible"] for r in box.market.ranked_offers(include_ineligible=True))
    with pytest.raises(MarketError):
        ops.run(box.market, "rules_preview", {"rules": {"version": 99}}, COMPANION)
    with pytest.raises(ops.OpRefused):
        ops.run(box.market, "rules_preview", {"rules": strict}, BUTTON)
    box.store.close()


def test_the_values_released_are_those_the_person_had_when_pressing(tmp_path):
    """A press consents to values, not only field names: a profile change afterwards (e.g. by a
    compromised phone app) does not change what the vendor receives."""
    from vrm_protocol import decrypt_json, verify
    from vrm_protocol.messages import Disclosure
    box = Box(tmp_path / "box")
    box.store.set_profile_field("email", "ann@example.org")
    intent_id = box.market.add_intent("bikes", {})["intent"]
    box.intake.refresh()
    v = TestVendor("acme")
    box.feed(topics.vendor_profile("acme"), v.profile())
    box.feed(topics.offers(intent_id), v.offer(box.store.get_intent(intent_id).token))
    agreement = box.market.accept(box.store.list_offers(intent_id)[0].offer_id, ["email"])["agreement"]
    ops.run(box.market, "confirm", {"agreement": agreement}, BUTTON)
    ops.run(box.market, "profile_set", {"name": "email", "value": {"email": "x", "address": "1 Secret Lane"}},
            COMPANION)
    agreement_token = v.opened(box.outbox(topics.agreements("acme"))[0])
    box.market.countersigned(agreement, v.countersign(agreement_token))
    [disclosure] = box.outbox(topics.disclosures("acme"))
    d = verify(disclosure, now=time.time(), expect=Disclosure)
    assert decrypt_json(d.body.jwe, v.enc)["fields"] == {"email": "ann@example.org"}
    assert box.store.get_setting("consented:" + agreement) == {}      # no copy kept once sent
    box.store.close()


def test_an_imported_file_cannot_turn_on_companion_only_confirmation(tmp_path):
    from device import portability
    with Store.open(tmp_path / "theirs") as theirs:
        theirs.set_setting("companion_only_confirmation", True)
        theirs.set_setting("box_id", "box-0000")
        path = tmp_path / "export.json"
        portability.export_to_file(theirs, path)
    with Store.open(tmp_path / "mine") as mine:
        portability.import_from_file(mine, path)
        assert mine.get_setting("companion_only_confirmation", False) is False
        assert mine.get_setting("box_id") == "box-0000"                  # the rest came across


def test_the_same_question_is_asked_once_and_one_asker_cannot_crowd_out_another():
    from device.daemon.held import MAX_HELD_PER_ROLE, HeldError, HeldRequests
    held = HeldRequests(time.time)
    first = held.add("vendor_accept_key", {"vendor": "acme", "did": "x"}, "trust", "the phone app", COMPANION)
    assert held.add("vendor_accept_key", {"vendor": "acme", "did": "x"}, "trust", "the phone app",
                    COMPANION) is first
    for n in range(1, MAX_HELD_PER_ROLE):
        held.add("vendor_accept_key", {"vendor": "acme", "did": f"x{n}"}, "trust", "the phone app", COMPANION)
    with pytest.raises(HeldError, match="of your requests"):
        held.add("vendor_accept_key", {"vendor": "acme", "did": "y"}, "trust", "the phone app", COMPANION)
    assert held.add("erase", {}, "erase", "the box's own user", OWNER).op == "erase"


def test_who_asked_comes_from_the_role_not_the_caller(tmp_path, sock_dir):
    seed(tmp_path / "box")
    with Running(tmp_path / "box", sock_dir) as box:
        box.control("erase", {"requested_by": "Ann's phone: nothing leaves the box. Hold SELECT"})
        [req] = box.button("pending")["requests"]
        assert req["requested_by"] == "the box's own user"


@needs_root
def test_a_button_group_may_not_take_in_the_boxs_own_user_or_the_phones():
    import grp
    from device.daemon.access import AccessConfigError
    daemon_uid, nobody_gid = pwd.getpwnam("daemon").pw_uid, grp.getgrnam("nogroup").gr_gid
    with pytest.raises(AccessConfigError, match="own user"):
        build_access(daemon_uid, control_users=["nobody"], button_groups=[pwd.getpwnam("daemon").pw_gid])
    with pytest.raises(AccessConfigError, match="may not press"):
        build_access(daemon_uid, control_users=["nobody"], button_groups=[nobody_gid])
    # a peer's effective gid (a setgid program) lends no group
    access = build_access(os.geteuid(), button_groups=[nobody_gid])
    from device.daemon.access import Peer
    assert access.role("button", Peer(1, pwd.getpwnam("daemon").pw_uid, nobody_gid)) is None
    assert access.role("button", Peer(1, pwd.getpwnam("nobody").pw_uid, nobody_gid)) == BUTTON


HOLDER = r"""
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    held.append(s)
print("held", flush=True)
time.sleep(60)
"""


@needs_root
def test_a_refused_user_cannot_crowd_the_button_out_and_a_slow_client_holds_nothing(tmp_path, sock_dir):
    agreement = seed(tmp_path / "box")
    with Running(tmp_path / "box", sock_dir, button_users=["daemon"], control_users=["nobody"]) as box:
        crowd = subprocess.Popen([str(SYSTEM_PYTHON), "-I", "-c", HOLDER, str(box.cfg.control.button), "60"],
                                 stdout=subprocess.PIPE, text=True, user="nobody", group="nogroup",
                                 extra_groups=[], cwd="/")
        phone = subprocess.Popen([str(SYSTEM_PYTHON), "-I", "-c", HOLDER, str(box.cfg.control.socket), "60"],
                                 stdout=subprocess.PIPE, text=True, user="nobody", group="nogroup",
                                 extra_groups=[], cwd="/")
        try:
            assert crowd.stdout.readline().strip() == "held" and phone.stdout.readline().strip() == "held"
            ui = as_user("daemon", box.cfg.control.button, "confirm", {"agreement": agreement})
            assert ui["ok"] and ui["result"]["source"] == "button"
            assert box.control("status")["role"] == "owner"        # the box's own CLI still gets in
        finally:
            crowd.kill()
            phone.kill()
            crowd.wait()
            phone.wait()
