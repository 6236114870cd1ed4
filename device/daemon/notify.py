"""systemd notify for the daemon (Type=notify, WatchdogSec): READY=1, WATCHDOG=1, STOPPING=1.

The protocol itself is shared with the box's face and the companion app (vrm_io/notify.py);
a no-op when not run by systemd.
"""
from __future__ import annotations

from vrm_io.notify import notify

__all__ = ["notify"]
