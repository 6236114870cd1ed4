"""systemd's notify protocol for Type=notify units with WatchdogSec: READY=1, WATCHDOG=1,
STOPPING=1 (the daemon, the box's face and the companion app all send them).

A no-op when not run by systemd (no $NOTIFY_SOCKET), so no process needs a flag for it.
`sdnotify` is imported only when there is a socket to talk to: on the Pi it comes from the OS
(python3-sdnotify), and commands such as `vrmbox --help` must work without it.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def notify(state: str) -> None:
    """Send `state` (e.g. "READY=1") to systemd, if systemd is listening."""
    if os.environ.get("NOTIFY_SOCKET"):
        import sdnotify
        sdnotify.SystemdNotifier().notify(state)
