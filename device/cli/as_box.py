"""Root on an installed box asks as the box's own account.

Why: the daemon admits only the accounts on its allow-lists, so `sudo vrmbox status` used to get
"uid 0 may not use this socket" and nothing more; and a command run offline as root would leave
root-owned files in the box's data. Root may become any account anyway, so `vrmbox` does it for
the box's commands: it drops to `vrmbox` (never to the UI's account, so root's commands are no
press). Set-up commands (provision, broker, config, hardware) stay root.
"""
from __future__ import annotations

import logging
import os
import pwd
import sys
from typing import Mapping

from ..config import ENV_CONFIG, SYSTEM_CONFIG
from ..config.keys import DAEMON, PROCESS_USER

log = logging.getLogger(__name__)

BOX_ACCOUNT = PROCESS_USER[DAEMON]
# Commands that root runs as root: they set the box up, or are processes with units of their own.
AS_ROOT = frozenset({"provision", "broker", "config", "hardware", "demo", "run", "ui", "companion"})


def installed(env: Mapping[str, str] = os.environ) -> bool:
    """A box installed system-wide (its config in /etc and its account exist)."""
    if env.get(ENV_CONFIG) and env[ENV_CONFIG] != str(SYSTEM_CONFIG):
        return False
    try:
        pwd.getpwnam(BOX_ACCOUNT)
    except KeyError:
        return False
    return SYSTEM_CONFIG.is_file()


def drop_to_box_account(command: str | None) -> bool:
    """As root on an installed box, become the box's account for `command`; True if it did."""
    if os.geteuid() != 0 or command is None or command in AS_ROOT or not installed():
        return False
    pw = pwd.getpwnam(BOX_ACCOUNT)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    os.environ["HOME"] = "/nonexistent"
    print(f"vrmbox: root asks as {BOX_ACCOUNT}, the box's own account (only {PROCESS_USER['ui']} "
          "can press the button)", file=sys.stderr)
    return True
