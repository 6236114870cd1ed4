"""The OLED (or an emulator of it): the only place that constructs luma devices.

Kinds: `ssd1306` / `sh1106` drive the real panel on the profile's bus (I2C or SPI, address,
rotation, contrast from the profile); `dummy` keeps the last frame in memory (tests);
`capture` writes every frame as PNG into a directory (headless trying); `gifanim`, `pygame`,
`asciiblock` are luma.emulator's (a GIF on exit, a window, a terminal).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .profile import Profile

log = logging.getLogger(__name__)

HARDWARE_KINDS = ("ssd1306", "sh1106")
EMULATOR_KINDS = ("capture", "gifanim", "pygame", "asciiblock")
KINDS = HARDWARE_KINDS + ("dummy",) + EMULATOR_KINDS


class DisplayError(RuntimeError):
    """The display cannot be opened; the message says which and why, in plain words."""


def _serial(profile: Profile) -> Any:
    from luma.core.interface.serial import i2c, spi
    d = profile.display
    if d.interface == "i2c":
        return i2c(port=d.port, address=d.address)
    return spi(port=d.spi_port, device=d.spi_device, gpio_DC=d.dc_pin, gpio_RST=d.reset_pin,
               bus_speed_hz=d.spi_speed_hz)


def make_display(profile: Profile, kind: str, frames_dir: Path | None = None) -> Any:
    """A luma device of `kind` sized and rotated as the profile says."""
    d = profile.display
    if kind not in KINDS:
        raise DisplayError(f"unknown display {kind!r}; one of {', '.join(KINDS)}")
    size = {"width": d.width, "height": d.height, "rotate": d.rotate}
    try:
        if kind == "dummy":
            from luma.core.device import dummy
            return dummy(mode="1", **size)
        if kind in EMULATOR_KINDS:
            os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
            if kind != "pygame":
                os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
            from luma.emulator import device as emu
            if kind == "capture":
                out = Path(frames_dir or "frames")
                out.mkdir(parents=True, exist_ok=True)
                return emu.capture(mode="1", transform="none", scale=1,
                                   file_template=str(out / "frame_{0:06}.png"), **size)
            if kind == "gifanim":
                target = Path(frames_dir or ".") / "vrmbox-ui.gif"
                target.parent.mkdir(parents=True, exist_ok=True)
                return emu.gifanim(mode="1", filename=str(target), duration=0.1, **size)
            if kind == "asciiblock":
                if not hasattr(emu, "asciiblock"):
                    raise DisplayError("asciiblock needs a terminal (curses); use --display capture")
                return emu.asciiblock(mode="1", **size)
            class Window(emu.pygame):
                """luma's window, but Esc is the UI's back key: only closing the window quits."""

                def _abort(self) -> bool:
                    return bool(self._pygame.event.peek(self._pygame.QUIT))
            return Window(mode="1", **size)
        if d.driver != kind:
            log.warning("profile %s names a %s display; driving it as %s as asked", profile.name,
                        d.driver, kind)
        from luma.oled import device as oled
        device = getattr(oled, kind)(_serial(profile), **size)
        device.contrast(d.contrast)
        return device
    except DisplayError:
        raise
    except ImportError as exc:
        raise DisplayError(f"display {kind}: a package is missing ({exc.name}); "
                           "install the project's pi or dev extra") from exc
    except Exception as exc:   # luma's DeviceNotFoundError, DevicePermissionError, OSError, curses...
        raise DisplayError(f"display {kind} ({d.interface}"
                           + (f" bus {d.port} address 0x{d.address:02X}" if d.interface == "i2c" else
                              f" port {d.spi_port}.{d.spi_device}")
                           + f") cannot be opened: {type(exc).__name__}: {exc}") from exc
