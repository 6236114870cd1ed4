"""Reading a file the person names (config, rules, profiles, imports, secrets): a regular file
only, and never more than a limit.

Why one reader: each reader used to open what it was given. A symlink to /dev/zero grew the
process to gigabytes, and a FIFO hung it for ever. Here the file is opened without blocking,
checked to be a regular file on the open descriptor (no race between the check and the read),
and read up to `limit` bytes; anything else is a FileReadError saying why.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB


class FileReadError(OSError):
    """A file that cannot be taken; str() says why, naming the file."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_limited(path: Path | str, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. FileReadError (errno and strerror
    set) when it is another kind of file or larger; open's own OSError (FileNotFoundError,
    PermissionError, ...) as it is."""
    path = Path(path)
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.stat(os.devnull).st_rdev:
            return b""                      # /dev/null: the usual way to say "an empty file"
        if not stat.S_ISREG(st.st_mode):
            raise FileReadError(errno.EINVAL, f"is {_kind(st.st_mode)}, not a regular file", str(path))
        if st.st_size > limit:
            raise FileReadError(errno.EFBIG, f"is larger than {limit} bytes", str(path))
        chunks, total = [], 0
        while True:                         # a file that grows while read is still cut at limit
            chunk = os.read(fd, min(64 * KIB, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise FileReadError(errno.EFBIG, f"is larger than {limit} bytes", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text_limited(path: Path | str, limit: int) -> str:
    """As read_limited, decoded as UTF-8 (UnicodeDecodeError for anything else)."""
    return read_limited(path, limit).decode("utf-8")
