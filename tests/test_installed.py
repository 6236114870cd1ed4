"""The installed lane: a real Debian 12 with systemd as PID 1 (tests/booted.py), the box installed
into it from a clean clone of HEAD exactly as the README says (`sudo provisioning/install.sh`),
then the whole box checked through public commands only: install.sh (a wrong board, a dry run,
Ctrl-C in step 4, a second run, uninstall, no board), systemctl, systemd-analyze, journalctl,
`vrmbox` as root and as the box's accounts, the phone app over HTTP(S) from the host, the vendor
kit from the host's venv against the box's broker over TLS.

One machine for the module; the tests run in order and later ones build on earlier ones (each
says which step it needs when that step did not pass). docs/testing.md describes the lane.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest

import booted
from processes import Proc, vrm_vendor, wait_for

pytestmark = [pytest.mark.installed, pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
CLONE = "/root/vrmbox"                      # README: git clone ... vrmbox && cd vrmbox
UPGRADE_CLONE = "/root/vrmbox-upgrade"
VRMBOX = "/opt/vrmbox/venv/bin/vrmbox"
BOX_USER, UI_USER, COMPANION_USER = "vrmbox", "vrmbox-ui", "vrmbox-companion"
USERS = (BOX_USER, UI_USER, COMPANION_USER)
BOX_UNITS = ("vrmbox.service", "vrmbox-ui.service", "vrmbox-companion.service")
UNITS = (*BOX_UNITS, "mosquitto.service")
BOARD = "headless"                          # the README's board with no screen (luma's dummy display)
BOX_NAME = "vrmbox"                         # the account root asks as (docs/provisioning.md "Root")
INSTALL_TIMEOUT_S = 900
SETTLE_S = 60.0                             # a unit that is not active by then will not be
# Ports the box takes on the shared network (the companion's HTTP and HTTPS, the broker's); a
# leftover box from an interrupted run would hold them.
HOST_PORTS = (8080, 8443, 8883)
HTTP_PORT = 8080                            # plain HTTP: a 308 to HTTPS, and the box's CA (docs/companion.md)
COMPANION_SECRET = "/etc/vrmbox/secrets/companion_secret"
MAX_EXPOSURE = 2.0                          # systemd-analyze security, for the box's own units
PROFILE_EMAIL = "ann@example.org"
SHARED = ["email"]


# --------------------------------------------------------------------------- the lane's state
@dataclass
class Lane:
    m: booted.Machine
    commit: str
    host_tmp: Path
    passed: set[str] = field(default_factory=set)
    facts: dict[str, Any] = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def need(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.passed]
        if missing:
            pytest.fail(f"not run: this step needs {', '.join(missing)}, which did not pass "
                        "(see that test's failure above)", pytrace=False)

    def done(self, step: str) -> None:
        self.passed.add(step)

    # ---------------------------------------------------------------- commands
    def vrmbox(self, *args: str, user: str | None = BOX_USER, check: bool = True,
               timeout: float = 60.0) -> Any:
        """`vrmbox ARGS --json` inside as `user` (root when None): the parsed JSON answer."""
        p = self.m.run([VRMBOX, *_json_first(args)], user=user, check=check, timeout=timeout)
        return json.loads(p.stdout) if check else p

    def unit(self, unit: str, *props: str) -> dict[str, str]:
        out = self.m.run(["systemctl", "show", unit, *[f"--property={p}" for p in props]], timeout=30).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def units_settled(self, units: tuple[str, ...] = UNITS, timeout: float = SETTLE_S) -> dict[str, str]:
        """Poll until every unit is active, or the deadline: {unit: ActiveState/SubState}."""
        deadline = time.monotonic() + timeout
        while True:
            states = {u: "{ActiveState}/{SubState}".format(**self.unit(u, "ActiveState", "SubState"))
                      for u in units}
            if all(s == "active/running" for s in states.values()) or time.monotonic() > deadline:
                return states
            time.sleep(0.5)

    def explain_units(self, states: dict[str, str]) -> str:
        """Each unit that is not active, with its status and its journal (for the report)."""
        parts = []
        for u, s in states.items():
            if s != "active/running":
                status = self.m.run(["systemctl", "status", "--no-pager", "-l", "-n", "0", u], check=False).stdout
                parts.append(f"=== {u}: {s}\n{status}\n--- journalctl -u {u}\n{self.m.journal(u, 40)}")
        return "\n".join(parts)


def _json_first(args: tuple[str, ...]) -> list[str]:
    """`--json` before a `--` that ends the options (ids may begin with '-')."""
    args_l = list(args)
    if "--json" in args_l:
        return args_l
    if "--" in args_l:
        i = args_l.index("--")
        return [*args_l[:i], "--json", *args_l[i:]]
    return [*args_l, "--json"]


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _say(text: str) -> None:
    print(text, flush=True)


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


@pytest.fixture(scope="module")
def lane():
    booted.require()
    busy = [p for p in HOST_PORTS if not _free(p)]
    if busy:
        pytest.fail(f"ports {busy} are taken on this host: the booted box shares the host's network "
                    "and needs them (a box left running by an interrupted run? look for systemd-nspawn "
                    "-M vrmbox-lane-...)", pytrace=False)
    with booted.sigterm_as_interrupt():
        yield from _machine()


def _machine():
    started = time.monotonic()
    base = booted.base_root(log=_say)
    m = booted.Machine(base, log=_say)
    host_tmp = Path(tempfile.mkdtemp(prefix="vrmbox-lane-host-"))
    the_lane = None
    try:
        m.boot()
        commit, dirty = booted.repo_head(REPO)
        if dirty:
            _say(f"NOTE: {REPO} has uncommitted changes; the lane installs HEAD {commit} (a clean "
                 "clone), not the work tree")
        booted.clone_into(m, REPO, CLONE, commit)
        _say(f"lane: machine ready with a clone of {commit} in {CLONE} after "
             f"{time.monotonic() - started:.1f} s")
        the_lane = Lane(m, commit, host_tmp)
        yield the_lane
    finally:
        for fn in reversed(the_lane.cleanups if the_lane else []):
            try:
                fn()
            except Exception as exc:   # cleanup must go on
                _say(f"lane: cleanup {fn}: {exc}")
        m.close()
        shutil.rmtree(host_tmp, ignore_errors=True)
        _say(f"lane: whole lane {time.monotonic() - started:.1f} s (including the root copy and boots)")


@pytest.fixture(autouse=True)
def _timed(request):
    t = time.monotonic()
    yield
    _say(f"lane: {request.node.name} took {time.monotonic() - t:.1f} s")


def board(lane: Lane, clone: str) -> str:
    """The board without hardware: `headless`, or else the clone's profile that draws into luma's
    dummy display (hardware/profiles/*.toml with [display] driver = "dummy")."""
    profiles = lane.m.path(clone) / "hardware" / "profiles"
    if (profiles / f"{BOARD}.toml").exists():
        return BOARD
    for f in sorted(profiles.glob("*.toml")):
        display = tomllib.loads(f.read_text()).get("display", {})
        if isinstance(display, dict) and display.get("driver") == "dummy":
            return f.stem
    return BOARD


def install_args(lane: Lane, clone: str) -> list[str]:
    """`--board headless` when this install.sh knows --board (docs/provisioning.md), else nothing."""
    helptext = lane.m.run(["provisioning/install.sh", "--help"], cwd=clone, check=False).stdout
    if "--board" in helptext:
        name = board(lane, clone)
        if name != BOARD:
            _say(f"lane: no {BOARD!r} board profile in this version: --board {name} (its display is luma's dummy)")
        return ["--board", name]
    _say(f"NOTE (product): install.sh at {lane.commit[:12]} has no --board option yet: "
         "ran plain `sudo provisioning/install.sh`")
    return []


# --------------------------------------------------------------------------- 1. before installing
def install_cmd(args: list[str]) -> str:
    return shlex.join(["sudo", "provisioning/install.sh", *args])


@pytest.mark.timeout(2400)           # a cold run builds the root first (a few minutes)
def test_01_a_wrong_board_and_a_dry_run_change_nothing(lane):
    m = lane.m
    problems = []
    # docs/provisioning.md: "A wrong name lists the profiles and changes nothing."
    p = m.run(["sudo", "provisioning/install.sh", "--board", "nope"], cwd=CLONE, check=False, timeout=120)
    said = p.stdout + p.stderr
    _say(f"lane: `{install_cmd(['--board', 'nope'])}` exited {p.returncode}:\n{_tail(said, 10)}")
    if p.returncode == 0:
        problems.append(f"`install.sh --board nope` exited 0:\n{_tail(said)}")
    profiles = sorted(f.stem for f in (m.path(CLONE) / "hardware" / "profiles").glob("*.toml"))
    unnamed = [n for n in profiles if not re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", said)]
    if unnamed or not profiles:
        problems.append(f"`install.sh --board nope` does not list the known profiles {unnamed or profiles}:\n"
                        f"{_tail(said)}")
    changed = remains(lane, PROGRAM_PATHS + DATA_PATHS)
    if changed:
        problems.append(f"`install.sh --board nope` changed the system: {changed}")
    # README: `--dry-run` first: every step shown, nothing changed
    args = install_args(lane, CLONE)
    p = m.run(["sudo", "provisioning/install.sh", "--dry-run", *args], cwd=CLONE, check=False, timeout=120)
    if p.returncode != 0:
        problems.append(f"install.sh --dry-run exited {p.returncode}\n{_tail(p.stdout)}\n{_tail(p.stderr)}")
    changed = remains(lane, PROGRAM_PATHS + DATA_PATHS)
    if changed:
        problems.append(f"install.sh --dry-run changed the system: {changed}")
    assert not problems, "\n".join(problems)
    lane.done("untouched")


# --------------------------------------------------------------------------- 2. Ctrl-C in step 4
STEP4, STEP5 = "== 4/7", "== 5/7"


def test_02_an_install_interrupted_in_step_4_says_so_and_names_the_step(lane):
    """install.sh run as root (no sudo, so the signal reaches it as a terminal's Ctrl-C reaches
    its foreground job: the whole process group, install.sh and pip), SIGINT while pip runs."""
    lane.need("untouched")
    m = lane.m
    args = install_args(lane, CLONE)
    bg = m.start(["provisioning/install.sh", *args], cwd=CLONE, timeout=INSTALL_TIMEOUT_S)
    try:
        pgid = bg.pgid()

        def pip_running() -> bool:
            out = bg.output()
            if STEP5 in out or not bg.running():
                pytest.fail(f"install.sh got past step 4 (or ended) before pip could be interrupted:\n"
                            f"{_tail(out)}", pytrace=False)
            if STEP4 not in out:
                return False
            # pgrep is not in that process group, so it does not match itself
            return m.run(["pgrep", "-g", str(pgid), "-f", "pip install"], check=False,
                         timeout=10).returncode == 0
        t = time.monotonic()
        m.wait(pip_running, "install.sh to reach step 4 and run pip", timeout=INSTALL_TIMEOUT_S, every=0.1)
        pips = m.run(["pgrep", "-a", "-g", str(pgid), "-f", "pip install"], check=False).stdout.strip()
        _say(f"lane: step 4 with pip running after {time.monotonic() - t:.1f} s ({pips}); SIGINT to "
             f"process group {pgid}")
        bg.signal_group("INT")
        rc = bg.wait(timeout=60)
    finally:
        bg.stop()
    out = bg.output()
    _say(f"lane: the interrupted install.sh exited {rc}; its output ends:\n{_tail(out, 8)}")
    problems = []
    if rc == 0:
        problems.append("install.sh exited 0 after SIGINT")
    if not re.search(r"interrupted during step '4/7[^']*'", out):
        problems.append("install.sh does not say that step 4/7 was interrupted")
    if not re.search(r"run the same command again", out, re.I):
        problems.append("install.sh does not say to run the same command again")
    if STEP5 in out:
        problems.append("install.sh went on to step 5 after the interruption")
    units = [x for x in remains(lane, ()) if x.startswith("unit file ")]
    if units:
        problems.append(f"unit files were installed although step 5 was never reached: {units}")
    assert not problems, "\n".join(problems) + f"\n--- install.sh's output\n{_tail(out, 30)}"
    lane.done("interrupted")


# --------------------------------------------------------------------------- 3. install
def test_03_install_run_again_completes_and_every_unit_is_active(lane):
    """The same command once more, after the interrupted one: it finishes the install."""
    args = install_args(lane, CLONE)
    lane.facts["board"] = args[1] if args else None
    t = time.monotonic()
    p = lane.m.run(["sudo", "provisioning/install.sh", *args], cwd=CLONE, check=False,
                   timeout=INSTALL_TIMEOUT_S)
    _say(f"lane: `{install_cmd(args)}` exited {p.returncode} after "
         f"{time.monotonic() - t:.0f} s; its output ends:\n{_tail(p.stdout, 25)}\n{_tail(p.stderr, 25)}")
    if lane.m.run(["systemctl", "cat", "vrmbox.service"], check=False).returncode == 0:
        lane.done("units installed")
    if p.returncode != 0:
        states = {u: "{ActiveState}/{SubState}".format(**lane.unit(u, "ActiveState", "SubState")) for u in UNITS}
        pytest.fail(f"`{install_cmd(args)}` exited {p.returncode}\n"
                    f"--- stdout\n{_tail(p.stdout, 60)}\n--- stderr\n{_tail(p.stderr, 60)}\n"
                    f"--- units: {states}\n{lane.explain_units(states)}", pytrace=False)
    lane.done("install")
    states = lane.units_settled()
    restarts = {u: lane.unit(u, "NRestarts").get("NRestarts", "?") for u in UNITS}
    _say(f"lane: units {states}, automatic restarts {restarts}")
    assert all(s == "active/running" for s in states.values()), (
        f"not every unit is active {SETTLE_S:.0f} s after install.sh: {states}\n{lane.explain_units(states)}")
    assert all(n == "0" for n in restarts.values()), f"units restarted by systemd after failing: {restarts}"
    lane.done("active")
    if "interrupted" in lane.passed:
        # the interrupted step 4 is done from its start, never taken as done
        assert re.search(r"^\+ \S+ -m pip install -q /opt/vrmbox/src", p.stdout, re.M) and \
            "this version already" not in p.stdout, (
                f"after the interrupted run, step 4 was not redone:\n{_tail(p.stdout, 40)}")


# --------------------------------------------------------------------------- 4. a second run
# Lines of a run that did real work: packages, accounts, the program, unit files.
WORK_RE = re.compile(r"^\+ .*(apt-get|pip install|-m venv|useradd|usermod|groupadd|install -D|raspi-config)", re.M)


def test_04_a_second_run_right_after_changes_nothing(lane):
    lane.need("install", "active")
    m = lane.m
    args = install_args(lane, CLONE)
    before = {u: lane.unit(u, "MainPID", "InvocationID") for u in UNITS}
    t = time.monotonic()
    p = m.run(["sudo", "provisioning/install.sh", *args], cwd=CLONE, check=False, timeout=INSTALL_TIMEOUT_S)
    took = time.monotonic() - t
    out = p.stdout
    _say(f"lane: the second `{install_cmd(args)}` exited {p.returncode} after {took:.1f} s; what it did:\n"
         + "\n".join(line for line in out.splitlines() if line.startswith(("+ ", "== ", "nothing"))))
    assert p.returncode == 0, f"the second run exited {p.returncode}\n{_tail(p.stdout)}\n{_tail(p.stderr)}"
    states = lane.units_settled()
    after = {u: lane.unit(u, "MainPID", "InvocationID") for u in UNITS}
    problems = []
    for phrase, step in (("all present", "1/7 system packages"), ("this version already", "4/7 the program"),
                         ("nothing to do", "6/7 vrmbox provision")):
        if phrase not in out:
            problems.append(f"step {step} does not say {phrase!r}")
    work = [line for line in out.splitlines() if WORK_RE.match(line)]
    if work:
        problems.append(f"it did work again: {work}")
    moved = {u: f"MainPID {before[u].get('MainPID')} -> {after[u].get('MainPID')}, InvocationID "
                f"{before[u].get('InvocationID')} -> {after[u].get('InvocationID')}"
             for u in UNITS if before[u] != after[u]}
    if moved:
        doing = [line for line in out.splitlines() if re.match(r"^\+ systemctl (re)?start|^\+ systemctl restart", line)]
        problems.append(f"units were restarted by a run that had nothing to do: {moved} (its lines: {doing})")
    if not all(s == "active/running" for s in states.values()):
        problems.append(f"not every unit is active after it: {states}\n{lane.explain_units(states)}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- 5. sandboxing
def test_05_security_exposure_of_each_unit(lane):
    lane.need("units installed")
    exposure = {}
    for u in UNITS:
        p = lane.m.run(["systemd-analyze", "security", "--no-pager", u], check=False, timeout=60)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", p.stdout)
        exposure[u] = (float(m.group(1)), m.group(2)) if m else None
        limit = f" (at most {MAX_EXPOSURE})" if u in BOX_UNITS else " (not asserted yet)"
        _say(f"EXPOSURE {u}: {m.group(1) + ' ' + m.group(2) if m else 'not reported: ' + _tail(p.stdout + p.stderr, 5)}"
             f"{limit}")
    assert all(exposure[u] is not None for u in BOX_UNITS), exposure
    over = {u: exposure[u][0] for u in BOX_UNITS if exposure[u][0] > MAX_EXPOSURE}
    assert not over, f"exposure above {MAX_EXPOSURE}: {over}"


# --------------------------------------------------------------------------- 6. root
def test_06_root_asks_as_the_box_account_and_is_no_press(lane):
    lane.need("install", "active")
    m = lane.m
    problems = []
    p = m.run([VRMBOX, "status"], check=False, timeout=60)           # as root, no runuser
    _say(f"lane: as root: `vrmbox status` exited {p.returncode}; stderr: {p.stderr.strip()}\n{_tail(p.stdout, 30)}")
    if p.returncode != 0:
        problems.append(f"`vrmbox status` as root exited {p.returncode}:\n{p.stdout}{p.stderr}")
    if not re.search(rf"\bas {re.escape(BOX_NAME)}\b", p.stdout + p.stderr):
        problems.append(f"`vrmbox status` as root does not say it asked as {BOX_NAME}: {p.stderr!r}")
    p = m.run([VRMBOX, "status", "--json"], check=False, timeout=60)
    try:
        face = json.loads(p.stdout).get("face")
    except json.JSONDecodeError:
        face = f"(not JSON: {p.stdout[:300]!r} {p.stderr[:300]!r})"
    want = f"board {lane.facts.get('board')}"
    _say(f"lane: as root: `vrmbox status --json` exited {p.returncode}, face {face!r}")
    if p.returncode != 0 or face != want:
        problems.append(f"`vrmbox status --json` as root: exit {p.returncode}, face {face!r}, not {want!r}")
    p = m.run([VRMBOX, "agreement", "confirm", "--", "X"], check=False, timeout=60)
    said = (p.stdout + p.stderr).strip()
    _say(f"lane: as root: `vrmbox agreement confirm -- X` exited {p.returncode}: {said}")
    if p.returncode == 0 or "button.sock admits vrmbox-ui" not in said:
        problems.append(f"root's `vrmbox agreement confirm` was not refused by the button socket "
                        f"(exit {p.returncode}): {said}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- 7. the companion
def box_address(lane: Lane) -> str:
    """The box's LAN address (global scope IPv4), as a phone on the Wi-Fi would use it."""
    out = lane.m.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], timeout=30).stdout
    addrs = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    return addrs[0] if addrs else "127.0.0.1"


def companion_url(lane: Lane) -> tuple[str, str | bool]:
    """Where the companion listens and how to trust it, from what install/provision configured
    (config.toml's [companion]) and what the running app said (its journal): (base URL, verify)."""
    cfg = tomllib.loads(lane.m.read("/etc/vrmbox/config.toml"))
    comp = cfg.get("companion", {}) if isinstance(cfg.get("companion"), dict) else {}
    journal = lane.m.journal("vrmbox-companion.service", 400)
    port = int(comp.get("port") or 8080)
    listening = re.findall(r"LISTENING \S+:(\d+)", journal)
    if listening:
        port = int(listening[-1])
    # the app says where it serves ("companion app on http://..."); else the config decides:
    # a https:// url, or a certificate / TLS setting in [companion], means HTTPS
    said = re.findall(r"companion app on (https?)://", journal)
    if said:
        scheme = said[-1]
    elif str(comp.get("url", "")).startswith("https://") or any(
            ("cert" in k or "tls" in k) and v for k, v in comp.items()):
        scheme = "https"
    else:
        scheme = "http"
    verify: str | bool = False
    if scheme == "https":
        ca = lane.host_tmp / "box-ca.pem"
        ca.write_text(lane.m.read("/etc/vrmbox/tls/ca.pem"))
        verify = str(ca)
    return f"{scheme}://{box_address(lane)}:{port}", verify


def phone_session(verify: str | bool) -> Any:
    import requests
    s = requests.Session()
    s.trust_env = False                   # no proxy between the phone and the box
    s.verify = verify
    s.headers["User-Agent"] = "Mozilla/5.0 (Linux; Android 14) vrmbox-installed-lane"
    return s


_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str, where: str) -> str:
    m = _CSRF_RE.search(html)
    assert m, f"no CSRF token in {where}: {html[:300]!r}"
    return m.group(1)


def test_07_companion_answers_on_the_box_address(lane):
    lane.need("install")
    states = lane.units_settled(("vrmbox.service", "vrmbox-companion.service"), timeout=10)
    assert set(states.values()) == {"active/running"}, f"{states}\n{lane.explain_units(states)}"
    base, verify = companion_url(lane)
    _say(f"lane: the companion is at {base} (verify: {verify})")
    phone = phone_session(verify)
    r = wait_for(lambda: _get_or_none(phone, f"{base}/pair"), timeout=30, what=f"{base}/pair to answer")
    assert r.status_code == 200, (r.status_code, r.text[:500])
    csrf_of(r.text, "/pair")
    assert "default-src 'none'" in r.headers.get("Content-Security-Policy", ""), dict(r.headers)
    s = phone.get(f"{base}/api/v1/session", timeout=10)
    assert s.status_code == 200 and s.json()["paired"] is False, (s.status_code, s.text[:300])
    r = phone.get(f"{base}/", allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"].endswith("/pair"), (r.status_code, dict(r.headers))
    lane.facts.update(base=base, verify=verify)
    lane.done("companion")

    # docs/companion.md: HTTPS only on a provisioned box; plain HTTP on 8080 only redirects and
    # hands out the box's CA (what a phone installs to trust the box)
    at = urlsplit(base)
    assert at.scheme == "https", f"the provisioned box's companion is not on HTTPS: {base}"
    plain = phone_session(False)
    r = wait_for(lambda: _get_or_none(plain, f"http://{at.hostname}:{HTTP_PORT}/pair"), timeout=30,
                 what=f"http://{at.hostname}:{HTTP_PORT}/pair to answer")
    want = f"https://{at.hostname}:{at.port}/pair"
    _say(f"lane: http://{at.hostname}:{HTTP_PORT}/pair answered {r.status_code} Location {r.headers.get('Location')}")
    assert r.status_code == 308 and r.headers.get("Location") == want, (
        f"http://{at.hostname}:{HTTP_PORT}/pair: {r.status_code} {r.headers.get('Location')!r}, "
        f"not 308 to {want}")
    r = plain.get(f"http://{at.hostname}:{HTTP_PORT}/ca.pem", allow_redirects=False, timeout=10)
    ca = lane.m.read("/etc/vrmbox/tls/ca.pem")
    assert r.status_code == 200 and r.text == ca, (
        f"http://{at.hostname}:{HTTP_PORT}/ca.pem: {r.status_code} {r.headers.get('Content-Type')}, "
        f"{'the box CA' if r.text == ca else 'not /etc/vrmbox/tls/ca.pem: ' + r.text[:200]!r}")


def _get_or_none(session: Any, url: str) -> Any:
    import requests
    try:
        return session.get(url, timeout=5, allow_redirects=False)
    except requests.RequestException:
        return None


# --------------------------------------------------------------------------- 8. pairing
def test_08_a_phone_pairs_with_a_code_from_vrmbox_pair(lane):
    lane.need("install", "companion")
    base = lane.facts["base"]
    code = lane.vrmbox("pair")["code"]
    phone = phone_session(lane.facts["verify"])
    token = csrf_of(phone.get(f"{base}/pair", timeout=10).text, "/pair")
    r = phone.post(f"{base}/pair", data={"code": code, "name": "lane phone", "csrf_token": token},
                   headers={"Origin": base, "Referer": f"{base}/pair"}, allow_redirects=False, timeout=15)
    assert r.status_code == 302 and urlsplit(r.headers.get("Location", "")).path == "/", (
        r.status_code, r.headers.get("Location"), r.text[:800])
    s = phone.get(f"{base}/api/v1/session", timeout=10).json()
    assert s["paired"] is True and s["phone"]["name"] == "lane phone", s
    assert phone.get(f"{base}/", allow_redirects=False, timeout=10).status_code == 200
    phones = lane.vrmbox("phones")
    assert [p["name"] for p in phones] == ["lane phone"], phones
    # the code was for once
    other = phone_session(lane.facts["verify"])
    token = csrf_of(other.get(f"{base}/pair", timeout=10).text, "/pair")
    again = other.post(f"{base}/pair", data={"code": code, "name": "intruder", "csrf_token": token},
                       headers={"Origin": base}, allow_redirects=False, timeout=15)
    assert again.status_code in (400, 429), (again.status_code, again.text[:300])
    lane.facts["phone"] = phone
    lane.done("paired")


# --------------------------------------------------------------------------- 9. a vendor
def broker_port(lane: Lane) -> int:
    conf = lane.m.read("/etc/vrmbox/broker/mosquitto.conf")
    m = re.search(r"^listener\s+(\d+)", conf, re.M)
    assert m, f"no listener in the box's broker config:\n{conf}"
    return int(m.group(1))


def test_09_a_vendor_on_the_box_broker_answers_an_intent_with_ranked_offers(lane):
    lane.need("install")
    m = lane.m
    states = lane.units_settled(("vrmbox.service", "mosquitto.service"), timeout=10)
    assert set(states.values()) == {"active/running"}, f"{states}\n{lane.explain_units(states)}"
    m.run([VRMBOX, "broker", "add-vendor", "acme", "--out", "/root/acme.password", "--reload"], timeout=60)
    password = lane.host_tmp / "acme.password"
    password.write_text(m.read("/root/acme.password"))
    password.chmod(0o600)
    ca = lane.host_tmp / "box-ca.pem"
    ca.write_text(m.read("/etc/vrmbox/tls/ca.pem"))
    url = f"mqtts://{box_address(lane)}:{broker_port(lane)}"
    vdir = lane.host_tmp / "acme"
    vrm_vendor("init", "--dir", str(vdir), "--vendor", "acme", "--name", "Acme Bikes", "--categories", "bikes")
    vendor = Proc([str(Path(sys.executable).with_name("vrm-vendor")), "run", "--dir", str(vdir), "--broker", url,
                   "--catalogue", str(REPO / "examples" / "catalogue.yaml"), "--username", "acme",
                   "--password-file", str(password), "--tls-ca", str(ca)],
                  lane.host_tmp / "acme.log", cwd=REPO)
    try:
        vendor.start(timeout=30)
    except RuntimeError as exc:
        pytest.fail(f"the vendor kit did not connect to the box's broker at {url} over TLS: {exc}\n"
                    f"--- journalctl -u mosquitto\n{m.journal('mosquitto.service', 30)}", pytrace=False)
    lane.cleanups.append(vendor.stop)
    _say(f"lane: vendor acme connected to {url}")
    lane.vrmbox("profile", "set", "email", PROFILE_EMAIL)
    intent = lane.vrmbox("intent", "add", "bikes", "--attr", "budget_max=800", "--attr", "postcode_district=N1")
    iid = intent["intent"]

    def sent() -> list[dict[str, Any]]:
        rows = json.loads(vrm_vendor("offers", "--dir", str(vdir), "--json").stdout)
        return [r for r in rows if r.get("intent") == iid]
    wait_for(sent, timeout=60, what="the vendor to answer the intent with offers")
    offered = sent()
    stored = wait_for(lambda: (lambda rows: rows if len(rows) == len(offered) else None)(
        lane.vrmbox("offers", "--intent", iid, "--all")), timeout=60,
        what=f"the box to store the {len(offered)} offer(s) the vendor sent")
    ranked = lane.vrmbox("offers", "--intent", iid)
    _say("lane: offers on the box: " + "; ".join(f"{r['score']:.3f} {r['vendor']} {r['item']} {r['price']} "
                                               f"{r['currency']} eligible={r['eligible']}" for r in stored))
    assert ranked, f"no eligible offer among {stored}"
    assert all(r["vendor"] == "acme" for r in stored), stored
    scores = [r["score"] for r in ranked]
    assert scores == sorted(scores, reverse=True), f"not ranked by score: {scores}"
    assert all("explanation" in r for r in ranked), ranked
    lane.facts.update(intent=iid, offer=ranked[0]["offer"], vendor_dir=vdir, offers=len(stored))
    lane.done("offers")


# --------------------------------------------------------------------------- 10. an agreement
def test_10_accept_on_the_phone_press_as_the_ui_and_the_vendor_gets_exactly_the_fields(lane):
    lane.need("install", "paired", "offers")
    base, phone, offer = lane.facts["base"], lane.facts["phone"], lane.facts["offer"]
    page = phone.get(f"{base}/offers/{offer}/accept", timeout=15)
    assert page.status_code == 200, (page.status_code, page.text[:500])
    token = csrf_of(page.text, f"/offers/{offer}/accept")
    r = phone.post(f"{base}/offers/{offer}/accept",
                   data={"fields": SHARED, "purpose": "delivery", "duration_days": "30", "csrf_token": token},
                   headers={"Origin": base, "Referer": f"{base}/offers/{offer}/accept"},
                   allow_redirects=False, timeout=30)
    assert r.status_code in (302, 303), (r.status_code, r.text[:800])
    highlight = parse_qs(urlsplit(r.headers["Location"]).query).get("highlight", [None])[0]
    agreements = lane.vrmbox("agreements")
    mine = [a for a in agreements if a.get("offer") == offer or a["agreement"] == highlight]
    assert len(mine) == 1 and mine[0]["status"] == "pending_confirmation", agreements
    aid = mine[0]["agreement"]
    pending = lane.vrmbox("pending")
    assert [a["agreement"] for a in pending["agreements"]] == [aid], pending
    lane.facts["agreement"] = aid

    # the phone app's account may not press
    p = lane.m.run([VRMBOX, "agreement", "confirm", "--", aid], user=COMPANION_USER, check=False, timeout=60)
    _say(f"lane: as {COMPANION_USER}: `vrmbox agreement confirm` exited {p.returncode}: "
         f"{(p.stdout + p.stderr).strip()}")
    assert p.returncode != 0, f"{COMPANION_USER} could confirm: {p.stdout}"
    assert re.search(r"may not (open|use)", p.stdout + p.stderr) and \
        "button.sock admits vrmbox-ui" in p.stdout + p.stderr, (
        f"{COMPANION_USER} was refused, but not by the button socket's access check: {p.stdout}{p.stderr}")
    # nor may root (it asks as the box's account, which is no press either)
    p = lane.m.run([VRMBOX, "agreement", "confirm", "--", aid], check=False, timeout=60)
    _say(f"lane: as root: `vrmbox agreement confirm` exited {p.returncode}: {(p.stdout + p.stderr).strip()}")
    assert p.returncode != 0 and "button.sock admits vrmbox-ui" in p.stdout + p.stderr, (
        f"root's press was not refused by the button socket ({p.returncode}): {p.stdout}{p.stderr}")
    still = [a for a in lane.vrmbox("agreements") if a["agreement"] == aid]
    assert still[0]["status"] == "pending_confirmation", still

    # the UI's account presses
    p = lane.m.run([VRMBOX, "agreement", "confirm", "--", aid], user=UI_USER, check=False, timeout=60)
    _say(f"lane: as {UI_USER}: `vrmbox agreement confirm` exited {p.returncode}: {(p.stdout + p.stderr).strip()}")
    assert p.returncode == 0, (f"the press as {UI_USER} failed ({p.returncode}):\n{p.stdout}{p.stderr}\n"
                               f"--- journalctl -u vrmbox\n{lane.m.journal('vrmbox.service', 30)}")

    vdir = lane.facts["vendor_dir"]

    def disclosed() -> list[dict[str, Any]]:
        return json.loads(vrm_vendor("disclosures", "--dir", str(vdir), "--json").stdout)
    got = wait_for(disclosed, timeout=60, what="the vendor to receive the disclosure")
    _say(f"lane: the vendor received {got}")
    assert len(got) == 1 and got[0].get("agreement") == aid, got
    fields = got[0]["fields"]
    assert fields == {"email": PROFILE_EMAIL}, f"the vendor received {fields!r}, agreed was {SHARED}"
    lane.done("agreement")


# --------------------------------------------------------------------------- 11. a unit that cannot start
COMPANION = "vrmbox-companion.service"


def test_11_a_unit_that_cannot_read_its_secret_says_why_in_one_line(lane):
    """docs/provisioning.md "Each process reads only its own part": an unreadable secret fails
    only the process that needs it, with one line naming the key, the file and the account."""
    lane.need("install", "active")
    m = lane.m
    others = ("vrmbox.service", "vrmbox-ui.service")
    before = {u: lane.unit(u, "InvocationID", "MainPID") for u in (*others, COMPANION)}
    mode = m.run(["stat", "-c", "%a", COMPANION_SECRET], timeout=30).stdout.strip()
    cursor = m.journal_cursor()
    problems = []
    try:
        m.run(["chmod", "000", COMPANION_SECRET], timeout=30)
        p = m.run(["systemctl", "restart", COMPANION], check=False, timeout=90)
        state = lane.unit(COMPANION, "ActiveState", "SubState", "Result")
        _say(f"lane: `systemctl restart {COMPANION}` with the secret at mode 000 exited {p.returncode}; "
             f"the unit is {state}")
        if p.returncode == 0 or state.get("ActiveState") == "active":
            problems.append(f"the companion started without being able to read its secret: exit "
                            f"{p.returncode}, {state}")
        m.run(["journalctl", "--sync"], timeout=60)    # every line written so far is in the journal
        # What a person sees who types `systemctl status` now, the start having just failed. It
        # shows only the lines since the unit last left an inactive state (systemd 252:
        # InactiveExitTimestamp), and a unit that goes from failed to auto-restart leaves one.
        status = m.run(["systemctl", "status", "--no-pager", "-l", "-n", "20", COMPANION], check=False,
                       timeout=30).stdout
        when = lane.unit(COMPANION, "ActiveState", "SubState", "InactiveExitTimestamp")
        _say(f"lane: `systemctl status {COMPANION}` right after the failed start ({when}):\n{status}")
        if "companion.secret_file" not in status or COMPANION_SECRET not in status:
            problems.append(f"`systemctl status {COMPANION}` right after the failed start does not say why "
                            f"(the unit is {when}; status shows the lines since InactiveExitTimestamp):\n{status}")
        if "Traceback" in status:
            problems.append(f"`systemctl status {COMPANION}` shows a traceback:\n{status}")
        entries = m.journal_entries(COMPANION, cursor)
        # the process's own lines (systemd's carry no _SYSTEMD_INVOCATION_ID), of its first start
        # after the old one stopped
        own = [e for e in entries if e.get("_SYSTEMD_INVOCATION_ID")
               and e["_SYSTEMD_INVOCATION_ID"] != before[COMPANION].get("InvocationID")]
        first = [e["MESSAGE"] for e in own if e["_SYSTEMD_INVOCATION_ID"] == own[0]["_SYSTEMD_INVOCATION_ID"]] \
            if own else []
        _say("lane: journalctl -u vrmbox-companion (the failed start):\n" +
             "\n".join(f"  {e.get('SYSLOG_IDENTIFIER')}[{e.get('_PID')}]: {e.get('MESSAGE')}" for e in entries[:12]))
        named = [line for line in first if "companion.secret_file" in line and COMPANION_SECRET in line
                 and COMPANION_USER in line]
        if len(first) != 1 or len(named) != 1:
            problems.append(f"the failed start did not say why in one line naming companion.secret_file, "
                            f"{COMPANION_SECRET} and {COMPANION_USER}; its lines: {first}")
        traces = [e["MESSAGE"] for e in entries if "Traceback" in e.get("MESSAGE", "")]
        if traces:
            problems.append(f"a traceback in journalctl -u {COMPANION}: {traces}")
        after = {u: lane.unit(u, "InvocationID", "MainPID") for u in others}
        states = lane.units_settled(others, timeout=5)
        hit = [u for u in others if after[u] != before[u] or states[u] != "active/running"]
        if hit:
            problems.append(f"the companion's secret is not theirs, yet {hit} changed: {states}, "
                            f"before {[before[u] for u in hit]}, after {[after[u] for u in hit]}")
    finally:
        m.run(["chmod", mode, COMPANION_SECRET], timeout=30)
    # fixed: a unit still restarting (Restart=on-failure) comes back by itself; one that stopped
    # trying (failed) with the `systemctl restart` its status asks for
    t = time.monotonic()
    how = "by itself"
    if lane.unit(COMPANION, "ActiveState")["ActiveState"] == "failed":
        how = "after `systemctl restart`"
        m.run(["systemctl", "restart", COMPANION], check=False, timeout=90)
    states = lane.units_settled((COMPANION,), timeout=30)
    if states[COMPANION] != "active/running":
        problems.append(f"with the secret's mode {mode} again, {COMPANION} did not come back ({how}) within "
                        f"30 s: {states}\n{lane.explain_units(states)}")
        m.run(["systemctl", "reset-failed", COMPANION], check=False, timeout=30)
        m.run(["systemctl", "restart", COMPANION], check=False, timeout=90)    # for the steps after
    else:
        _say(f"lane: with mode {mode} again {COMPANION} was active {how} {time.monotonic() - t:.1f} s later "
             f"(NRestarts {lane.unit(COMPANION, 'NRestarts').get('NRestarts')})")
    if "paired" in lane.passed:
        r = wait_for(lambda: _get_or_none(lane.facts["phone"], f"{lane.facts['base']}/"), timeout=30,
                     what="the companion to answer again")
        if r.status_code != 200:
            problems.append(f"the paired phone is not let in after the companion came back: {r.status_code}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- 12. reboot
def data_intact(lane: Lane) -> None:
    """The intent, the agreement (confirmed or active) and the audit chain."""
    intents = lane.vrmbox("intent", "list")
    assert lane.facts["intent"] in [i["intent"] for i in intents], intents
    agreements = {a["agreement"]: a["status"] for a in lane.vrmbox("agreements")}
    assert agreements.get(lane.facts["agreement"]) in ("confirmed", "active"), agreements
    p = lane.m.run([VRMBOX, "audit", "verify"], user=BOX_USER, check=False, timeout=120)
    assert p.returncode == 0, f"`vrmbox audit verify` exited {p.returncode}: {p.stdout}{p.stderr}"
    stored = lane.vrmbox("offers", "--intent", lane.facts["intent"], "--all")
    assert len(stored) == lane.facts["offers"], stored


def test_12_power_off_and_boot_again(lane):
    lane.need("install", "agreement")
    code = lane.m.poweroff()
    assert code == 0, f"systemd-nspawn exited {code} after `systemctl poweroff`\n{lane.m.nspawn_log()}"
    lane.m.boot()
    states = lane.units_settled()
    assert all(s == "active/running" for s in states.values()), (
        f"after a reboot not every unit is active: {states}\n{lane.explain_units(states)}")
    data_intact(lane)
    r = lane.facts["phone"].get(f"{lane.facts['base']}/", allow_redirects=False, timeout=15)
    assert r.status_code == 200, f"the paired phone is no longer let in after a reboot: {r.status_code}"
    lane.done("rebooted")


# --------------------------------------------------------------------------- 13. upgrade
def test_13_upgrade_from_a_newer_clone_keeps_the_data_and_restarts_the_units(lane):
    lane.need("install", "agreement")
    m = lane.m
    dest = booted.clone_into(m, REPO, UPGRADE_CLONE, lane.commit)
    marker = f"installed-lane upgrade marker {time.time_ns()}"
    doc = dest / "docs" / "provisioning.md"
    doc.write_text(doc.read_text() + f"\n<!-- {marker} -->\n")
    git = ["git", "-C", str(dest), "-c", "user.name=installed lane", "-c", "user.email=lane@invalid"]
    subprocess.run([*git, "commit", "-q", "-am", "docs: a change to upgrade to"], check=True, timeout=60)
    before = {u: lane.unit(u, "InvocationID", "MainPID", "ActiveEnterTimestamp") for u in UNITS}
    args = install_args(lane, UPGRADE_CLONE)
    p = m.run(["sudo", "provisioning/install.sh", *args], cwd=UPGRADE_CLONE, check=False, timeout=INSTALL_TIMEOUT_S)
    _say(f"lane: upgrade install.sh exited {p.returncode}; its output ends:\n{_tail(p.stdout, 25)}\n{_tail(p.stderr, 10)}")
    assert p.returncode == 0, f"the upgrade's install.sh exited {p.returncode}\n{_tail(p.stdout, 60)}\n{_tail(p.stderr, 60)}"
    assert marker in m.read("/opt/vrmbox/src/docs/provisioning.md"), "the new version was not installed in /opt/vrmbox/src"
    states = lane.units_settled()
    assert all(s == "active/running" for s in states.values()), (
        f"after the upgrade not every unit is active: {states}\n{lane.explain_units(states)}")
    after = {u: lane.unit(u, "InvocationID", "MainPID", "ActiveEnterTimestamp") for u in UNITS}
    for u in UNITS:
        _say(f"lane: {u}: MainPID {before[u].get('MainPID')} -> {after[u].get('MainPID')}, "
             f"started {before[u].get('ActiveEnterTimestamp')} -> {after[u].get('ActiveEnterTimestamp')}")
    data_intact(lane)
    r = lane.facts["phone"].get(f"{lane.facts['base']}/", allow_redirects=False, timeout=15)
    assert r.status_code == 200, f"the paired phone is no longer let in after the upgrade: {r.status_code}"
    stale = [u for u in BOX_UNITS if before[u].get("InvocationID") == after[u].get("InvocationID")]
    assert not stale, (f"not restarted by the upgrade, so still running the old code: {stale} "
                       f"(MainPID and start time unchanged: {[after[u] for u in stale]})")
    lane.done("upgraded")


# --------------------------------------------------------------------------- 14. uninstall
PROGRAM_PATHS = ("/opt/vrmbox", "/run/vrmbox", "/etc/systemd/system/vrmbox.service",
                 "/etc/systemd/system/vrmbox-ui.service", "/etc/systemd/system/vrmbox-companion.service",
                 "/etc/systemd/system/mosquitto.service.d/vrmbox.conf")
DATA_PATHS = ("/etc/vrmbox", "/var/lib/vrmbox", "/var/lib/vrmbox-broker")


def remains(lane: Lane, paths: tuple[str, ...]) -> list[str]:
    """What is still there: paths, accounts and their groups, unit files and links, processes."""
    left = [p for p in paths if lane.m.run(["test", "-e", p], check=False).returncode == 0]
    for u in USERS:
        if lane.m.run(["getent", "passwd", u], check=False).returncode == 0:
            left.append(f"user {u}")
        if lane.m.run(["getent", "group", u], check=False).returncode == 0:
            left.append(f"group {u}")
    found = lane.m.run(["find", "/etc/systemd", "/usr/lib/systemd/system", "-name", "vrmbox*"],
                       check=False).stdout.split()
    left += [f"unit file {f}" for f in found]
    procs = lane.m.run(["pgrep", "-a", "-f", "^/opt/vrmbox/"], check=False).stdout.strip()
    left += [f"process {line}" for line in procs.splitlines()]
    return left


def test_14_uninstall_then_purge_leaves_nothing(lane):
    # no lane.need(): uninstalling must clean up after a failed install as well
    m = lane.m
    clone = UPGRADE_CLONE if "upgraded" in lane.passed else CLONE
    lane.facts["clone"] = clone
    problems = []
    p = m.run(["sudo", "provisioning/install.sh", "--uninstall"], cwd=clone, check=False, timeout=300)
    _say(f"lane: --uninstall exited {p.returncode}:\n{_tail(p.stdout, 30)}\n{_tail(p.stderr, 10)}")
    if p.returncode != 0:
        problems.append(f"install.sh --uninstall exited {p.returncode}\n{_tail(p.stdout)}\n{_tail(p.stderr)}\n"
                        f"--- journalctl (last 30 lines)\n{m.journal(None, 30)}")
    left = remains(lane, PROGRAM_PATHS)
    if left:
        problems.append(f"after `install.sh --uninstall` these remain: {left}")
    kept = [d for d in DATA_PATHS if m.run(["test", "-d", d], check=False).returncode == 0]
    if kept != list(DATA_PATHS):
        problems.append(f"`--uninstall` (without --purge) must keep {list(DATA_PATHS)}; it kept {kept}")
    p = m.run(["sudo", "provisioning/install.sh", "--uninstall", "--purge"], cwd=clone, check=False, timeout=300)
    _say(f"lane: --uninstall --purge exited {p.returncode}:\n{_tail(p.stdout, 30)}\n{_tail(p.stderr, 10)}")
    if p.returncode != 0:
        problems.append(f"install.sh --uninstall --purge exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    left = remains(lane, PROGRAM_PATHS + DATA_PATHS)
    if left:
        problems.append(f"after `install.sh --uninstall --purge` these remain: {left}")
    elif p.returncode == 0:
        lane.done("purged")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- 15. no board
def test_15_without_a_board_the_face_is_installed_but_not_started(lane):
    """On the purged machine: `sudo provisioning/install.sh` without --board, then with it."""
    lane.need("purged")
    m = lane.m
    clone = lane.facts["clone"]
    t = time.monotonic()
    p = m.run(["sudo", "provisioning/install.sh"], cwd=clone, check=False, timeout=INSTALL_TIMEOUT_S)
    _say(f"lane: `sudo provisioning/install.sh` (no --board) exited {p.returncode} after "
         f"{time.monotonic() - t:.0f} s; its output ends:\n{_tail(p.stdout, 8)}")
    assert p.returncode == 0, f"install.sh without --board exited {p.returncode}\n{_tail(p.stdout)}\n{_tail(p.stderr)}"
    problems = []
    if not re.search(r"installed but not started", p.stdout, re.I):
        problems.append(f"install.sh does not say the face is installed but not started:\n{_tail(p.stdout, 10)}")
    others = tuple(u for u in UNITS if u != "vrmbox-ui.service")
    states = lane.units_settled(others)
    if not all(s == "active/running" for s in states.values()):
        problems.append(f"not every other unit is active: {states}\n{lane.explain_units(states)}")
    ui = lane.unit("vrmbox-ui.service", "LoadState", "ActiveState", "UnitFileState")
    _say(f"lane: without a board: vrmbox-ui.service {ui}, the others {states}")
    if ui != {"LoadState": "loaded", "ActiveState": "inactive", "UnitFileState": "disabled"}:
        problems.append(f"vrmbox-ui.service is not installed-but-inactive-and-disabled: {ui}")
    s = m.run([VRMBOX, "status"], check=False, timeout=60)             # as root
    face = re.findall(r"^face: .*$", s.stdout, re.M)
    _say(f"lane: as root: `vrmbox status` exited {s.returncode}: {face}")
    if s.returncode != 0 or not any(f.startswith("face: not started: no board chosen") for f in face):
        problems.append(f"`vrmbox status` (exit {s.returncode}) does not say `face: not started: no board "
                        f"chosen ...`: {face or s.stdout + s.stderr}")
    assert not problems, "\n".join(problems)

    args = install_args(lane, clone)
    p = m.run(["sudo", "provisioning/install.sh", *args], cwd=clone, check=False, timeout=INSTALL_TIMEOUT_S)
    _say(f"lane: then `{install_cmd(args)}` exited {p.returncode}")
    assert p.returncode == 0, f"`{install_cmd(args)}` exited {p.returncode}\n{_tail(p.stdout)}\n{_tail(p.stderr)}"
    states = lane.units_settled()
    ui = lane.unit("vrmbox-ui.service", "UnitFileState")
    assert all(s == "active/running" for s in states.values()) and ui["UnitFileState"] == "enabled", (
        f"after choosing {args}: {states}, vrmbox-ui.service {ui}\n{lane.explain_units(states)}")
    face = lane.vrmbox("status", user=None).get("face")
    assert face == f"board {args[1] if args else None}", f"`vrmbox status --json` face: {face!r}"
