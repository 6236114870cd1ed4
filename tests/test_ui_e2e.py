"""The UI against the real thing: the box daemon and a vendor-kit worker as processes on a real
Mosquitto, the UI's App in this process with gpiozero MockFactory buttons (real hold timing)
and luma's dummy display, talking only to button.sock.

Checks: the buttons navigate the screens; a short press, or a long press anywhere but the
accept screen, releases nothing; a long press on the accept screen confirms, and the vendor then
holds exactly the agreed fields; the UI says "box daemon not running, retrying" when the daemon
stops and picks up again when it is back; a SIGKILLed `vrmbox ui` process loses nothing.
"""
from __future__ import annotations

import json
import sys
import threading

import pytest
import yaml
from gpiozero.pins.mock import MockFactory

from device.ui.app import DAEMON_DOWN, App
from hardware.buttons import make_buttons
from device.ui.screens import scroll_end
from hardware.display import make_display
from hardware.profile import emulated_profile, parse_profile
from processes import Proc, box_config, daemon, vendor, vrm_vendor, vrmbox, wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

CONFIG = """
[agreements]
default_fields = ["email", "postal_address"]
default_purpose = "deliver the bike"
default_duration_days = 14

[[presets]]
name = "city bike"
category = "bikes"
description = "a city bike"
"""
PINS = {"up": 5, "down": 6, "select": 13, "back": 19}
PROFILE = {"name": "test-board", "display": {"driver": "ssd1306", "interface": "i2c", "height": 64},
           "buttons": {r: {"pin": p, "role": r} for r, p in PINS.items()},
           "input": {"hold_time": 0.3, "bounce_time": 0}}


class Board:
    """The UI as it runs on the box, with the board faked at the pins."""

    def __init__(self, sock):
        self.factory = MockFactory()
        self.buttons = make_buttons(parse_profile(PROFILE, "test"), pin_factory=self.factory)
        self.device = make_display(emulated_profile(64), "dummy")
        self.app = App(sock, self.device, power_kw={"dim_after": 1e6, "blank_after": 1e6, "shift_every": float("inf")})
        self.buttons.attach(self.app.key)
        self.thread = threading.Thread(target=self.app.run, daemon=True)
        self.thread.start()

    def pin(self, role):
        return self.factory.pin(PINS[role])

    def tap(self, role):
        before = self.app.keys_applied
        self.pin(role).drive_low()
        self.pin(role).drive_high()
        wait_for(lambda: self.app.keys_applied >= before + 2, timeout=10, what=f"tap {role} handled")
        return self.app.settle()

    def hold(self, role, until):
        """Hold the button until the UI reached `until` (or it times out), then release."""
        self.pin(role).drive_low()
        try:
            return self.app.wait_for(until, timeout=15)
        finally:
            self.pin(role).drive_high()

    def hold_and_release(self, role):
        """Press until the press and the hold are both stepped (an offer arriving meanwhile is
        an event too, and must not end the hold early), then release."""
        before = self.app.keys_applied
        self.pin(role).drive_low()
        wait_for(lambda: self.app.keys_applied >= before + 2, timeout=10, what=f"long {role} handled")
        self.pin(role).drive_high()
        return self.app.settle()

    def go_home(self):
        return self.hold_and_release("back")

    def read_to_end(self):
        """Scroll the consent text down to its last line, as a hold needs before it may send."""
        while self.app.state.scroll < scroll_end(self.app.state, *self.app.state.size):
            self.tap("down")
        return self.app.state

    def close(self):
        self.app.stop()
        self.thread.join(timeout=10)
        self.buttons.close()


@pytest.fixture
def system(tmp_path, broker, monkeypatch):
    box_config(tmp_path, monkeypatch, CONFIG)
    data = tmp_path / "box"
    for name, value in (("email", "ann@example.org"), ("postal_address", "1 High St, London"),
                        ("phone", "+44 20 7946 0000")):
        vrmbox("profile", "set", name, value, data_dir=data)
    box = daemon(data, broker.url, tmp_path / "daemon.log").start()
    vdir = tmp_path / "vendor-beta"
    vrm_vendor("init", "--dir", str(vdir), "--vendor", "beta", "--name", "Beta Bikes", "--categories", "bikes")
    cat = tmp_path / "beta.yaml"
    cat.write_text(yaml.safe_dump({
        "currency": "EUR", "accept_terms": "*", "offer_validity_s": 86400,
        "items": [{"category": "bikes", "name": "Beta City", "sku": "beta-1", "brand": "Beta",
                   "price": 520.0, "delivery_days": 3},
                  ]}))
    shop = vendor(vdir, broker.url, cat, tmp_path / "vendor.log").start()
    procs = {"box": box, "vendor": shop}
    yield {"data": data, "tmp": tmp_path, "broker": broker, "vendor_dir": vdir, "procs": procs}
    for p in reversed(list(procs.values())):
        p.stop()


