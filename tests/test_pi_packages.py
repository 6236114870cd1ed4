"""The `pi` extra installs on Raspberry Pi OS Bookworm (Python 3.11, glibc 2.36).

On aarch64 and armv7l install.sh apt-installs PI_PACKAGES and makes the venv with
--system-site-packages, then runs `pip install .[pi]`, which takes the newest version of each
requirement that it may. This asks PyPI (pip download --only-binary=:all: for the target
platform) whether that version has a wheel, for every runtime requirement of a box on a Pi: the
project's dependencies, the `pi` extra, and what they need in turn (read from the metadata
installed in this venv; from the downloaded wheel for what is not installed here, e.g. lgpio).

aarch64 (64-bit Raspberry Pi OS) has no other index: what lacks a wheel there must be one of
install.sh's PI_PACKAGES, or the test fails. armv7l (32-bit Raspberry Pi OS, e.g. a Pi Zero 2 W)
also has piwheels, which cannot be reached from here: what lacks a PyPI wheel there is printed
and recorded (record_property), not failed. Run with -s or -rA to see the table.

Without PyPI the test skips, or fails when CI is set."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import tomllib
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parent.parent
INSTALL_SH = ROOT / "provisioning" / "install.sh"
PYTHON = "3.11"
PYTHON_FULL = "3.11.2"              # Debian 12's python3
GLIBC_MINOR = 36                    # Debian 12's glibc 2.36: pip there takes manylinux_2_17..2_36
TARGETS = ("aarch64", "armv7l")
PIP_TIMEOUT = 60                    # seconds for one pip run
WORKERS = 8


def platforms(machine: str) -> list[str]:
    """The --platform tags pip on Raspberry Pi OS Bookworm accepts for `machine`."""
    return ([f"manylinux2014_{machine}"]
            + [f"manylinux_2_{minor}_{machine}" for minor in range(17, GLIBC_MINOR + 1)]
            + [f"linux_{machine}"])


def marker_env(machine: str) -> dict[str, str]:
    env = default_environment()
    env.update(implementation_name="cpython", implementation_version=PYTHON_FULL,
               os_name="posix", platform_machine=machine, platform_python_implementation="CPython",
               platform_system="Linux", python_full_version=PYTHON_FULL, python_version=PYTHON,
               sys_platform="linux")
    return env


def applies(req: Requirement, env: dict[str, str], extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in extras | {""})


def root_requirements() -> list[tuple[Requirement, str]]:
    """pyproject.toml's dependencies and its `pi` extra, each with where it comes from."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return ([(Requirement(r), "dependencies") for r in project["dependencies"]]
            + [(Requirement(r), "[pi]") for r in project["optional-dependencies"]["pi"]])


def pi_packages() -> list[str]:
    """install.sh's PI_PACKAGES=(...) array, as written there."""
    m = re.search(r"^PI_PACKAGES=\(([^)]*)\)", INSTALL_SH.read_text(), re.MULTILINE)
    assert m, f"no PI_PACKAGES=(...) in {INSTALL_SH}"
    return [w.strip("'\"") for w in m.group(1).split()]


def debian_python_names(packages: list[str]) -> dict[str, str]:
    """PyPI name (normalised) -> the Debian package that provides it: python3-<name>."""
    return {canonicalize_name(p.removeprefix("python3-")): p
            for p in packages if p.startswith("python3-")}


def local_requires(name: str) -> list[str] | None:
    """Requires-Dist of `name` as installed in this venv; None when it is not installed."""
    try:
        return metadata.distribution(name).requires or []
    except metadata.PackageNotFoundError:
        return None


@dataclass
class Node:
    name: str
    spec: SpecifierSet = field(default_factory=SpecifierSet)
    extras: set[str] = field(default_factory=set)
    via: str = ""


def closure(env: dict[str, str], wheel_requires: dict[str, list[str]]) -> dict[str, Node]:
    """Every requirement a Pi's venv gets: roots, then their requirements (markers evaluated
    for the target), from this venv's metadata, else from the target's wheel, else none."""
    nodes: dict[str, Node] = {}
    todo = [(r, via) for r, via in root_requirements() if applies(r, env, set())]
    while todo:
        req, via = todo.pop()
        name = canonicalize_name(req.name)
        node = nodes.get(name)
        new_extras = set(map(canonicalize_name, req.extras))
        if node is None:
            node = nodes[name] = Node(name, via=via)
        elif new_extras <= node.extras:
            node.spec &= req.specifier
            continue
        node.spec &= req.specifier
        node.extras |= new_extras
        requires = local_requires(req.name)
        if requires is None:
            requires = wheel_requires.get(name, [])
        for text in requires:
            dep = Requirement(text)
            if applies(dep, env, node.extras):
                todo.append((dep, name))
    return nodes


