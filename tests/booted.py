"""A booted Debian 12 for the `installed` lane (tests/test_installed.py): a real systemd as PID 1
in a systemd-nspawn container, sharing the host's network, into which the box is installed from a
clean clone exactly as the README says.

* `base_root()`: a debootstrapped bookworm (`--variant=minbase`), cached by content under
  /var/cache/vrmbox-tests/ (key: suite, mirror, packages, HARNESS_VERSION), built in a temporary
  folder next to it and renamed into place, so an interrupted build never leaves a half cache.
* `Machine`: a copy of that root per test module, booted with `systemd-nspawn -b`; commands run in
  it through `nsenter` with a clean environment (`run()`, or `start()` for one that runs in the
  background in a session of its own, whose process group can be signalled as a terminal's
  Ctrl-C would); `poweroff()` and `boot()` again; `close()` always stops it and deletes its folder.
* `clone_into()`: `git clone --no-local` of this repository into the machine, at HEAD.

Every wait polls for its condition with a deadline; no sleep decides anything.
"""
from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import pytest

# Bump when the way the root is built changes (new configuration steps below), so old caches
# are not reused.
HARNESS_VERSION = "booted-1"
SUITE = "bookworm"
CACHE_DIR = Path("/var/cache/vrmbox-tests")
MACHINES_DIR = Path("/var/tmp")            # per-test copies (same file system as the cache here)
HOSTNAME = "vrmbox"                        # the box's name inside (its certificates carry it)
# What install.sh needs on a fresh Debian (so that it finds its packages present and installs
# nothing from apt), what the lane's checks use (procps: pgrep; iproute2: ip), and what makes a
# booted system (systemd-sysv: /sbin/init; dbus: systemctl's and systemd-analyze's bus).
INCLUDE = ("systemd", "systemd-sysv", "dbus", "ca-certificates", "sudo", "git", "python3",
           "python3-venv", "python3-pip", "mosquitto", "mosquitto-clients", "i2c-tools", "procps",
           "iproute2")
TOOLS = ("systemd-nspawn", "debootstrap", "nsenter", "git", "cp")
PATH_INSIDE = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Read-only binds that make pip inside work as it does on the host (each only if it exists):
# its configuration files; the folders and the CA bundle they name are added by pip_binds().
PIP_CONFIGS = (Path("/etc/pip.conf"), Path("/etc/xdg/pip"), Path.home() / ".config" / "pip",
               Path.home() / ".pip")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Units that cannot work in a container, masked in the base root. None so far: a minbase
# bookworm boots to `running` under systemd-nspawn (no udev-triggered or hardware units are
# installed by the packages above). Add "name.service" here, with the reason, if one appears.
MASK: tuple[str, ...] = ()


class MachineError(AssertionError):
    """A command inside the machine failed, or the machine did not boot or stop in time."""


# --------------------------------------------------------------------------- requirements
def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_requirements() -> list[str]:
    """Why this machine cannot run the lane ([] when it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (systemd-nspawn and debootstrap need root)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        problems.append(f"missing {', '.join(missing)} (setup.sh installs systemd-container and "
                        "debootstrap)")
    return problems


def require() -> None:
    """Skip when the lane cannot run here, unless under CI (CI set), where that is a failure."""
    problems = missing_requirements()
    if not problems:
        return
    message = "installed lane: " + "; ".join(problems)
    if in_ci():
        pytest.fail(message + " (CI is set: the lane must run)", pytrace=False)
    pytest.skip(message)


# --------------------------------------------------------------------------- the mirror
def _deb822(text: str) -> list[dict[str, str]]:
    stanzas, cur, key = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, None
        elif line.startswith("#"):
            continue
        elif line[0] in " \t" and key:
            cur[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            cur[key] = value.strip()
    if cur:
        stanzas.append(cur)
    return stanzas


@dataclass(frozen=True)
class Mirror:
    url: str
    keyring: str | None


def debian_mirror(suite: str = SUITE) -> Mirror:
    """The host's Debian mirror for `suite`, read from its apt sources (never written down here)."""
    sources = Path("/etc/apt/sources.list.d")
    files = sorted(sources.glob("*.sources")) if sources.is_dir() else []
    for f in files:
        for st in _deb822(f.read_text()):
            if st.get("enabled", "yes").lower() == "no" or "deb" not in st.get("types", "").split():
                continue
            if suite in st.get("suites", "").split() and "main" in st.get("components", "").split():
                return Mirror(st["uris"].split()[0], st.get("signed-by"))
    lists = [Path("/etc/apt/sources.list"), *(sorted(sources.glob("*.list")) if sources.is_dir() else [])]
    for f in lists:
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            m = re.match(r"\s*deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<url>\S+)\s+(?P<suite>\S+)\s+(?P<comps>.*)", line)
            if m and m["suite"] == suite and "main" in m["comps"].split():
                signed = re.search(r"signed-by=(\S+)", m["opts"] or "")
                return Mirror(m["url"], signed.group(1) if signed else None)
    raise MachineError(f"no apt source for Debian {suite} main on this host "
                       f"(looked in {', '.join(str(f) for f in [*files, *lists])})")


