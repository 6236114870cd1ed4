"""The shared edges (vrm_io): private files are synced and 0600, notify is one helper, and the
two sides of the protocol read paho's NO_CONN each their own way."""
from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from vrm_io import files, mqtt as shared_mqtt
from vrm_io.files import write_private_file
from vrm_io.notify import notify


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace os.fsync by one that records what kind of thing each fd is, then syncs it."""
    calls: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    return calls


@pytest.mark.parametrize("exclusive", [False, True])
def test_a_private_file_is_synced_file_then_directory_and_is_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                exclusive: bool) -> None:
    calls = _record_fsyncs(monkeypatch)
    old = os.umask(0)            # a permissive umask must not widen the mode
    try:
        write_private_file(tmp_path / "secret", b"key bytes\n", exclusive=exclusive)
    finally:
        os.umask(old)
    assert calls == ["file", "dir"]
    path = tmp_path / "secret"
    assert path.read_bytes() == b"key bytes\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]      # no temp file left


def test_replacing_keeps_0600_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    write_private_file(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["export.json"]


def test_exclusive_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"first")
    with pytest.raises(FileExistsError):
        write_private_file(path, b"second", exclusive=True)
    assert path.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == ["key"]


def test_exclusive_without_hard_links_falls_back_to_o_excl_and_still_syncs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_link(*_: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_link)
    calls = _record_fsyncs(monkeypatch)
    write_private_file(tmp_path / "pw", b"hunter2\n", exclusive=True)
    assert (tmp_path / "pw").read_bytes() == b"hunter2\n"
    assert stat.S_IMODE((tmp_path / "pw").stat().st_mode) == 0o600
    assert calls.count("file") == 2 and calls[-1] == "dir"      # the temp file and the real one
    assert [p.name for p in tmp_path.iterdir()] == ["pw"]
    with pytest.raises(FileExistsError):
        write_private_file(tmp_path / "pw", b"other", exclusive=True)


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        write_private_file(tmp_path / "key", b"x", exclusive=True)
    assert list(tmp_path.iterdir()) == []
    assert files.PRIVATE_MODE == 0o600


def test_the_companion_secret_and_the_vendor_identity_are_synced(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from companion_app import security
    from vendor_kit.identity import VendorIdentity
    calls = _record_fsyncs(monkeypatch)
    security.load_secret_key(tmp_path / "companion")
    assert calls == ["file", "dir"]
    calls.clear()
    VendorIdentity.create(tmp_path / "acme", "acme", "Acme", ["bikes"])
    assert calls == ["file", "dir"] * 3
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (tmp_path / "acme").iterdir())


def test_notify_is_silent_without_systemd_and_speaks_with_it(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notify("READY=1")                                   # nothing to talk to: no error
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        notify("WATCHDOG=1")
        assert sock.recv(64) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_no_conn_counts_as_sent_only_where_paho_keeps_it() -> None:
    assert shared_mqtt.queued(mqtt.MQTT_ERR_SUCCESS, paho_resends_offline=False)
    assert shared_mqtt.queued(mqtt.MQTT_ERR_NO_CONN, paho_resends_offline=True)       # the vendor kit
    assert not shared_mqtt.queued(mqtt.MQTT_ERR_NO_CONN, paho_resends_offline=False)  # the box
    assert not shared_mqtt.queued(mqtt.MQTT_ERR_QUEUE_SIZE, paho_resends_offline=True)


def test_connect_sends_properties_only_for_what_is_given() -> None:
    got: list[Any] = []

    class _Client:
        def connect_async(self, host: str, port: int, **kw: Any) -> None:
            got.append(kw["properties"])
    shared_mqtt.connect(_Client(), "h", 1883, keepalive=30, clean_start=True)  # type: ignore[arg-type]
    shared_mqtt.connect(_Client(), "h", 1883, keepalive=30, clean_start=False,  # type: ignore[arg-type]
                        session_expiry=60, receive_maximum=7)
    assert got[0] is None
    assert (got[1].SessionExpiryInterval, got[1].ReceiveMaximum) == (60, 7)


def test_version_comes_from_the_package_metadata_and_the_protocol() -> None:
    import subprocess
    import sys
    from importlib import metadata

    from vrm_io.about import version_line
    from vrm_protocol.messages import VERSION
    expected = f"vrm-vendor {metadata.version('vrmbox')} (VRM protocol v{VERSION})"
    assert version_line("vrm-vendor") == expected
    out = subprocess.run([sys.executable, "-m", "vendor_kit.cli", "--version"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == expected
