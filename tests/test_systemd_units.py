"""The systemd units install.sh installs: `systemd-analyze verify` accepts them without a single
warning, they run as the accounts provisioning hands files to, and each carries the hardening
docs/provisioning.md promises. Also: install.sh --dry-run runs clean on this Debian machine."""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from device.cli.common import EXIT_CONFIG, EXIT_UNAVAILABLE
from provisioning import accounts
from provisioning.launch import ROOT
from provisioning.layout import RUNTIME_DIR_NAME, layout_for

UNITS = ROOT / "provisioning" / "systemd"
INSTALL = ROOT / "provisioning" / "install.sh"
INSTALLED_VENV = "/opt/vrmbox/venv"
DEBIAN_MOSQUITTO_UNIT = Path("/lib/systemd/system/mosquitto.service")
SERVICES = {"vrmbox.service": ("run", accounts.BOX_USER),
            "vrmbox-ui.service": ("ui", accounts.UI_USER),
            "vrmbox-companion.service": ("companion", accounts.COMPANION_USER)}
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                   reason="systemd-analyze missing: setup.sh installs Debian's systemd")


def service(name: str) -> dict[str, list[str]]:
    """[Service] of a unit: key -> every value given (systemd keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = None
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def as_installed(tmp_path: Path) -> Path:
    """The units as install.sh writes them on this machine: the venv path is this test's venv."""
    d = tmp_path / "units"
    d.mkdir()
    for name in SERVICES:
        (d / name).write_text((UNITS / name).read_text().replace(INSTALLED_VENV, sys.prefix))
    return d


@needs_systemd
def test_units_pass_systemd_analyze_verify_without_warnings(tmp_path):
    d = as_installed(tmp_path)
    p = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", *[str(d / n) for n in SERVICES]],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr.strip() == "" and p.stdout.strip() == "", p.stderr


@needs_systemd
def test_verify_notices_a_broken_unit(tmp_path):
    """The check above can fail: a typo'd key is reported."""
    d = as_installed(tmp_path)
    unit = d / "vrmbox.service"
    unit.write_text(unit.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    p = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)], capture_output=True,
                       text=True, timeout=60)
    assert "NoNewPrivilege" in p.stderr


def debian_mosquitto_with_drop_in(tmp_path: Path) -> dict[str, str]:
    """Debian's mosquitto.service and our drop-in in tmp_path; the environment that finds them."""
    shutil.copy(DEBIAN_MOSQUITTO_UNIT, tmp_path / "mosquitto.service")
    shutil.copytree(UNITS / "mosquitto.service.d", tmp_path / "mosquitto.service.d")
    return dict(os.environ, SYSTEMD_UNIT_PATH=f"{tmp_path}:")


@needs_systemd
@pytest.mark.skipif(not DEBIAN_MOSQUITTO_UNIT.exists(), reason="Debian's mosquitto.service not installed")
def test_mosquitto_drop_in_loads_onto_debians_unit(tmp_path):
    env = debian_mosquitto_with_drop_in(tmp_path)
    p = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", "mosquitto.service"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr
    drop_in = configparser.ConfigParser(strict=False)
    drop_in.read_string((UNITS / "mosquitto.service.d" / "vrmbox.conf").read_text())
    lay = layout_for(Path("/"), 0)
    assert str(lay.broker_conf) in drop_in["Service"]["ExecStart"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_unit_runs_as_its_account_with_the_promised_hardening(name):
    command, user = SERVICES[name]
    s = service(name)
    assert s["User"] == [user]
    assert s["ExecStart"] == [f"{INSTALLED_VENV}/bin/vrmbox {command}"]
    assert s["Type"] == ["notify"] and s["WatchdogSec"] and s["Restart"] == ["on-failure"]
    # what restarting cannot fix stops the unit, with the statuses the commands exit with
    assert s["RestartPreventExitStatus"] == [f"{EXIT_CONFIG} {EXIT_UNAVAILABLE}"]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("CapabilityBoundingSet", "")):
        assert s.get(key) == [value], key
    assert s["RestrictAddressFamilies"]
    assert s["Environment"] == [f"VRMBOX_CONFIG={layout_for(Path('/'), 0).config}"]
    lay = layout_for(Path("/"), 0)
    if name == "vrmbox.service":
        assert s["ReadWritePaths"] == [str(lay.data)]         # the data dir only
        assert s["RuntimeDirectory"] == [RUNTIME_DIR_NAME]
        assert lay.run == Path("/run") / RUNTIME_DIR_NAME
    else:
        assert "ReadWritePaths" not in s                    # they write nothing; they ask the daemon


