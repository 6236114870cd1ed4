"""Board profiles: which OLED on which bus, which GPIO pin is which button (hardware/profiles/*.toml).

Why strict and pure: a wrong pin or address on a box in a cupboard is hard to debug, so a profile
is validated completely on load, and every error names the file, the key and the value. Nothing
here touches hardware; `display.py` and `buttons.py` build the devices from a `Profile`.
"""
from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

log = logging.getLogger(__name__)

PROFILE_MAX_BYTES = 64 * 1024     # a profile is under 2 KiB

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
DRIVERS = ("ssd1306", "sh1106", "dummy")
INTERFACES = ("i2c", "spi", "none")
# A box with no face: luma's dummy display (frames kept in memory), no buttons; presses come
# from the UI's account on button.sock (`vrmbox agreement confirm` as vrmbox-ui).
HEADLESS = "dummy"
SIZES = ((128, 64), (128, 32))
# What a button does. The four directions turn with the display (see `logical_role`).
ROLES = ("up", "down", "left", "right", "select", "back", "home")
DIRECTIONS = ("up", "right", "down", "left")       # clockwise
REQUIRED_ROLES = ("up", "down", "select", "back")
BCM_PINS = range(2, 28)        # the 40-pin header's usable BCM GPIOs (0/1 are the HAT EEPROM bus)
I2C_ADDRESSES = range(0x08, 0x78)
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
_BUTTON_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,15}$")
_TOP_KEYS = ("name", "title", "display", "buttons", "input")
_DISPLAY_KEYS = ("driver", "interface", "width", "height", "rotate", "contrast", "address", "port",
                 "spi_port", "spi_device", "dc_pin", "reset_pin", "spi_speed_hz")
_INPUT_KEYS = ("bounce_time", "hold_time", "pull_up")


class ProfileError(ValueError):
    """A profile the box refuses; the message names the file, the key and the value."""

    def __init__(self, source: str, key: str | None, value: Any, reason: str) -> None:
        self.source, self.key, self.value, self.reason = source, key, value, reason
        where = f"profile '{source}'" + (f": key '{key}' = {value!r}" if key else "")
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class DisplaySpec:
    driver: str
    interface: str
    width: int = 128
    height: int = 64
    rotate: int = 0                 # luma's rotate: 0..3 quarter turns clockwise
    contrast: int = 0xCF
    address: int = 0x3C             # I2C only
    port: int = 1                   # I2C bus number
    spi_port: int = 0
    spi_device: int = 0
    dc_pin: int | None = None       # SPI only
    reset_pin: int | None = None
    spi_speed_hz: int = 8_000_000


@dataclass(frozen=True)
class ButtonSpec:
    name: str                        # as printed on the board: "up", "a", "key1"
    pin: int                         # BCM number
    role: str                        # one of ROLES, before rotation


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    display: DisplaySpec
    buttons: tuple[ButtonSpec, ...]
    bounce_time: float | None = 0.02
    hold_time: float = 1.5
    pull_up: bool = True
    source: str = ""
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def pins(self) -> dict[int, str]:
        """Every GPIO the board uses -> what for (buttons and display control lines)."""
        used = {b.pin: f"button {b.name} ({b.role})" for b in self.buttons}
        for key in ("dc_pin", "reset_pin"):
            pin = getattr(self.display, key)
            if pin is not None:
                used[pin] = f"display {key}"
        return dict(sorted(used.items()))


def logical_role(role: str, rotate: int) -> str:
    """The role a button has once the display (and so the board) is turned by `rotate` quarter
    turns clockwise: on a board turned upside down (rotate 2) the joystick's "up" points down.
    luma turns the picture clockwise, so the person turned the board anticlockwise."""
    if role not in DIRECTIONS:
        return role
    return DIRECTIONS[(DIRECTIONS.index(role) - rotate) % 4]


