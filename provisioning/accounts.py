"""The system accounts of an installed box, and handing files to them.

Three accounts split the box (docs/architecture.md): the box's own (`vrmbox`: data, keys, the
daemon), the UI's (`vrmbox-ui`: GPIO/I2C/SPI, may open button.sock only) and the companion
app's (`vrmbox-companion`: may open control.sock only); Mosquitto runs as Debian's
`mosquitto`. install.sh creates them and the systemd units run as them (a test checks the units
name these). Ownership is only changed when we are root and the account exists, so the same
code provisions an installed box, a test root run as root, and a developer's home directory.
"""
from __future__ import annotations

import logging
import grp
import os
import pwd
import stat
from pathlib import Path

log = logging.getLogger(__name__)

BOX_USER = "vrmbox"
UI_USER = "vrmbox-ui"
COMPANION_USER = "vrmbox-companion"
BROKER_USER = "mosquitto"
# Groups giving the board's buses; `vrmbox` and `vrmbox-ui` join those that exist.
HARDWARE_GROUPS = ("gpio", "i2c", "spi")
# Who may open each socket of the daemon (written into the provisioned config).
CONTROL_USERS = (BOX_USER, COMPANION_USER)
BUTTON_USERS = (UI_USER,)
# Accounts a root-started Mosquitto may drop to, best first.
UNPRIVILEGED_BROKER_USERS = (BROKER_USER, "nobody")


def exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def broker_user() -> str:
    """The account Mosquitto runs as: the current user, or an unprivileged one when root
    (a root-started Mosquitto drops to its config's `user`)."""
    if os.geteuid() != 0:
        return current_user()
    for name in UNPRIVILEGED_BROKER_USERS:
        if exists(name):
            return name
    raise RuntimeError(f"running as root, but none of the accounts {UNPRIVILEGED_BROKER_USERS} "
                       "exists for Mosquitto to drop to; install Debian's mosquitto package, "
                       "which creates 'mosquitto'")


def hand_to(path: Path, user: str | None, *, owner: bool = False) -> bool:
    """Let `user` use path: as owner (owner=True) or through its group (root keeps ownership).
    Only as root and when the account exists; says whether ownership was changed."""
    if user is None or os.geteuid() != 0 or not exists(user):
        return False
    entry = pwd.getpwnam(user)
    uid = entry.pw_uid if owner else 0
    st = path.lstat()
    if (st.st_uid, st.st_gid) != (uid, entry.pw_gid):
        os.chown(path, uid, entry.pw_gid, follow_symlinks=False)
    return True


def blocked_dir(path: Path, user: str) -> Path | None:
    """The first directory above path that `user` cannot search (None: it can reach path).
    Mosquitto reads its files after dropping to its account, so this must hold for it."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    if entry.pw_uid == 0:
        return None
    groups = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    for d in reversed(Path(path).absolute().parents):
        try:
            st = d.stat()
        except FileNotFoundError:
            return None
        if st.st_uid == entry.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return d
    return None
