"""`vrmbox hardware list|check`: the shipped board profiles, and a check of one (by name or path)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from typing import Any

from .profile import DIRECTIONS, PROFILE_DIR, Profile, ProfileError, list_profiles, load_profile, logical_role

log = logging.getLogger(__name__)


def _describe(p: Profile) -> dict[str, Any]:
    return {"name": p.name, "title": p.title, "source": p.source, "display": asdict(p.display),
            "buttons": [{"name": b.name, "pin": b.pin, "role": b.role,
                         "acts_as": logical_role(b.role, p.display.rotate)} for b in p.buttons],
            "pins": p.pins(), "hold_time": p.hold_time, "bounce_time": p.bounce_time,
            "pull_up": p.pull_up}


def _text(p: Profile) -> str:
    d = p.display
    bus = ("no bus (frames kept in memory)" if d.interface == "none" else
           f"I2C bus {d.port} address 0x{d.address:02X}" if d.interface == "i2c" else
           f"SPI {d.spi_port}.{d.spi_device} DC GPIO{d.dc_pin}"
           + (f" RST GPIO{d.reset_pin}" if d.reset_pin is not None else ""))
    lines = [f"{p.name}: {p.title}",
             f"  display: {d.driver} {d.width}x{d.height} on {bus}, rotate {d.rotate * 90} deg, "
             f"contrast {d.contrast}",
             f"  buttons (pull-up {'on' if p.pull_up else 'off'}, hold {p.hold_time}s, "
             f"bounce {p.bounce_time}s):"]
    for b in sorted(p.buttons, key=lambda b: b.pin):
        acts = logical_role(b.role, d.rotate)
        turned = f" -> acts as {acts} (rotated)" if acts != b.role and b.role in DIRECTIONS else ""
        lines.append(f"    GPIO{b.pin:<3} {b.name:<8} {b.role}{turned}")
    for pin, what in p.pins().items():
        if what.startswith("display"):
            lines.append(f"    GPIO{pin:<3} {what}")
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    try:
        profiles = list_profiles()
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([_describe(p) for p in profiles], sort_keys=True))
    else:
        for p in profiles:
            d = p.display
            print(f"{p.name}\t{d.driver} {d.interface} {d.width}x{d.height}, "
                  f"{len(p.buttons)} buttons\t{p.title}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    try:
        p = load_profile(args.profile)
    except ProfileError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"ok": True, **_describe(p)}, sort_keys=True) if args.json else _text(p) + "\nok")
    return 0


def register(subparsers: Any) -> None:
    hw = subparsers.add_parser("hardware", help="board profiles: list, check").add_subparsers(
        dest="hardware_command", metavar="ACTION", required=True)
    p = hw.add_parser("list", help=f"the shipped board profiles ({PROFILE_DIR})")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = hw.add_parser("check", help="validate a profile (name or path) and print its pin map")
    p.add_argument("profile", help="profile name (see list) or path to a .toml file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)
