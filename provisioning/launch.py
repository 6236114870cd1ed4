"""Start the project's processes on one machine: a private Mosquitto and Python children.

The tests and `vrmbox demo` share these launchers so both run exactly the same broker config
and the same children. Why the broker needs care: a Mosquitto started as root drops to the
account named by `user` in its config, and that account must be able to read the files the
config names (Mosquitto 2 reads the password, ACL and TLS files after dropping privileges) and
write its persistence folder. `Broker` therefore runs its own config with paths relative to its
working directory (so no parent directory, e.g. pytest's 0700 tmp folder, has to be searchable
by that account), and as root hands the folder it writes to an unprivileged account; as an
ordinary user Mosquitto simply runs as that user.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Mapping

from provisioning import accounts
from provisioning.mosquitto import Listener, mosquitto_conf, read_listener

log = logging.getLogger(__name__)

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
# The project's source tree; children import this tree's code (PYTHONPATH), wherever they run.
ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the usual bind-to-0 trick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: the caller's, with this source tree first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _give(path: Path, user: str, *, writable: bool) -> None:
    """As root: `user` owns what Mosquitto writes and reads the rest through its group."""
    if accounts.hand_to(path, user, owner=writable) and not writable:
        path.chmod(0o640 if path.is_file() else 0o750)


class Broker:
    """A private Mosquitto on one port: start, stop (SIGTERM: it saves first), restart, reload.

    Persistence survives restarts (same folder). Either the project's broker config for the
    options given (password file, ACL file, TLS files: copied into workdir so the broker's
    account can read them), or `conf`, a config made by `vrmbox provision`, run as it is.
    """

    def __init__(self, workdir: Path, port: int | None = None, password_file: Path | None = None,
                 tls: Mapping[str, Path] | None = None, acl_file: Path | None = None,
                 conf: Path | None = None, host: str = "127.0.0.1") -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / "mosquitto.log"
        self.host = host
        self.proc: subprocess.Popen | None = None
        self._logf: IO[bytes] | None = None
        if conf is not None:
            if port is not None or password_file or tls or acl_file:
                raise ValueError("give either conf or the options to write one, not both")
            self.conf = Path(conf)
            listener = read_listener(self.conf.read_text())
            self.cwd = self.conf.parent
        else:
            listener = Listener(port or free_port(), host, tls=bool(tls))
            self.conf = self.workdir / "mosquitto.conf"
            self.cwd = self.workdir
            self.conf.write_text(self._own_conf(listener.port, password_file, tls, acl_file))
        self.port, self.tls = listener.port, listener.tls

    def _own_conf(self, port: int, password_file: Path | None, tls: Mapping[str, Path] | None,
                  acl_file: Path | None) -> str:
        user = accounts.broker_user()
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        _give(data, user, writable=True)
        _give(self.workdir, user, writable=False)

        def local(src: Path | None, name: str) -> Path | None:
            if src is None:
                return None
            dst = self.workdir / name
            if Path(src).resolve() != dst.resolve():
                shutil.copyfile(src, dst)
            dst.chmod(0o600)
            _give(dst, user, writable=False)
            return Path(name)

        tls_local = ({k: local(Path(v), f"tls-{k}.pem") for k, v in tls.items()} if tls else None)
        return mosquitto_conf(port=port, bind=self.host, data_dir=Path("data"), user=user,
                              password_file=local(password_file, "passwd"),
                              acl_file=local(acl_file, "acl"), tls=tls_local)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "Broker":
        if self.proc is not None:
            raise RuntimeError("broker already running")
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=self._logf,
                                     stderr=self._logf, cwd=self.cwd, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reap()
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not start listening: {self.log.read_text()[-2000:]}")

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files."""
        if self.proc is None:
            raise RuntimeError("broker not running")
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reap()

    def _reap(self) -> None:
        self.proc = None
        if self._logf is not None:
            self._logf.close()
            self._logf = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> "Broker":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Proc:
    """A child process whose stdout/stderr go to a log file; start() waits for its READY line.

    The child gets its own session (process group), so a terminal's Ctrl-C reaches only the
    parent, which stops its children in order.
    """

    def __init__(self, argv: list[str], log: Path, ready: str = "READY",
                 env: Mapping[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.argv, self.log_path, self.ready = argv, Path(log), ready
        self.env, self.cwd = env, cwd
        self.proc: subprocess.Popen | None = None
        self._logf: IO[bytes] | None = None

    def environment(self) -> dict[str, str]:
        """Read at start, so a change to os.environ before then reaches the child."""
        return dict(self.env) if self.env is not None else child_env()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 20.0) -> "Proc":
        self._logf = logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=logf,
                                     env=self.environment(), cwd=self.cwd, start_new_session=True)
        seen = threading.Event()
        ready = self.ready.encode()

        def pump() -> None:
            assert self.proc and self.proc.stdout
            for line in self.proc.stdout:
                logf.write(line)
                logf.flush()
                if line.strip() == ready:
                    seen.set()
        threading.Thread(target=pump, daemon=True, name=f"log-{self.argv[-1][:20]}").start()
        deadline = time.monotonic() + timeout
        while not seen.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
        if not seen.is_set():
            self.kill()
            raise RuntimeError(f"{self.argv[:4]} not ready:\n{self.log_path.read_text()[-3000:]}")
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running():
            assert self.proc
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after timeout; the exit code (None if never started)."""
        if self.running():
            assert self.proc
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None


def python_module(module: str, *args: str) -> list[str]:
    """argv running `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]

