"""`vrmbox ui`: the box's own face, as a process of its own (docs/ui.md).

Heavy imports (luma, gpiozero, pygame) happen inside the command, so `vrmbox --help` works on
a machine without them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from vrm_io.notify import notify as systemd_notify   # the unit's Type=notify; a no-op outside systemd

log = logging.getLogger(__name__)

DISPLAYS = ("ssd1306", "sh1106", "dummy", "capture", "gifanim", "pygame", "asciiblock")
DEFAULT_PROFILE = "adafruit-oled-bonnet"


def watchdog_interval() -> float:
    """Half of systemd's WatchdogSec (it passes $WATCHDOG_USEC), else every 10 s."""
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return 10.0
    return max(0.05, usec / 2e6) if usec > 0 else 10.0


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if args.json:
        print(json.dumps({"ok": False, "error": message}))
    else:
        print(f"error: {message}", file=sys.stderr)
    return code


def cmd_ui(args: argparse.Namespace) -> int:
    from device.cli.common import EXIT_CONFIG, EXIT_UNAVAILABLE
    from device.config import UI, ConfigError, load_config
    from hardware.buttons import ButtonsError, make_buttons
    from hardware.display import HARDWARE_KINDS, DisplayError, make_display
    from hardware.profile import ProfileError, emulated_profile, load_profile

    from .app import App, button_socket_of, companion_fingerprint_of, companion_url_of
    from .keyboard import PygameKeys, TerminalKeys

    try:
        # The UI's account cannot read the daemon's secrets, and needs none of them.
        overrides: dict[str, Any] = {"data_dir": str(args.data_dir)} if args.data_dir else {}
        cfg = load_config(args.config, overrides, reader=UI)
        if args.profile or cfg.ui.profile:
            profile = load_profile(args.profile or cfg.ui.profile)
        elif args.display in HARDWARE_KINDS or args.display is None:
            profile = load_profile(DEFAULT_PROFILE)
        else:
            profile = emulated_profile()
    except (ConfigError, ProfileError) as exc:
        return _fail(args, str(exc), EXIT_CONFIG)
    kind = args.display or profile.display.driver
    buttons = keys = None
    try:
        device = make_display(profile, kind, args.frames)
        if kind in HARDWARE_KINDS:
            buttons = make_buttons(profile)
    except (DisplayError, ButtonsError) as exc:
        return _fail(args, str(exc), EXIT_UNAVAILABLE)
    pump = None
    app_box: dict[str, Any] = {}

    def emit(role: str, kind_: str) -> None:
        app_box["app"].key(role, kind_)
    if kind == "pygame":
        keys = PygameKeys(emit, profile.hold_time)
        pump = keys.pump
    app = App(button_socket_of(cfg), device, pump=pump, contrast=profile.display.contrast,
              pair_url=companion_url_of(cfg), cert_fingerprint=companion_fingerprint_of(cfg),
              notify=systemd_notify, watchdog_s=watchdog_interval())
    app_box["app"] = app
    if buttons is not None:
        buttons.attach(app.key)
    elif kind != "pygame":
        keys = TerminalKeys(emit, profile.hold_time, app.clock)
        keys.start()
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    log.info("ui: %s display, profile %s, socket %s", kind, profile.name, app.sock)
    ready = {"done": False}

    def on_frame(state: Any, _device: Any) -> None:
        if not ready["done"]:
            ready["done"] = True
            systemd_notify("READY=1")
            if not sys.stdout.isatty():      # a terminal may be the display itself (asciiblock)
                print(json.dumps({"ok": True, "ready": True, "display": kind, "profile": profile.name,
                                  "socket": str(app.sock)}) if args.json else "READY", flush=True)
    app.on_frame = on_frame
    try:
        app.run()
    except KeyboardInterrupt:
        app.stop()
    finally:
        systemd_notify("STOPPING=1")
        if isinstance(keys, TerminalKeys):
            keys.stop()
        if buttons is not None:
            buttons.close()
        try:
            device.cleanup()
        except Exception as exc:  # a display that is already gone
            log.debug("display cleanup: %s", exc)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("ui", help="the box's own screen and buttons (or an emulator)")
    p.add_argument("--display", choices=DISPLAYS, default=None,
                   help="the panel (ssd1306, sh1106), or an emulator: dummy, capture (PNG frames "
                        "into --frames), gifanim, pygame (a window), asciiblock (this terminal). "
                        "Default: the profile's driver")
    p.add_argument("--profile", default=None,
                   help=f"board profile name or .toml path (vrmbox hardware list); default "
                        f"{DEFAULT_PROFILE} on hardware, a plain 128x64 for emulators")
    p.add_argument("--frames", type=Path, default=None, help="where capture/gifanim write frames")
    p.add_argument("--data-dir", type=Path, default=None, help="box data directory")
    p.add_argument("--config", type=Path, default=None, help="config file (TOML)")
    p.add_argument("--json", action="store_true", help="errors and the ready line as JSON")
    p.set_defaults(func=cmd_ui)
