"""Secret files named in the config, read by the process that uses them when it uses them.

Why not at load: the UI and the phone app load the same config.toml but run as other users
that must not be able to read the daemon's broker password; a secret read at load made them
fail on a file they never needed. An unreadable secret names the file and the account that
needs it, in one line.
"""
from __future__ import annotations

import logging
import os
import pwd
import stat
from pathlib import Path

from ..files import KIB, read_text_limited
from .checks import ConfigError
from .keys import BY_NAME, PROCESS_USER
from .model import BrokerConfig

log = logging.getLogger(__name__)

SECRET_MAX_BYTES = 64 * KIB     # a password or a key is tens of bytes


def _account() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def read_secret_file(key: str, path: Path) -> str:
    """The first line of a secret file; ConfigError naming the file, this account and the one
    the installed box reads it as."""
    needs = ", ".join(sorted(PROCESS_USER[r] for r in BY_NAME[key].readers if r in PROCESS_USER))
    try:
        st = path.stat()
        text = read_text_limited(path, SECRET_MAX_BYTES)
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(key, path, f"cannot be read by {_account()} ({why}); it is the secret of "
                                     f"{needs}, and only that account should read it") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        log.warning("secret file %s has mode %o; it should be 0600 (chmod 600 %s)",
                    path, stat.S_IMODE(st.st_mode), path)
    secret = text.split("\n", 1)[0].rstrip("\r")
    if not secret:
        raise ConfigError(key, path, "is empty")
    return secret


def broker_password(b: BrokerConfig) -> str | None:
    """The password to connect with: password_file read now, else the inline one, else None."""
    if b.password_file is not None:
        return read_secret_file(f"{b.section}.password_file", b.password_file)
    return b.password
