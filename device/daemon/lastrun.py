"""Whether the daemon's previous run ended cleanly: a one-word marker in the data dir.

`begin` (at start, after the instance lock is held) reads what the previous run left and writes
`running`; `stopped` (after the store is closed on a clean stop) writes `stopped`. A run killed
(SIGKILL, a crash, the power) never writes `stopped`, so the next start finds `running` and
says `crash`. The marker is replaced atomically and synced, so a power cut leaves either word
whole. No marker at all: the first start in this data dir (`none`).
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

MARKER = "last_run"
RUNNING, STOPPED = "running", "stopped"
MAX_MARKER_BYTES = 64           # the words above; anything larger is not ours
LastStop = Literal["clean", "crash", "none", "unknown"]


def _read(path: Path) -> str | None:
    """The marker's word, None when there is none; never follows a link, never reads much."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:      # a link or something unreadable: not a marker we wrote
        log.warning("cannot read %s: %s", path, exc)
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):   # a FIFO or a device is no marker of ours
            return ""
        return os.read(fd, MAX_MARKER_BYTES + 1).decode("ascii", "replace").strip()
    finally:
        os.close(fd)


def _write(path: Path, word: str) -> None:
    """Replace the marker with `word`, synced (file and directory) before it counts."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (word + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def judge(word: str | None) -> LastStop:
    """What the previous run's marker says about how it ended."""
    if word is None:
        return "none"
    return {STOPPED: "clean", RUNNING: "crash"}.get(word, "unknown")


def begin(data_dir: str | Path, store: Any = None) -> LastStop:
    """At start: how the previous run ended, also written to the store's audit log
    (`daemon_started`, `last_stop`); from now on this run counts as running."""
    path = Path(data_dir) / MARKER
    last = judge(_read(path))
    try:
        _write(path, RUNNING)
    except OSError as exc:   # a full disk must not stop the box from starting; the next start says unknown
        log.warning("cannot write %s: %s", path, exc)
    if last == "crash":
        log.warning("the previous run did not stop cleanly (killed, crashed or lost power)")
    else:
        log.info("previous run: %s", last)
    if store is not None:
        try:
            store.record_event("daemon_started", {"last_stop": last})
        except Exception as exc:   # e.g. storage full: the box still starts (status says it)
            log.warning("could not audit the start: %r", exc)
    return last


def stopped(data_dir: str | Path) -> None:
    """After a clean stop (the store closed): the next start says `clean`."""
    try:
        _write(Path(data_dir) / MARKER, STOPPED)
    except OSError as exc:
        log.warning("cannot record the clean stop in %s: %s", data_dir, exc)
