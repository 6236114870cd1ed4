"""Who is on the other end of a local socket, and which role that gives them.

Why by the kernel's word: a client never says who it is. The daemon asks the kernel for the
peer's credentials (`SO_PEERCRED`) and looks them up in the config's allow-lists, so neither a
file name nor an argument can make a process the box's button (docs/architecture.md).

Roles:
* `button`  — the box's own face (the UI process, holding GPIO and the display): `button.sock`;
* `companion` — the phone app: `control.sock`;
* `owner`   — the box's own user (the CLI): `control.sock`.
In a single-user development setup (no allow-list configured) the box's own user is allowed on
both sockets, as `owner` on `control.sock` and `button` on `button.sock`; `vrmbox status` says so.
"""
from __future__ import annotations

import grp
import logging
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from typing import Iterable

log = logging.getLogger(__name__)

BUTTON = "button"
COMPANION = "companion"
OWNER = "owner"
ROLES = (BUTTON, COMPANION, OWNER)

CONTROL_SOCKET = "control"
BUTTON_SOCKET = "button"


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(conn: socket.socket) -> Peer:
    """The kernel's record of the connecting process (Linux SO_PEERCRED)."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def _groups_of(uid: int) -> frozenset[int]:
    """A user's groups from the user database: never the peer's effective gid (a setgid
    program would lend it) nor /proc (a pid reuse could fool that)."""
    try:
        entry = pwd.getpwuid(uid)
        return frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except (KeyError, OSError):
        return frozenset()


def _uid(name_or_id: str | int, key: str) -> int:
    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        return int(name_or_id)
    try:
        return pwd.getpwnam(str(name_or_id)).pw_uid
    except KeyError:
        raise AccessConfigError(f"config key '{key}': no user named {name_or_id!r}") from None


def _gid(name_or_id: str | int, key: str) -> int:
    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        return int(name_or_id)
    try:
        return grp.getgrnam(str(name_or_id)).gr_gid
    except KeyError:
        raise AccessConfigError(f"config key '{key}': no group named {name_or_id!r}") from None


class AccessConfigError(ValueError):
    """An allow-list names a user or group this machine does not have."""


@dataclass(frozen=True)
class AllowList:
    users: frozenset[int] = frozenset()
    groups: frozenset[int] = frozenset()

    def admits(self, peer: Peer) -> bool:
        if peer.uid in self.users:
            return True
        return bool(self.groups) and bool(_groups_of(peer.uid) & self.groups)

    def __bool__(self) -> bool:
        return bool(self.users or self.groups)


@dataclass(frozen=True)
class Access:
    """The users allowed on each socket, and the box's own uid."""

    own_uid: int
    control: AllowList = AllowList()
    button: AllowList = AllowList()

    @property
    def single_user(self) -> bool:
        return not (self.control or self.button)

    def role(self, sock: str, peer: Peer) -> str | None:
        """The caller's role on that socket, or None: refused."""
        if sock == BUTTON_SOCKET:
            if self.single_user:
                return BUTTON if peer.uid == self.own_uid else None
            return BUTTON if self.button.admits(peer) else None
        if sock == CONTROL_SOCKET:
            if peer.uid == self.own_uid:
                return OWNER
            if self.control.admits(peer):
                return COMPANION
            return None
        raise ValueError(f"unknown socket {sock!r}")

    def describe(self) -> dict[str, object]:
        return {"single_user": self.single_user, "own_uid": self.own_uid,
                "control_users": sorted(self.control.users), "control_groups": sorted(self.control.groups),
                "button_users": sorted(self.button.users), "button_groups": sorted(self.button.groups)}


def build_access(own_uid: int, control_users: Iterable[str | int] = (),
                 control_groups: Iterable[str | int] = (), button_users: Iterable[str | int] = (),
                 button_groups: Iterable[str | int] = ()) -> Access:
    """Resolve the config's names; the box's own user may not be the button in deployment."""
    control = AllowList(frozenset(_uid(u, "control.control_users") for u in control_users),
                        frozenset(_gid(g, "control.control_groups") for g in control_groups))
    button = AllowList(frozenset(_uid(u, "control.button_users") for u in button_users),
                       frozenset(_gid(g, "control.button_groups") for g in button_groups))
    access = Access(own_uid, control, button)
    if not access.single_user:
        if own_uid in button.users:
            raise AccessConfigError("config key 'control.button_users': the box's own user may not "
                                    "press the button once allow-lists are set (run the UI as its own user)")
        def presses(uid: int) -> bool:
            return uid in button.users or bool(_groups_of(uid) & button.groups)
        if button.groups and presses(own_uid):
            raise AccessConfigError("config key 'control.button_groups': the box's own user is in "
                                    "one of these groups; it may not press the button")
        both = control.users & button.users | {u for u in control.users if presses(u)}
        if both:
            raise AccessConfigError(f"config keys 'control.control_users' and 'control.button_users' "
                                    f"both name uid(s) {sorted(both)}: the phone's user may not press")
    else:
        log.warning("single-user development setup: the box's own user may use both sockets, "
                    "including the button; set control.button_users for a deployed box")
    return access