def _disclosures(vdir):
    return json.loads(vrm_vendor("disclosures", "--dir", str(vdir), "--json").stdout)


def _agreements(data):
    return json.loads(vrmbox("agreements", "--json", data_dir=data).stdout)


def test_buttons_cast_an_intent_and_a_long_press_on_accept_sends_exactly_the_agreed_fields(system):
    data, vdir = system["data"], system["vendor_dir"]
    board = Board(data / "button.sock")
    app = board.app
    try:
        app.wait_for(lambda s: s.connected and "presets" in s.data.loaded, timeout=20)
        # status -> menu -> intents -> cast the preset
        assert board.tap("select").screen == "menu"
        board.tap("down")
        board.tap("down")
        assert board.tap("select").screen == "intents"
        app.wait_for(lambda s: s.intent_rows() and s.intent_rows()[0][0] == "preset")
        board.tap("select")
        app.wait_for(lambda s: any(i.get("status") == "active" for i in s.data.intents), timeout=20)
        # the offer arrives on the event stream; the matches list follows it live
        board.go_home()
        board.tap("select")
        assert board.tap("select").screen == "matches"
        s = app.wait_for(lambda s: s.data.offers, timeout=60)
        offer = s.data.offers[0]
        assert offer["vendor"] == "beta" and offer["price"] == 520.0
        assert board.tap("select").screen == "detail"
        assert board.tap("select").screen == "actions"
        # a long press on the screen before accept does nothing
        board.hold_and_release("select")
        assert app.state.screen == "actions" and app.state.sent == ()
        s = board.tap("select")
        assert s.screen == "accept"
        s = app.wait_for(lambda s: s.data.preview is not None)
        assert s.data.preview["fields"] == ["email", "postal_address"]
        # a short press on accept releases nothing
        board.tap("select")
        assert app.state.sent == () and "hold" in (app.state.notice or "")
        assert _agreements(data) == [] and _disclosures(vdir) == []
        # back out and in: nothing was made
        board.tap("back")
        board.tap("select")
        app.wait_for(lambda s: s.screen == "accept" and s.data.preview is not None)
        # a hold before the text was read to its end (the recipient, the duration) sends nothing
        board.hold_and_release("select")
        assert app.state.sent == () and "read it all" in (app.state.notice or "")
        board.read_to_end()
        # THE press: held past hold_time on the accept screen
        s = board.hold("select", lambda s: any(x.startswith("confirm:") for x in s.sent))
        agreement = s.sent[0].split(":", 1)[1]
        wait_for(lambda: {a["agreement"]: a for a in _agreements(data)}[agreement]["status"] == "active",
                 timeout=30, what="countersignature")
        wait_for(lambda: _disclosures(vdir), timeout=30, what="vendor stored the disclosure")
        [d] = _disclosures(vdir)
        assert d["fields"] == {"email": "ann@example.org", "postal_address": "1 High St, London"}
        app.wait_for(lambda s: s.screen == "agreements" and
                     any(a.get("status") == "active" for a in s.data.agreements), timeout=20)
        assert board.device.image is not None                     # it was drawn
    finally:
        board.close()


