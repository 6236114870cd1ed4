"""systemd notify (Type=notify, WatchdogSec): READY=1, WATCHDOG=1, STOPPING=1.

A no-op when not run by systemd (no $NOTIFY_SOCKET), so the daemon needs no flag for it.
"""
from __future__ import annotations

import logging
import os

import sdnotify

log = logging.getLogger(__name__)


def notify(state: str) -> None:
    if os.environ.get("NOTIFY_SOCKET"):
        sdnotify.SystemdNotifier().notify(state)