# --------------------------------------------------------------------------- the base root
def cache_key(mirror: Mirror, suite: str = SUITE, include: Iterable[str] = INCLUDE) -> str:
    blob = json.dumps({"suite": suite, "mirror": mirror.url, "include": sorted(set(include)),
                       "mask": sorted(MASK), "hostname": HOSTNAME, "harness": HARNESS_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def base_root(log: Callable[[str], None] = print) -> Path:
    """The cached root for this suite, mirror and package list; built first if missing."""
    mirror = debian_mirror()
    key = cache_key(mirror)
    final = CACHE_DIR / f"{SUITE}-{key[:20]}"
    if (final / "usr" / "lib" / "os-release").exists():
        return final
    CACHE_DIR.mkdir(parents=True, exist_ok=True, mode=0o755)
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # another run may be building the same root
        if (final / "usr" / "lib" / "os-release").exists():
            return final
        for stale in CACHE_DIR.glob(".build-*"):  # left by an interrupted build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=CACHE_DIR))
        try:
            started = time.monotonic()
            log(f"booted: building the {SUITE} root from {mirror.url} into {final} (cached afterwards)")
            _debootstrap(build, mirror)
            _configure(build)
            build.chmod(0o755)
            os.rename(build, final)               # atomic: the cache is whole or absent
            log(f"booted: root built in {time.monotonic() - started:.0f} s")
        finally:
            if build.exists():
                shutil.rmtree(build, ignore_errors=True)
    return final


def _debootstrap(target: Path, mirror: Mirror) -> None:
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}"]
    if mirror.keyring and Path(mirror.keyring).is_file():
        argv.append(f"--keyring={mirror.keyring}")
    argv += [SUITE, str(target), mirror.url]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=1800,
                       env={"PATH": PATH_INSIDE, "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"})
    if p.returncode != 0:
        logfile = target / "debootstrap" / "debootstrap.log"
        extra = logfile.read_text()[-4000:] if logfile.exists() else ""
        raise MachineError(f"debootstrap failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}\n{extra}")


def _configure(root: Path) -> None:
    """What a freshly installed Debian has that debootstrap does not write. No root password is
    set (nobody logs in: commands enter through nsenter)."""
    (root / "etc" / "hostname").write_text(HOSTNAME + "\n")
    (root / "etc" / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n"
                                        "::1\tlocalhost ip6-localhost ip6-loopback\n")
    # Each Machine writes its own machine-id; the base carries none (a copy is not the same box).
    (root / "etc" / "machine-id").write_text("")
    dbus_id = root / "var" / "lib" / "dbus" / "machine-id"
    if dbus_id.is_file() and not dbus_id.is_symlink():
        dbus_id.unlink()
    for unit in MASK:
        link = root / "etc" / "systemd" / "system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