@dataclass
class Result:
    ok: bool                          # the version pip would take has a wheel for the target
    text: str                         # for the table
    requires: list[str] | None        # Requires-Dist of the wheel found, if any
    pure: bool = False                # a py3-none-any wheel: the answer for every platform


class PipTimeout(AssertionError):
    pass


class PyPI:
    """pip against PyPI through the machine's pip config (--isolated: no user config or PIP_*
    variables, so no local wheel folders or mirrors count)."""

    def __init__(self) -> None:
        self._versions: dict[str, list[Version]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    @staticmethod
    def pip(*args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([sys.executable, "-m", "pip", "--isolated",
                                   "--disable-pip-version-check", "--no-input", "--timeout", "20",
                                   "--retries", "1", *args],
                                  check=False, capture_output=True, text=True, timeout=PIP_TIMEOUT)
        except subprocess.TimeoutExpired:
            what = f"pip {' '.join(args[:2])} {args[-1]}"
            raise PipTimeout(f"{what}: no answer in {PIP_TIMEOUT} s") from None

    @staticmethod
    def check_answer(proc: subprocess.CompletedProcess[str], what: str) -> bool:
        """True if pip succeeded, False if it found no such distribution; raise on anything else
        (a network error must not pass for "no wheel")."""
        if proc.returncode == 0:
            return True
        err = proc.stderr
        if ("No matching distribution found" in err
                and not re.search(r"Retrying|Could not fetch URL|NewConnectionError|timed out",
                                  err)):
            return False
        raise AssertionError(f"pip {what} failed (exit {proc.returncode}):\n{err[-2000:]}")

    def newest(self, name: str, spec: SpecifierSet) -> Version | None:
        """The newest final release of `name` in `spec` (sdist or wheel, any platform): the one
        pip takes where it may build from source. Asked once per name, whichever target asks."""
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._versions:
                proc = self.pip("index", "versions", "--json", "--python-version", PYTHON, name)
                versions = []
                if self.check_answer(proc, f"index versions {name}"):
                    for v in json.loads(proc.stdout.strip().splitlines()[-1])["versions"]:
                        try:
                            versions.append(Version(v))
                        except InvalidVersion:
                            pass
                self._versions[name] = versions
        return max((v for v in self._versions[name] if v in spec and not v.is_prerelease),
                   default=None)

    def wheel(self, node: Node, machine: str) -> Result:
        """Does the version pip on the Pi would take have a wheel for `machine`, Python 3.11?"""
        args = ["download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON,
                "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none"]
        for p in platforms(machine):
            args += ["--platform", p]
        with tempfile.TemporaryDirectory(prefix="pi-wheel-") as tmp:
            proc = self.pip(*args, "-d", tmp, f"{node.name}{node.spec}")
            if not self.check_answer(proc, f"download {node.name} for {machine}"):
                newest = self.newest(node.name, node.spec)
                text = f"no ({newest} has none)" if newest else "no (no release)"
                return Result(False, text, None)
            (whl,) = Path(tmp).glob("*.whl")
            _, version, _, tags = parse_wheel_filename(whl.name)
            with zipfile.ZipFile(whl) as z:
                meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
                headers = HeaderParser().parsestr(z.read(meta).decode())
        requires = headers.get_all("Requires-Dist") or []
        plats = sorted({t.platform.removesuffix(f"_{machine}") for t in tags})
        kind = "any" if plats == ["any"] else f"{min(t.abi for t in tags)}, {plats[0]}"
        newest = self.newest(node.name, node.spec)
        if newest is not None and newest > version:
            return Result(False, f"no: {newest} has none ({version} has one)", requires)
        return Result(True, f"{version} ({kind})", requires, pure=kind == "any")


def measure(pypi: PyPI) -> dict[str, dict[str, tuple[Node, Result]]]:
    """target -> name -> (requirement, result). Each target's downloads run in a thread pool;
    the first target's pure-Python wheels answer for the others (fewer pip runs)."""
    out: dict[str, dict[str, tuple[Node, Result]]] = {t: {} for t in TARGETS}
    wheel_requires: dict[str, dict[str, list[str]]] = {t: {} for t in TARGETS}
    with ThreadPoolExecutor(WORKERS) as pool:
        while True:                       # a round more when a wheel brings new requirements
            asked = 0
            for target in TARGETS:
                jobs = []
                for name, node in closure(marker_env(target), wheel_requires[target]).items():
                    if name in out[target]:
                        continue
                    first = out[TARGETS[0]].get(name)
                    if first is not None and first[1].pure and first[0].spec == node.spec:
                        out[target][name] = (node, first[1])
                    else:
                        jobs.append((node, pool.submit(pypi.wheel, node, target)))
                for node, future in jobs:
                    result = future.result()
                    out[target][node.name] = (node, result)
                    if result.requires is not None and local_requires(node.name) is None:
                        wheel_requires[target][node.name] = result.requires
                asked += len(jobs)
            if not asked:
                return out


def table(found: dict[str, dict[str, tuple[Node, Result]]], debian: dict[str, str]) -> str:
    names = sorted(set().union(*found.values()))
    rows = [("package", "required by", "aarch64 wheel", "armv7l wheel", "install.sh PI_PACKAGES")]
    for n in names:
        via = next(found[t][n][0].via for t in TARGETS if n in found[t])
        cells = [found[t][n][1].text if n in found[t] else "(not needed)" for t in TARGETS]
        rows.append((n, via, *cells, debian.get(n, "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def wheels():
    """(target -> name -> (requirement, result), PyPI name -> Debian package)."""
    pypi = PyPI()
    try:
        probe = pypi.pip("index", "versions", "--json", "pip")
        reached = probe.returncode == 0
        lines = probe.stderr.strip().splitlines()
        why = ([ln.strip() for ln in lines if re.search(r"Retrying|Could not fetch", ln)][:1]
               or lines[-1:])
    except PipTimeout as e:
        reached, why = False, [str(e)]
    if not reached:
        message = f"PyPI cannot be reached through pip: {' '.join(why) or 'pip failed'}"
        if in_ci():
            pytest.fail(message + " (CI is set: this test needs PyPI)", pytrace=False)
        pytest.skip(message)
    found = measure(pypi)
    debian = debian_python_names(pi_packages())
    print(f"\nPyPI wheels for the box's runtime requirements on Raspberry Pi OS Bookworm, "
          f"CPython {PYTHON}:\n{table(found, debian)}")
    return found, debian


def lacking(found: dict[str, tuple[Node, Result]]) -> list[str]:
    return sorted(n for n, (_, r) in found.items() if not r.ok)


def test_pi_packages_parse():
    """The check below relies on install.sh naming the board libraries python3-<name>."""
    debian = debian_python_names(pi_packages())
    assert {"lgpio", "spidev"} <= set(debian), pi_packages()


def test_aarch64_needs_only_pi_packages(wheels, record_property):
    found, debian = wheels
    missing = lacking(found["aarch64"])
    record_property("aarch64_without_pypi_wheel", ",".join(missing))
    uncovered = [n for n in missing if n not in debian]
    print(f"aarch64: no PyPI wheel: {', '.join(missing) or 'none'}; "
          f"from PI_PACKAGES: {', '.join(n for n in missing if n in debian) or 'none'}")
    assert not uncovered, (
        f"on aarch64 (no piwheels) these have no PyPI wheel for CPython {PYTHON} and are not in "
        f"install.sh's PI_PACKAGES, so `pip install .[pi]` on a Pi builds them from source: "
        + "; ".join(f"{n} ({found['aarch64'][n][1].text}; required by {found['aarch64'][n][0].via})"
                    for n in uncovered)
        + ". Give each a Raspberry Pi OS package (python3-<name>) in PI_PACKAGES, or depend on "
          "something with wheels")


def test_armv7l_without_pypi_wheels(wheels, record_property):
    """Not failed: Raspberry Pi OS on armv7l also asks piwheels, which this machine cannot reach."""
    found, debian = wheels
    missing = lacking(found["armv7l"])
    from_os = [n for n in missing if n in debian]
    from_piwheels = [n for n in missing if n not in debian]
    record_property("armv7l_without_pypi_wheel", ",".join(missing))
    record_property("armv7l_needs_piwheels", ",".join(from_piwheels))
    print(f"armv7l: no PyPI wheel: {', '.join(missing) or 'none'}\n"
          f"  from PI_PACKAGES: {', '.join(from_os) or 'none'}\n"
          f"  must come from piwheels (not checked here): {', '.join(from_piwheels) or 'none'}")
