"""Board profiles (validated on load, errors naming file/key/value), `vrmbox hardware`, the
buttons through gpiozero's MockFactory with real timing, and displays that cannot be opened."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from device.cli.common import EXIT_CONFIG, EXIT_UNAVAILABLE
from hardware.buttons import ButtonsError, make_buttons
from hardware.display import DisplayError, make_display
from hardware.profile import (PROFILE_DIR, ProfileError, list_profiles, load_profile, logical_role,
                              parse_profile)

ROOT = Path(__file__).resolve().parent.parent
GOOD = {"name": "t", "display": {"driver": "ssd1306", "interface": "i2c", "address": 0x3C},
        "buttons": {"u": {"pin": 5, "role": "up"}, "d": {"pin": 6, "role": "down"},
                    "s": {"pin": 13, "role": "select"}, "b": {"pin": 19, "role": "back"}},
        "input": {"hold_time": 0.2, "bounce_time": 0}}


def vrmbox(*args):
    return subprocess.run([sys.executable, "-m", "vrmbox", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_the_shipped_profiles_load_with_the_vendors_pins():
    by_name = {p.name: p for p in list_profiles()}
    assert set(by_name) >= {"adafruit-oled-bonnet", "waveshare-oled-hat", "generic-ssd1306-128x32"}
    bonnet = by_name["adafruit-oled-bonnet"]
    assert (bonnet.display.driver, bonnet.display.interface, bonnet.display.address) == ("ssd1306", "i2c", 0x3C)
    assert {b.name: b.pin for b in bonnet.buttons} == {"up": 17, "down": 22, "left": 27, "right": 23,
                                                       "centre": 4, "a": 5, "b": 6}
    hat = by_name["waveshare-oled-hat"]
    assert (hat.display.driver, hat.display.interface) == ("sh1106", "spi")
    assert {b.name: b.pin for b in hat.buttons} == {"up": 6, "down": 19, "left": 5, "right": 26,
                                                    "press": 13, "key1": 21, "key2": 20, "key3": 16}
    small = by_name["generic-ssd1306-128x32"]
    assert (small.display.width, small.display.height, len(small.buttons)) == (128, 32, 4)
    for p in by_name.values():
        assert (ROOT / "hardware" / "wiring" / f"{p.name}.md").is_file(), f"no wiring note for {p.name}"


def _bad(mutate) -> ProfileError:
    data = json.loads(json.dumps(GOOD))
    mutate(data)
    with pytest.raises(ProfileError) as info:
        parse_profile(data, "boards/x.toml")
    return info.value


@pytest.mark.parametrize("mutate,key,value", [
    (lambda d: d.update(colour="red"), "colour", "red"),
    (lambda d: d["display"].update(driver="ssd9999"), "display.driver", "ssd9999"),
    (lambda d: d["display"].update(address=0x99), "display.address", 0x99),
    (lambda d: d["display"].update(address="nope"), "display.address", "nope"),
    (lambda d: d["display"].update(height=48), "display.height", 48),
    (lambda d: d["display"].update(rotate=4), "display.rotate", 4),
    (lambda d: d["buttons"]["u"].update(pin=99), "buttons.u.pin", 99),
    (lambda d: d["buttons"]["u"].update(pin=True), "buttons.u.pin", True),
    (lambda d: d["buttons"]["d"].update(pin=5), "buttons.d.pin", 5),
    (lambda d: d["buttons"]["u"].update(role="jump"), "buttons.u.role", "jump"),
    (lambda d: d["buttons"]["u"].update(pin=2), "buttons", 2),                 # the I2C bus
    (lambda d: d["buttons"].pop("b"), "buttons", ["down", "select", "up"]),
    (lambda d: d["input"].update(hold_time=0), "input.hold_time", 0),
    (lambda d: d["display"].update(interface="spi"), "display.address", 0x3C),
])
def test_a_bad_profile_names_the_file_the_key_and_the_value(mutate, key, value):
    err = _bad(mutate)
    assert (err.source, err.key, err.value) == ("boards/x.toml", key, value)
    assert str(err).startswith("profile 'boards/x.toml': key ")


def test_a_spi_button_on_the_bus_and_a_missing_file_are_refused(tmp_path):
    hat = (PROFILE_DIR / "waveshare-oled-hat.toml").read_text().replace("pin = 16", "pin = 10")
    (tmp_path / "hat.toml").write_text(hat)
    with pytest.raises(ProfileError, match="SPI bus"):
        load_profile(tmp_path / "hat.toml")
    with pytest.raises(ProfileError, match="not found .*adafruit-oled-bonnet"):
        load_profile("no-such-board")
    (tmp_path / "broken.toml").write_text("name = [")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(tmp_path / "broken.toml")


def test_rotation_turns_the_joystick_with_the_display():
    assert [logical_role("up", r) for r in range(4)] == ["up", "left", "down", "right"]
    assert logical_role("select", 2) == "select" and logical_role("right", 2) == "left"
    data = json.loads(json.dumps(GOOD))
    data["display"]["rotate"] = 2
    buttons = make_buttons(parse_profile(data, "x"), pin_factory=MockFactory())
    try:
        assert buttons.roles == {"u": "down", "d": "up", "s": "select", "b": "back"}
    finally:
        buttons.close()


@pytest.mark.slow
def test_hardware_list_and_check_commands(tmp_path):
    out = vrmbox("hardware", "list")
    assert out.returncode == 0
    names = [line.split("\t")[0] for line in out.stdout.splitlines()]
    assert names == sorted(p.name for p in list_profiles())
    ok = vrmbox("hardware", "check", "adafruit-oled-bonnet")
    assert ok.returncode == 0 and "GPIO17" in ok.stdout and "0x3C" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text((PROFILE_DIR / "adafruit-oled-bonnet.toml").read_text().replace("pin = 6,", "pin = 4,"))
    out = vrmbox("hardware", "check", str(bad))
    assert out.returncode == 2 and "buttons.b.pin" in out.stderr and "Traceback" not in out.stderr
    out = vrmbox("hardware", "check", "--json", str(bad))
    assert json.loads(out.stdout)["ok"] is False


# ---------------------------------------------------------------------- buttons, real timing
@pytest.fixture
def board():
    factory = MockFactory()
    buttons = make_buttons(parse_profile(GOOD, "test"), pin_factory=factory)
    events: queue.Queue = queue.Queue()
    buttons.attach(lambda role, kind: events.put((role, kind)))
    yield factory, buttons, events
    buttons.close()
    factory.reset()


def _next(events, timeout=3.0):
    return events.get(timeout=timeout)


def test_a_press_and_release_is_one_short_press(board):
    factory, _, events = board
    pin = factory.pin(13)
    pin.drive_low()                                   # pull-up: pressed pulls the line low
    assert _next(events) == ("select", "down")
    pin.drive_high()
    assert _next(events) == ("select", "short")
    assert events.empty()


def test_holding_past_hold_time_is_one_long_press_and_no_short_one(board):
    factory, _, events = board
    pin = factory.pin(13)
    pin.drive_low()
    assert _next(events) == ("select", "down")
    assert _next(events) == ("select", "long")        # after hold_time (0.2 s), by gpiozero's timer
    pin.drive_high()
    pin.drive_low()
    assert _next(events) == ("select", "down")        # a new press after the release
    pin.drive_high()
    assert _next(events) == ("select", "short")


def test_each_button_reports_its_role(board):
    factory, _, events = board
    for pin, role in ((5, "up"), (6, "down"), (19, "back")):
        factory.pin(pin).drive_low()
        factory.pin(pin).drive_high()
        assert [_next(events), _next(events)] == [(role, "down"), (role, "short")]


def test_a_pin_that_cannot_be_claimed_is_one_clear_error():
    factory = MockFactory()
    first = make_buttons(parse_profile(GOOD, "test"), pin_factory=factory)
    try:
        with pytest.raises(ButtonsError, match=r"button 'u' on GPIO 5 cannot be claimed"):
            make_buttons(parse_profile(GOOD, "test"), pin_factory=factory)
    finally:
        first.close()


def test_a_display_that_is_not_there_is_one_clear_error():
    profile = load_profile("adafruit-oled-bonnet")
    if Path("/dev/i2c-1").exists():
        pytest.skip("this machine has an I2C bus")
    with pytest.raises(DisplayError, match=r"display ssd1306 \(i2c bus 1 address 0x3C\) cannot be opened"):
        make_display(profile, "ssd1306")
    with pytest.raises(DisplayError, match="unknown display"):
        make_display(profile, "crt")


@pytest.mark.slow
def test_vrmbox_ui_on_missing_hardware_exits_with_one_message(tmp_path):
    if Path("/dev/i2c-1").exists():
        pytest.skip("this machine has an I2C bus")
    out = vrmbox("ui", "--display", "ssd1306", "--profile", "adafruit-oled-bonnet", "--data-dir", str(tmp_path))
    assert out.returncode == EXIT_UNAVAILABLE and out.stderr.startswith("error: display ssd1306")
    assert "Traceback" not in out.stderr
    out = vrmbox("ui", "--profile", "nonexistent", "--data-dir", str(tmp_path))
    assert out.returncode == EXIT_CONFIG and "not found" in out.stderr


@pytest.mark.slow
def test_vrmbox_ui_needs_no_broker_password(tmp_path):
    """The UI's user may not read the broker password file; the UI never speaks MQTT."""
    from processes import Proc
    cfg = tmp_path / "box.toml"
    cfg.write_text('[broker]\nusername = "box"\npassword_file = "/nonexistent/broker.password"\n'
                   '[home_broker]\nurl = "mqtts://127.0.0.1:8883"\nusername = "box"\n'
                   'password_file = "/nonexistent/broker.password"\nca_file = "/nonexistent/ca.pem"\n')
    ui = Proc([sys.executable, "-m", "vrmbox", "ui", "--display", "capture", "--frames", str(tmp_path / "f"),
               "--config", str(cfg), "--data-dir", str(tmp_path / "box")], tmp_path / "ui.log").start()
    try:
        assert ui.proc.poll() is None
    finally:
        assert ui.stop() is not None
    assert list((tmp_path / "f").glob("frame_*.png"))
