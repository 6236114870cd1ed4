"""Files the person names (config, rules, imports, secrets) are taken only as regular files of a
bounded size (device/files.py): a symlink to /dev/zero, a FIFO or a huge file is refused with a
clear error at once, never read for ever or waited on. And `vrmbox config check` judges the
socket allow-lists as `vrmbox run` does, takes --config, and prints no raw control character."""
from __future__ import annotations

import errno
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from device.client import MAX_REQUEST
from device.files import FileReadError, read_limited

ROOT = Path(__file__).resolve().parent.parent


def vrmbox(*args: str, config: Path | str = os.devnull, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vrmbox", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "VRMBOX_CONFIG": str(config)})


@pytest.fixture
def hostile(tmp_path):
    """A symlink to /dev/zero, a FIFO with no writer, and a file one byte over 256 KiB."""
    zero = tmp_path / "zero.toml"
    zero.symlink_to("/dev/zero")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_REQUEST + 1))
    return {"zero": zero, "fifo": fifo, "big": big}


def test_the_reader_takes_only_regular_files_up_to_the_limit(tmp_path, hostile):
    ok = tmp_path / "ok"
    ok.write_bytes(b"x" * 100)
    assert read_limited(ok, 100) == b"x" * 100
    with pytest.raises(FileReadError, match="larger than 99 bytes") as e:
        read_limited(ok, 99)
    assert e.value.errno == errno.EFBIG
    with pytest.raises(FileReadError, match="a character device"):
        read_limited(hostile["zero"], 1 << 20)
    with pytest.raises(FileReadError, match="a pipe"):          # no writer, yet no wait
        read_limited(hostile["fifo"], 1 << 20)
    with pytest.raises(FileReadError, match="a directory"):
        read_limited(tmp_path, 1 << 20)
    with pytest.raises(FileNotFoundError):
        read_limited(tmp_path / "missing", 10)


@pytest.mark.parametrize("kind, words", [("zero", "character device"), ("fifo", "pipe"),
                                         ("big", "larger than")])
def test_a_hostile_config_file_is_refused_at_once(hostile, kind, words):
    for args in (["status"], ["config", "check"], ["rules", "show"]):
        r = vrmbox(*args, config=hostile[kind], timeout=20)
        assert r.returncode != 0 and words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


@pytest.mark.parametrize("kind, words", [("zero", "character device"), ("fifo", "pipe"),
                                         ("big", "larger than")])
def test_a_hostile_rules_file_is_refused_at_once(tmp_path, hostile, kind, words):
    r = vrmbox("rules", "set", str(hostile[kind]), "--data-dir", str(tmp_path / "box"), timeout=20)
    assert r.returncode == 1 and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_hostile_import_file_is_refused_at_once(tmp_path, hostile):
    for kind in ("zero", "fifo"):
        r = vrmbox("claims", "import", str(hostile[kind]), "--data-dir", str(tmp_path / "box"), timeout=20)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert "not a regular file" in r.stderr, r.stderr


def test_config_check_refuses_what_run_refuses(tmp_path):
    me = pwd.getpwuid(os.geteuid()).pw_name
    conf = tmp_path / "c.toml"
    conf.write_text(f'[control]\ncontrol_users = ["{me}"]\nbutton_users = ["{me}"]\n')
    check = vrmbox("config", "check", str(conf))
    run = vrmbox("run", "--data-dir", str(tmp_path / "box"), config=conf)
    assert check.returncode == 1 and run.returncode != 0, (check.stderr, run.stderr)
    assert "control.button_users" in check.stderr and "control.button_users" in run.stderr
    assert "may not press" in check.stderr, check.stderr


def test_config_check_takes_config_like_every_command(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('[intake]\nmax_queue = 500\n')
    by_flag = vrmbox("config", "check", "--config", str(conf))
    by_arg = vrmbox("config", "check", str(conf))
    assert by_flag.returncode == by_arg.returncode == 0, by_flag.stderr
    assert by_flag.stdout == by_arg.stdout and str(conf) in by_flag.stdout
    other = tmp_path / "d.toml"
    other.write_text("")
    both = vrmbox("config", "check", str(conf), "--config", str(other))
    assert both.returncode == 2 and "two different files" in both.stderr


def test_config_check_prints_no_raw_control_character_from_its_path(tmp_path):
    path = tmp_path / "evil\x1b[2J\x07.toml"
    for exists in (False, True):
        if exists:
            path.write_text("[intake]\nmax_queue = 0\n")
        r = vrmbox("config", "check", str(path))
        assert r.returncode == 1, r.stderr
        assert "\x1b" not in r.stderr + r.stdout and "\x07" not in r.stderr + r.stdout, repr(r.stderr)


def test_dev_null_is_an_empty_file_as_everywhere():
    assert read_limited(os.devnull, 10) == b""
    assert vrmbox("config", "check", config=os.devnull).returncode == 0