def _int(source: str, key: str, value: Any, allowed: range | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(source, key, value, "must be an integer")
    if allowed is not None and value not in allowed:
        raise ProfileError(source, key, value, f"must be {allowed.start}..{allowed.stop - 1}")
    return value


def _pin(source: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in BCM_PINS:
        raise ProfileError(source, key, value, f"must be a BCM GPIO number {BCM_PINS.start}..{BCM_PINS.stop - 1}")
    return value


def _number(source: str, key: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ProfileError(source, key, value, f"must be a number of seconds {lo}..{hi}")
    return float(value)


def _table(source: str, key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProfileError(source, key, value, "must be a table")
    return value


def _unknown(source: str, prefix: str, table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for k, v in table.items():
        if k not in allowed:
            raise ProfileError(source, f"{prefix}{k}", v, f"unknown key (known: {', '.join(allowed)})")


def _display(source: str, raw: Mapping[str, Any]) -> DisplaySpec:
    _unknown(source, "display.", raw, _DISPLAY_KEYS)
    for k in ("driver", "interface"):
        if k not in raw:
            raise ProfileError(source, f"display.{k}", None, "is required")
    driver, interface = raw["driver"], raw["interface"]
    if driver not in DRIVERS:
        raise ProfileError(source, "display.driver", driver, f"must be one of {', '.join(DRIVERS)}")
    if interface not in INTERFACES:
        raise ProfileError(source, "display.interface", interface, f"must be one of {', '.join(INTERFACES)}")
    width = _int(source, "display.width", raw.get("width", 128))
    height = _int(source, "display.height", raw.get("height", 64))
    if (width, height) not in SIZES:
        raise ProfileError(source, "display.height" if width == 128 else "display.width",
                           height if width == 128 else width, "the UI supports 128x64 and 128x32")
    rotate = _int(source, "display.rotate", raw.get("rotate", 0), range(0, 4))
    contrast = _int(source, "display.contrast", raw.get("contrast", 0xCF), range(0, 256))
    kw: dict[str, Any] = {}
    if (driver == HEADLESS) != (interface == "none"):
        raise ProfileError(source, "display.interface", interface,
                           'the dummy driver goes with interface "none", and only it')
    if interface == "none":
        for k in raw:
            if k not in ("driver", "interface", "width", "height", "rotate", "contrast"):
                raise ProfileError(source, f"display.{k}", raw[k], "is for a real display only")
    elif interface == "i2c":
        for k in ("spi_port", "spi_device", "dc_pin", "spi_speed_hz"):
            if k in raw:
                raise ProfileError(source, f"display.{k}", raw[k], "is for SPI displays only")
        address = raw.get("address", 0x3C)
        if isinstance(address, str):
            try:
                address = int(address, 16)
            except ValueError:
                raise ProfileError(source, "display.address", raw["address"],
                                   "must be an I2C address such as 0x3C") from None
        kw["address"] = _int(source, "display.address", address, I2C_ADDRESSES)
        kw["port"] = _int(source, "display.port", raw.get("port", 1), range(0, 32))
    else:
        if "address" in raw:
            raise ProfileError(source, "display.address", raw["address"], "is for I2C displays only")
        if "dc_pin" not in raw:
            raise ProfileError(source, "display.dc_pin", None, "is required for an SPI display")
        kw["dc_pin"] = _pin(source, "display.dc_pin", raw["dc_pin"])
        kw["spi_port"] = _int(source, "display.spi_port", raw.get("spi_port", 0), range(0, 2))
        kw["spi_device"] = _int(source, "display.spi_device", raw.get("spi_device", 0), range(0, 3))
        kw["spi_speed_hz"] = _int(source, "display.spi_speed_hz", raw.get("spi_speed_hz", 8_000_000),
                                  range(100_000, 32_000_001))
    if raw.get("reset_pin") is not None:
        kw["reset_pin"] = _pin(source, "display.reset_pin", raw["reset_pin"])
    return DisplaySpec(driver, interface, width, height, rotate, contrast, **kw)


def _buttons(source: str, raw: Mapping[str, Any], required: bool = True) -> tuple[ButtonSpec, ...]:
    out: list[ButtonSpec] = []
    for name, spec in raw.items():
        key = f"buttons.{name}"
        if not isinstance(name, str) or not _BUTTON_NAME_RE.match(name):
            raise ProfileError(source, key, name, "a button name is [a-z0-9_], at most 16")
        spec = _table(source, key, spec)
        _unknown(source, f"{key}.", spec, ("pin", "role"))
        if "pin" not in spec or "role" not in spec:
            raise ProfileError(source, key, dict(spec), "needs pin and role")
        pin = _pin(source, f"{key}.pin", spec["pin"])
        role = spec["role"]
        if role not in ROLES:
            raise ProfileError(source, f"{key}.role", role, f"must be one of {', '.join(ROLES)}")
        out.append(ButtonSpec(name, pin, role))
    roles = {b.role for b in out}
    for role in REQUIRED_ROLES if required else ():
        if role not in roles:
            raise ProfileError(source, "buttons", sorted(roles), f"no button has role {role!r}")
    return tuple(out)


def parse_profile(data: Mapping[str, Any], source: str) -> Profile:
    """Validate the parsed TOML of one profile."""
    _unknown(source, "", data, _TOP_KEYS)
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ProfileError(source, "name", name, "must be a lower-case name ([a-z0-9_-], at most 48)")
    title = data.get("title", name)
    if not isinstance(title, str) or not 0 < len(title) <= 120:
        raise ProfileError(source, "title", title, "must be 1..120 characters")
    if "display" not in data:
        raise ProfileError(source, "display", None, "is required")
    display = _display(source, _table(source, "display", data["display"]))
    buttons = _buttons(source, _table(source, "buttons", data.get("buttons", {})),
                       required=display.driver != HEADLESS)
    inp = _table(source, "input", data.get("input", {}))
    _unknown(source, "input.", inp, _INPUT_KEYS)
    bounce = inp.get("bounce_time", 0.02)
    bounce = None if bounce == 0 else _number(source, "input.bounce_time", bounce, 0.0, 1.0)
    hold = _number(source, "input.hold_time", inp.get("hold_time", 1.5), 0.05, 10.0)
    pull_up = inp.get("pull_up", True)
    if not isinstance(pull_up, bool):
        raise ProfileError(source, "input.pull_up", pull_up, "must be true or false")
    seen: dict[int, str] = {}
    control = [(f"display.{k}", getattr(display, k)) for k in ("dc_pin", "reset_pin")]
    for key, pin in [(f"buttons.{b.name}.pin", b.pin) for b in buttons] + control:
        if pin is None:
            continue
        if pin in seen:
            raise ProfileError(source, key, pin, f"GPIO {pin} is already used by {seen[pin]}")
        seen[pin] = key
    if display.interface == "i2c" and display.port == 1 and (set(seen) & {2, 3}):
        pin = sorted(set(seen) & {2, 3})[0]
        raise ProfileError(source, "buttons", pin, f"GPIO {pin} is the I2C bus the display uses")
    spi_bus = {9, 10, 11, 8 - display.spi_device}       # MISO, MOSI, SCLK, the chip select
    if display.interface == "spi" and (set(seen) & spi_bus):
        pin = sorted(set(seen) & spi_bus)[0]
        raise ProfileError(source, "buttons", pin, f"GPIO {pin} is the SPI bus the display uses")
    return Profile(name, title, display, buttons, bounce, hold, pull_up, source)


def load_profile(name_or_path: str | Path, directory: Path = PROFILE_DIR) -> Profile:
    """A profile by name (hardware/profiles/NAME.toml) or by path to a TOML file."""
    text = str(name_or_path)
    path = Path(text) if ("/" in text or text.endswith(".toml")) else directory / f"{text}.toml"
    source = str(path)
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(directory.glob("*.toml")))
        raise ProfileError(source, None, None, f"not found (known profiles: {known})")
    try:
        if path.stat().st_size > PROFILE_MAX_BYTES:   # is_file() above: a regular file, no FIFO or device
            raise ProfileError(source, None, None, f"is larger than {PROFILE_MAX_BYTES} bytes")
        with open(path, "rb") as fh:
            data = tomllib.loads(fh.read(PROFILE_MAX_BYTES + 1).decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(source, None, None, f"cannot be read ({exc})") from None
    except RecursionError:
        raise ProfileError(source, None, None, "is nested too deeply to be a board profile") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(source, None, None, f"is not valid TOML ({exc})") from None
    return parse_profile(data, source)


def list_profiles(directory: Path = PROFILE_DIR) -> list[Profile]:
    """Every shipped profile, by name (a broken one raises ProfileError: they ship validated)."""
    return [load_profile(p, directory) for p in sorted(directory.glob("*.toml"))]


def emulated_profile(height: int = 64) -> Profile:
    """A profile for an emulated display with no board: keyboard only, nothing to claim."""
    return Profile("emulated", f"emulated 128x{height}", DisplaySpec("ssd1306", "i2c", 128, height),
                   (), source="(built in)")
