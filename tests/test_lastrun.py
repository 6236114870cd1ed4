"""device/daemon/lastrun.py: the marker that tells the next start how the previous run ended
(the daemon process itself: tests/test_daemon_closed_and_restarts.py)."""
from __future__ import annotations

import os
from pathlib import Path

from device.daemon import lastrun
from device.store import Store


def test_first_start_then_clean_then_crash(tmp_path: Path) -> None:
    assert lastrun.begin(tmp_path) == "none"
    lastrun.stopped(tmp_path)
    assert lastrun.begin(tmp_path) == "clean"
    # no stopped(): the run was killed
    assert lastrun.begin(tmp_path) == "crash"
    assert (tmp_path / lastrun.MARKER).read_text() == "running\n"
    assert not (tmp_path / (lastrun.MARKER + ".tmp")).exists()


def test_a_marker_that_is_not_ours_is_unknown_and_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("stopped\n")
    (tmp_path / lastrun.MARKER).symlink_to(target)
    assert lastrun.begin(tmp_path) == "unknown"
    assert target.read_text() == "stopped\n"                      # the link's target untouched
    assert (tmp_path / lastrun.MARKER).read_text() == "running\n" and not (tmp_path / lastrun.MARKER).is_symlink()
    os.unlink(tmp_path / lastrun.MARKER)
    os.mkfifo(tmp_path / lastrun.MARKER)                          # would hang a plain open()
    assert lastrun.begin(tmp_path) == "unknown"
    (tmp_path / lastrun.MARKER).write_text("x" * 10_000)
    assert lastrun.begin(tmp_path) == "unknown"


def test_the_start_is_audited(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        lastrun.begin(tmp_path, store)
        lastrun.begin(tmp_path, store)
        got = [(e.event_type, e.data) for e in store.audit.entries() if e.event_type == "daemon_started"]
    assert got == [("daemon_started", {"last_stop": "none"}), ("daemon_started", {"last_stop": "crash"})]