# --------------------------------------------------------------------------- pip inside
def pip_binds() -> list[Path]:
    """The host's pip configuration, the CA bundle and the local folders that configuration
    names (find-links, file:// indexes, constraint files): the paths that exist, outermost only."""
    found: list[Path] = [p for p in PIP_CONFIGS if p.exists()]
    texts = []
    for p in list(found):
        files = sorted(p.glob("*")) if p.is_dir() else [p]
        texts += [f.read_text(errors="replace") for f in files if f.is_file()]
    texts += [v for k, v in os.environ.items() if k.startswith("PIP_")]
    for text in texts:
        for word in re.split(r"[\s=,]+", text):
            word = word.removeprefix("file://")
            if not word.startswith("/") or not Path(word).exists():
                continue
            p = Path(word)
            # a simple index (.../simple) links to its files with ../../files/...: bind its parent
            found.append(p.parent if p.name == "simple" else p)
    if CA_BUNDLE.exists():
        found.append(CA_BUNDLE)
    out: list[Path] = []
    for p in found:
        if p in out or any(p.is_relative_to(q) for q in out):
            continue
        out = [q for q in out if not q.is_relative_to(p)] + [p]
    return out


# --------------------------------------------------------------------------- the machine
MACHINE_PREFIX = "vrmbox-lane-"
PID_FILE = "nspawn.pid"


def _is_nspawn(pid: int) -> bool:
    return _comm(pid) == "systemd-nspawn"


def reap_stale(log: Callable[[str], None] = print) -> None:
    """Delete machine folders left by a run that was killed before it could clean up: those
    whose systemd-nspawn is gone. (A machine still running is left alone and reported.)"""
    for d in MACHINES_DIR.glob(f"{MACHINE_PREFIX}*"):
        if not d.is_dir():
            continue
        try:
            pid = int((d / PID_FILE).read_text())
        except (FileNotFoundError, ValueError):
            pid = None
        if pid is not None and _is_nspawn(pid):
            log(f"booted: {d} is still running (systemd-nspawn pid {pid}), left from another run")
            continue
        if time.time() - d.stat().st_mtime < 60 and pid is None:
            continue                               # being created right now by another run
        log(f"booted: removing {d}, left by an interrupted run")
        subprocess.run(["rm", "-rf", "--one-file-system", str(d)], timeout=300)


