"""Private files (mode 0600) written so that a crash or a power cut leaves either the old
content, the whole new content, or (for a new file) nothing — never an empty or half file.

Why one module: keys, the companion's secret, vendor identities, exports and broker passwords
are all written this way, and "fsync the file, rename or link it into place, fsync the
directory" is easy to get almost right. The data is written to a 0600 temporary sibling first
(never briefly readable by others, whatever the umask), synced, then:

* `write_private_file(path, data)` renames it over `path` (the file is replaced);
* `write_private_file(path, data, exclusive=True)` links it to `path`, which fails with
  `FileExistsError` if `path` exists: two first starts racing agree on one key, and nothing
  is ever overwritten. On a file system without hard links it falls back to `O_EXCL`.
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_MODE = 0o600
# file systems that cannot hard-link (vfat, some FUSE mounts) say so with one of these
_NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


def fsync_dir(path: Path) -> None:
    """Make a rename, link or unlink in `path` durable (best effort: some systems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_synced(fd: int, data: bytes) -> None:
    """All of `data`, then fsync; closes `fd` whatever happens."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _durable_temp(path: Path, data: bytes) -> Path:
    """A synced 0600 sibling of `path` holding `data`, to be renamed or linked into place."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)          # the umask may have taken bits; never more than 0600
        _write_synced(fd, data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _create_excl(path: Path, data: bytes) -> None:
    """Without hard links: create `path` with O_EXCL and write in place (synced)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)
    except BaseException:
        os.close(fd)
        raise
    _write_synced(fd, data)


def write_private_file(path: Path | str, data: bytes, *, exclusive: bool = False) -> None:
    """Write `data` to `path` with mode 0600, durably (file and directory synced).

    `exclusive`: create only; `FileExistsError` if `path` exists (its content is untouched)."""
    path = Path(path)
    tmp = _durable_temp(path, data)
    try:
        if not exclusive:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                log.debug("%s: no hard links here (%s); creating with O_EXCL", path.parent, exc)
                _create_excl(path, data)
    finally:
        tmp.unlink(missing_ok=True)          # after a replace it is gone already
    fsync_dir(path.parent)