def test_the_ui_has_exactly_the_hardware_groups():
    assert service("vrmbox-ui.service")["SupplementaryGroups"] == [" ".join(accounts.HARDWARE_GROUPS)]
    assert "AF_INET" not in service("vrmbox-ui.service")["RestrictAddressFamilies"][0]


def test_install_dry_run_runs_clean_and_changes_nothing(tmp_path):
    before = {p: p.stat().st_mtime_ns for p in (Path("/etc/passwd"), Path("/etc/group"))}
    venv_existed = Path(INSTALLED_VENV).exists()
    p = subprocess.run(["bash", str(INSTALL), "--dry-run"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == ""
    out = p.stdout
    for step in ("apt-get install", "python3 -m venv", "useradd", accounts.BOX_USER, accounts.UI_USER,
                 accounts.COMPANION_USER, "systemctl daemon-reload", "vrmbox provision",
                 "mosquitto.service.d"):
        assert step in out, step
    assert Path(INSTALLED_VENV).exists() == venv_existed
    assert before == {p: p.stat().st_mtime_ns for p in before}


def test_install_uninstall_dry_run_keeps_data_unless_purge(tmp_path):
    keep = subprocess.run(["bash", str(INSTALL), "--uninstall", "--dry-run"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert keep.returncode == 0, keep.stderr
    assert "userdel" in keep.stdout and "/var/lib/vrmbox" not in [w for line in keep.stdout.splitlines()
                                                                   if line.startswith("+ rm")
                                                                   for w in line.split()]
    purge = subprocess.run(["bash", str(INSTALL), "--uninstall", "--purge", "--dry-run"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert purge.returncode == 0, purge.stderr
    assert "rm -rf /var/lib/vrmbox" in purge.stdout


MAX_EXPOSURE = 2.0


def exposure(unit: Path) -> float:
    """`systemd-analyze security`'s overall exposure of a unit file (0 safest, 10 worst)."""
    p = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=60, cwd=unit.parent)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout)
    assert m, p.stdout + p.stderr
    return float(m.group(1))


@needs_systemd
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_unit_is_exposed_at_most_2(name, tmp_path):
    level = exposure(as_installed(tmp_path) / name)
    print(f"{name}: exposure {level}")
    assert level <= MAX_EXPOSURE, f"{name}: exposure {level} > {MAX_EXPOSURE}"


@needs_systemd
def test_exposure_notices_a_weakened_unit(tmp_path):
    d = as_installed(tmp_path)
    weak = d / "weak.service"
    weak.write_text("\n".join(line for line in (d / "vrmbox.service").read_text().splitlines()
                              if not line.startswith(("SystemCall", "Protect", "Private", "Restrict"))))
    assert exposure(weak) > MAX_EXPOSURE


@needs_systemd
@pytest.mark.skipif(not DEBIAN_MOSQUITTO_UNIT.exists(), reason="Debian's mosquitto.service not installed")
def test_the_home_broker_with_its_drop_in_is_exposed_at_most_2(tmp_path):
    env = debian_mosquitto_with_drop_in(tmp_path)
    p = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", "mosquitto.service"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout)
    assert m, p.stdout + p.stderr
    print(f"mosquitto.service (Debian's unit + vrmbox.conf): exposure {m.group(1)}")
    assert float(m.group(1)) <= MAX_EXPOSURE
    drop_in = (UNITS / "mosquitto.service.d" / "vrmbox.conf").read_text()
    assert "\nUser=mosquitto\n" in drop_in and "\nExecStartPre=\n" in drop_in