def _ns_pid(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return kids


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


class Machine:
    """A per-test copy of the base root, booted with systemd as PID 1 (see the module doc)."""

    def __init__(self, base: Path, name: str | None = None, log: Callable[[str], None] = print) -> None:
        self.name = name or f"{MACHINE_PREFIX}{uuid.uuid4().hex[:8]}"
        self.log = log
        reap_stale(log)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=MACHINES_DIR))
        atexit.register(self.close)           # a backstop: the fixture's finally is the rule
        self.root = self.dir / "root"
        self.nspawn: subprocess.Popen | None = None
        self.init_pid: int | None = None
        self.boots = 0
        self.started = 0                      # commands start()ed, for their log files
        started = time.monotonic()
        p = subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(self.root)],
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            self.close()
            raise MachineError(f"copying {base} failed: {p.stderr}")
        (self.root / "etc" / "machine-id").write_text(uuid.uuid4().hex + "\n")
        self.log(f"booted: {self.name}: root copied to {self.root} in {time.monotonic() - started:.1f} s")

    # ------------------------------------------------------------------ boot, stop
    def boot(self, timeout: float = 120.0) -> str:
        """Start systemd in the container; wait until the system is up. Returns `running` or
        `degraded` (then the failed units are printed)."""
        if self.nspawn is not None and self.nspawn.poll() is None:
            raise MachineError(f"{self.name} is already running")
        argv = ["systemd-nspawn", "-D", str(self.root), "-b", "--register=no", "--keep-unit",
                "-M", self.name, "--console=passive", "--quiet"]
        argv += [f"--bind-ro={p}" for p in pip_binds()]
        self.boots += 1
        logf = open(self.dir / f"nspawn-{self.boots}.log", "wb")
        self.nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        logf.close()
        (self.dir / PID_FILE).write_text(f"{self.nspawn.pid}\n")
        deadline = time.monotonic() + timeout
        self.init_pid = None
        mine = _ns_pid(os.getpid())
        while self.init_pid is None:
            self._check_alive("while booting")
            for kid in _children(self.nspawn.pid):
                try:
                    if _ns_pid(kid) != mine and _comm(kid) == "systemd":
                        self.init_pid = kid
                except (FileNotFoundError, ProcessLookupError):
                    continue
            if self.init_pid is None:
                self._before(deadline, "systemd to start in the container")
                time.sleep(0.05)
        state = ""
        while True:
            left = deadline - time.monotonic()
            p = self.run(["systemctl", "is-system-running", "--wait"], check=False,
                         timeout=max(5.0, min(left, 60.0)))
            state = p.stdout.strip()
            if state in ("running", "degraded"):
                break
            # `offline` (and nothing on stderr) is also what systemctl answers before PID 1 has made
            # /run/systemd/system, at the very start of a boot: not yet an answer
            early = state == "offline" and self.run(["test", "-d", "/run/systemd/system"], check=False,
                                                    timeout=10).returncode != 0
            if state in ("maintenance", "stopping", "offline") and not early and "Failed to connect" not in p.stderr:
                raise MachineError(f"{self.name}: the system is {state!r} after boot:\n"
                                   f"{self.run(['systemctl', '--failed', '--no-pager'], check=False).stdout}")
            self._before(deadline, f"the system to finish booting (is-system-running: {state!r} {p.stderr.strip()!r})")
            time.sleep(0.2)
        self.log(f"booted: {self.name}: boot {self.boots} {state} in {timeout - (deadline - time.monotonic()):.1f} s")
        if state == "degraded":
            self.log(self.run(["systemctl", "--failed", "--no-pager"], check=False).stdout)
        return state

    def _check_alive(self, doing: str) -> None:
        if self.nspawn is None or self.nspawn.poll() is not None:
            code = None if self.nspawn is None else self.nspawn.returncode
            raise MachineError(f"systemd-nspawn for {self.name} exited ({code}) {doing}:\n{self.nspawn_log()}")

    def _before(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise MachineError(f"{self.name}: timed out waiting for {what}\n{self.nspawn_log()}")

    def nspawn_log(self) -> str:
        f = self.dir / f"nspawn-{self.boots}.log"
        return f.read_text(errors="replace")[-4000:] if f.exists() else ""

    def running(self) -> bool:
        return self.nspawn is not None and self.nspawn.poll() is None

    def poweroff(self, timeout: float = 90.0) -> int:
        """`systemctl poweroff` inside; wait for systemd-nspawn to exit. Its exit code."""
        self._check_alive("before poweroff")
        assert self.nspawn is not None
        self.run(["systemctl", "poweroff", "--no-block"], timeout=30)
        try:
            code = self.nspawn.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise MachineError(f"{self.name} did not power off within {timeout:.0f} s; killed")
        self.init_pid = None
        self.log(f"booted: {self.name}: powered off (systemd-nspawn exit {code})")
        return code

    def kill(self) -> None:
        """Stop it now: SIGTERM to systemd-nspawn (it halts the container), SIGKILL if that
        does not end it within 20 s (the container's PID 1 too: that ends every process in it)."""
        if self.nspawn is None or self.nspawn.poll() is not None:
            return
        self.nspawn.send_signal(signal.SIGTERM)
        try:
            self.nspawn.wait(timeout=20)
        except subprocess.TimeoutExpired:
            if self.init_pid:
                try:
                    os.kill(self.init_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.nspawn.kill()
            self.nspawn.wait(timeout=20)

    def close(self) -> None:
        """Stop the machine if it runs and delete its folder (also after a failed test)."""
        try:
            self.kill()
        finally:
            if self.dir.exists():
                subprocess.run(["rm", "-rf", "--one-file-system", str(self.dir)], timeout=300)

    def __enter__(self) -> "Machine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ commands
    def run(self, cmd: Sequence[str] | str, user: str | None = None, check: bool = True,
            timeout: float = 120.0, input: str | None = None, cwd: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command in the machine (a string goes to `sh -c`), as root or, with `user`,
        through `runuser -u USER --`; a clean environment (PATH, HOME, LANG) plus `env`.
        `check`: a non-zero exit raises MachineError with the command and its output."""
        self._check_alive(f"before {cmd!r}")
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if user is not None:
            argv = ["runuser", "-u", user, "--", *argv]
        inner = ["env", "-i", f"PATH={PATH_INSIDE}", "HOME=/root", "LANG=C.UTF-8", "TERM=dumb"]
        if cwd:
            inner[1:1] = ["-C", cwd]
        inner += [f"{k}={v}" for k, v in (env or {}).items()]
        # `timeout` inside bounds the command where it runs (killing nsenter alone would leave
        # the command running in the container); the host-side timeout is only a backstop.
        full = ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-i", "-p", "--",
                *inner, "timeout", "--kill-after=5", f"{timeout:.0f}", *argv]
        try:
            p = subprocess.run(full, capture_output=True, text=True, timeout=timeout + 20, input=input,
                               start_new_session=True)
        except subprocess.TimeoutExpired as exc:
            raise MachineError(f"{self.name}: {shlex.join(argv)} did not end within {timeout:.0f} s") from exc
        if p.returncode == 124:
            p.stderr += f"\n[booted: timed out after {timeout:.0f} s]"
        if check and p.returncode != 0:
            raise MachineError(f"{self.name}: `{shlex.join(argv)}` exited {p.returncode}\n"
                               f"--- stdout\n{p.stdout[-6000:]}\n--- stderr\n{p.stderr[-6000:]}")
        return p

    def start(self, cmd: Sequence[str], cwd: str | None = None, env: dict[str, str] | None = None,
              timeout: float = 900.0) -> "Background":
        """Start a command in the machine without waiting for it: as root, in a new session (its
        process group is the command and its children, as a shell's foreground job is), its
        stdout and stderr together collected on the host. `timeout` bounds it inside."""
        self._check_alive(f"before starting {cmd!r}")
        self.started += 1
        pid_file = f"/run/booted-bg-{self.started}.pid"
        log = self.dir / f"bg-{self.started}.log"
        inner = ["env", "-i", f"PATH={PATH_INSIDE}", "HOME=/root", "LANG=C.UTF-8", "TERM=dumb"]
        if cwd:
            inner[1:1] = ["-C", cwd]
        inner += [f"{k}={v}" for k, v in (env or {}).items()]
        # `timeout` makes itself a process group leader, so `setsid` (its child) is not one and
        # starts the new session in place; `exec` keeps that pid for the command: pid = pgid.
        full = ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-i", "-p", "--", *inner,
                "timeout", "--kill-after=5", f"{timeout:.0f}", "setsid", "-w", "sh", "-c",
                f'echo $$ > {pid_file} && exec "$@"', "sh", *cmd]
        with open(log, "wb") as out:
            proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        return Background(self, list(cmd), proc, log, pid_file, timeout)

    def journal_cursor(self) -> str:
        """The journal's current end, for `journal(after=...)`."""
        out = self.run(["journalctl", "--no-pager", "-q", "-n", "1", "--show-cursor"], timeout=30).stdout
        m = re.search(r"^-- cursor: (\S+)", out, re.M)
        if not m:
            raise MachineError(f"no cursor in journalctl's answer: {out!r}")
        return m.group(1)

    def journal_entries(self, unit: str, after: str) -> list[dict[str, str]]:
        """The unit's journal entries after the cursor `after`, as journalctl's JSON objects."""
        p = self.run(["journalctl", "--no-pager", "-u", unit, f"--after-cursor={after}", "-o", "json",
                      "--output-fields=MESSAGE,_PID,SYSLOG_IDENTIFIER,_SYSTEMD_INVOCATION_ID,"
                      "INVOCATION_ID,UNIT,_SYSTEMD_UNIT"], timeout=60)
        entries = []
        for line in p.stdout.splitlines():
            e = json.loads(line)
            if isinstance(e.get("MESSAGE"), list):       # not UTF-8: journalctl gives bytes
                e["MESSAGE"] = bytes(e["MESSAGE"]).decode("utf-8", "replace")
            entries.append(e)
        return entries

    def journal(self, unit: str | None = None, lines: int = 80, this_boot: bool = True) -> str:
        argv = ["journalctl", "--no-pager", "-o", "short-precise", "-n", str(lines)]
        if this_boot:
            argv.append("-b")
        if unit:
            argv += ["-u", unit]
        p = self.run(argv, check=False, timeout=60)
        return p.stdout + p.stderr

    def read(self, path: str) -> str:
        """A file's text inside, read with `cat` (as root)."""
        return self.run(["cat", path], timeout=30).stdout

    def path(self, inside: str) -> Path:
        """Where a path inside is on the host (for copying a clone in, never to read results)."""
        return self.root / inside.lstrip("/")

    def wait(self, pred: Callable[[], object], what: str, timeout: float = 60.0, every: float = 0.5) -> object:
        """Poll `pred` until it is truthy (its value) or the deadline passes (MachineError)."""
        deadline = time.monotonic() + timeout
        while True:
            value = pred()
            if value:
                return value
            if time.monotonic() > deadline:
                raise MachineError(f"{self.name}: timed out after {timeout:.0f} s waiting for {what}")
            self._check_alive(f"while waiting for {what}")
            time.sleep(every)


@dataclass
class Background:
    """A command `Machine.start()`ed: its output so far, its process group inside, its end."""
    machine: Machine
    cmd: list[str]
    proc: subprocess.Popen
    log: Path
    pid_file: str
    timeout: float

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def pgid(self, timeout: float = 30.0) -> int:
        """The command's pid inside the machine, which is also its process group's id."""
        def read() -> int | None:
            p = self.machine.run(["cat", self.pid_file], check=False, timeout=10)
            return int(p.stdout) if p.returncode == 0 and p.stdout.strip().isdigit() else None
        return int(self.machine.wait(read, f"{shlex.join(self.cmd)} to start", timeout=timeout, every=0.05))

    def signal_group(self, sig: str = "INT") -> None:
        """`kill -s SIG -- -PGID` inside (the shell's kill: procps' takes no `--` after `-s`):
        what a terminal does to its foreground job on Ctrl-C."""
        self.machine.run(["sh", "-c", f"kill -s {shlex.quote(sig)} -- -{self.pgid()}"], timeout=10)

    def wait(self, timeout: float | None = None) -> int:
        """Its exit code (the command's, passed on by nsenter)."""
        limit = self.timeout + 20 if timeout is None else timeout
        try:
            return self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.stop()
            raise MachineError(f"{shlex.join(self.cmd)} did not end within {limit:.0f} s; killed\n"
                               f"{self.output()[-4000:]}") from None

    def stop(self) -> None:
        """End it if it still runs: SIGKILL to its process group inside, then to nsenter."""
        if self.proc.poll() is not None:
            return
        if self.machine.running():
            try:
                self.signal_group("KILL")
            except MachineError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """A CI runner cancels a job with SIGTERM, which would end Python without running any
    `finally`: turn it into KeyboardInterrupt, so pytest tears the machine down (main thread)."""
    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- the clone
def repo_head(repo: Path) -> tuple[str, bool]:
    """HEAD of the repository the tests run from, and whether its work tree is dirty."""
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True, timeout=60).stdout.strip() != ""
    return sha, dirty


def clone_into(machine: Machine, repo: Path, inside: str, commit: str) -> Path:
    """`git clone --no-local` of `repo` into the machine at `inside`, `commit` checked out."""
    dest = machine.path(inside)
    if dest.exists():
        raise MachineError(f"{inside} already exists in {machine.name}")
    for argv in (["git", "clone", "-q", "--no-local", "--no-hardlinks", str(repo), str(dest)],
                 ["git", "-C", str(dest), "checkout", "-q", "--detach", commit]):
        p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise MachineError(f"{shlex.join(argv)} failed: {p.stderr}")
    return dest