def test_a_pending_agreement_from_elsewhere_needs_a_long_press_on_the_box(system):
    data, vdir = system["data"], system["vendor_dir"]
    intent = json.loads(vrmbox("intent", "add", "bikes", "--json", data_dir=data).stdout)["intent"]
    offers = wait_for(lambda: json.loads(vrmbox("offers", f"--intent={intent}", "--json", data_dir=data).stdout),
                      timeout=60, what="an offer")
    board = Board(data / "button.sock")
    app = board.app
    try:
        app.wait_for(lambda s: s.connected and "pending" in s.data.loaded, timeout=20)
        # the person accepts from the CLI (as the phone would): it waits for the box
        agreement = json.loads(vrmbox("offer", "accept", "--fields", "email", "--json", "--",
                                      offers[0]["offer"], data_dir=data).stdout)["agreement"]
        s = app.wait_for(lambda s: s.data.pending, timeout=20)
        assert s.data.pending[0]["agreement"] == agreement
        board.hold_and_release("select")                          # a long press on status: nothing
        assert app.state.screen == "status" and app.state.sent == ()
        assert board.tap("select").screen == "pending"          # status: SELECT goes to what waits
        board.read_to_end()
        assert board.tap("down").cursor == 0                      # only one: stays on it
        assert board.tap("select").screen == "ask"              # a short press offers to refuse
        assert board.tap("back").screen == "pending"
        assert app.state.sent == () and _agreements(data)[0]["status"] == "pending_confirmation"
        board.read_to_end()
        s = board.hold("select", lambda s: f"confirm:{agreement}" in s.sent)
        wait_for(lambda: _disclosures(vdir), timeout=30, what="vendor stored the disclosure")
        assert _disclosures(vdir)[0]["fields"] == {"email": "ann@example.org"}
    finally:
        board.close()


def test_the_ui_says_when_the_daemon_is_gone_and_picks_up_when_it_is_back(system, tmp_path):
    data = system["data"]
    board = Board(data / "button.sock")
    app = board.app
    try:
        app.wait_for(lambda s: s.connected, timeout=20)
        system["procs"]["box"].stop()
        s = app.wait_for(lambda s: not s.connected, timeout=20)
        assert s.connection_detail == DAEMON_DOWN
        from device.ui.screens import frame
        app.settle()
        expected = frame(s, 128, 64, app.clock()).convert(board.device.mode)
        assert board.device.image.tobytes() == expected.tobytes()   # the offline screen is shown
        board.tap("down")                                            # keys while down: harmless
        system["procs"]["box"] = daemon(data, system["broker"].url, tmp_path / "daemon2.log").start()
        app.wait_for(lambda s: s.connected and "offers" in s.data.loaded, timeout=30)
    finally:
        board.close()


def _ui_proc(data, frames, log):
    return Proc([sys.executable, "-m", "vrmbox", "-v", "ui", "--display", "capture", "--frames",
                 str(frames), "--data-dir", str(data)], log)


def _shown_offers(log):
    counts = [int(line.split("offers=")[1].split()[0]) for line in log.read_text().splitlines()
              if "shown: " in line and "connected=True" in line]
    return counts[-1] if counts else -1


def test_a_killed_ui_loses_nothing(system, tmp_path):
    data = system["data"]
    log1, log2 = tmp_path / "ui1.log", tmp_path / "ui2.log"
    ui = _ui_proc(data, tmp_path / "frames1", log1).start()
    wait_for(lambda: _shown_offers(log1) == 0, timeout=20, what="UI connected")
    ui.kill()                                                        # SIGKILL
    intent = json.loads(vrmbox("intent", "add", "bikes", "--json", data_dir=data).stdout)["intent"]
    vrmbox("intent", "add", "bikes", "--attr", "colour=red", "--json", data_dir=data)
    # the daemon takes offers with no UI at all
    wait_for(lambda: len(json.loads(vrmbox("offers", "--json", data_dir=data).stdout)) == 2, timeout=60,
             what="two offers stored while the UI was dead")
    assert json.loads(vrmbox("offers", f"--intent={intent}", "--json", data_dir=data).stdout)
    ui = _ui_proc(data, tmp_path / "frames2", log2).start()
    try:
        wait_for(lambda: _shown_offers(log2) == 2, timeout=30, what="restarted UI shows both offers")
        assert list((tmp_path / "frames2").glob("frame_*.png"))
    finally:
        ui.stop()


def test_the_ui_process_tells_systemd_it_is_ready_and_alive(tmp_path, monkeypatch):
    """The unit is Type=notify with a watchdog: READY=1 after the first frame, then WATCHDOG=1
    while the loop turns (even with no daemon: the display still says so)."""
    import socket as so
    path = tmp_path / "notify.sock"
    sock = so.socket(so.AF_UNIX, so.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(15)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    ui = _ui_proc(tmp_path / "box", tmp_path / "frames", tmp_path / "ui.log").start()
    try:
        got = []
        while got.count("WATCHDOG=1") < 3:
            got.append(sock.recv(256).decode())
        assert "READY=1" in got
    finally:
        ui.stop()
        sock.close()
