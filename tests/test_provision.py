"""`vrmbox provision` from a fresh root: what it writes, that a second run changes nothing, that
two boxes share no secret, that bad input is refused before anything is written, and that the
box's daemon reaches the provisioned broker over TLS with its own credentials."""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tomllib
from pathlib import Path

import pytest

from device import config as device_config
from device.store import Store
from processes import daemon, wait_for
from processes import vrmbox as vrmbox_data
from provisioned import Client, box_credentials, layout, new_root, provision, remove_root, vrmbox
from device.config import render as config_render
from provisioning.launch import Broker, free_port
from provisioning.layout import layout_for
from provisioning.provision import AUDIT_ROTATED

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def root():
    r = new_root()
    yield r
    remove_root(r)


@pytest.fixture
def root2():
    r = new_root()
    yield r
    remove_root(r)


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file under root (not the broker's own persistence): hash, mtime, mode."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "vrmbox-broker" not in p.parts:
            st = p.stat()
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(),
                                             st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return out


SECRETS = ("etc/vrmbox/secrets/broker.password", "etc/vrmbox/secrets/companion_secret",
           "etc/vrmbox/tls/ca.key", "etc/vrmbox/tls/server.key", "etc/vrmbox/tls/companion.key",
           "var/lib/vrmbox/keys/device.key", "var/lib/vrmbox/keys/data.key")


def test_provision_writes_everything_and_a_second_run_changes_nothing(root):
    port = free_port()
    first = provision(root, port)
    assert first.returncode == 0, first.stderr
    lay = layout(root)
    for rel in SECRETS:     # the broker reads its key through its group; nobody else reads any
        want = 0o640 if rel.endswith("server.key") else 0o600
        assert stat.S_IMODE((root / rel).stat().st_mode) == want, rel
    assert stat.S_IMODE(lay.secrets.stat().st_mode) == 0o711
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}\n", lay.companion_fingerprint.read_text())
    cfg = device_config.load_config(lay.config, env={})
    assert cfg.broker.url == f"mqtts://127.0.0.1:{port}" and cfg.broker.tls
    assert cfg.broker.username == box_credentials(lay)[0]
    assert device_config.broker_password(cfg.broker) == box_credentials(lay)[1]
    assert cfg.data_dir == lay.data
    check = vrmbox("config", "check", str(lay.config))
    assert check.returncode == 0, check.stderr

    before = snapshot(root)
    second = provision(root, port)
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    assert snapshot(root) == before


def test_the_config_has_every_setting(root):
    assert provision(root, free_port()).returncode == 0
    text = layout(root).config.read_text()
    for section, keys in device_config.SECTIONS.items():
        if section:
            assert f"\n[{section}]\n" in text
        for key in keys:
            if key != "presets":
                assert re.search(rf"^(# )?{key} =", text, re.M), f"{section}.{key} missing"
    assert tomllib.loads(text)["broker"]["password_file"].endswith("broker.password")
    with pytest.raises(ValueError, match="not config keys"):
        config_render.config_toml({"broker.nonsense": 1}, "header")


def test_dry_run_lists_the_files_and_writes_nothing(root):
    p = vrmbox("provision", "--root", str(root), "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    planned = json.loads(p.stdout)
    assert planned["dry_run"] and planned["changed"]
    assert str(layout(root).box_password) in planned["created"]
    assert list(root.iterdir()) == []


def test_two_boxes_share_no_secret(root, root2):
    assert provision(root, free_port()).returncode == 0
    assert provision(root2, free_port()).returncode == 0
    one = {rel: (root / rel).read_bytes() for rel in SECRETS}
    two = {rel: (root2 / rel).read_bytes() for rel in SECRETS}
    values_two = set(two.values())
    assert not set(one.values()) & values_two
    assert box_credentials(layout(root))[0] != box_credentials(layout(root2))[0]
    everything_two = b"".join((root2 / p).read_bytes() for p in snapshot(root2))
    for secret in (box_credentials(layout(root))[1].encode(),
                   layout(root).companion_secret.read_bytes().strip()):
        assert secret not in everything_two


@pytest.mark.parametrize("url, what", [
    ("mqtt://broker.example.org", "unencrypted"),
    ("http://broker.example.org", "mqtts://"),
    ("mqtts://user:pw@broker.example.org", "credentials"),
])
def test_a_bad_market_url_is_refused_with_one_message_and_nothing_written(root, url, what):
    p = vrmbox("provision", "--root", str(root), "--market", url)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and what in lines[0] and "--market" in lines[0]
    assert list(root.iterdir()) == []


def test_a_market_ca_that_is_not_a_certificate_is_refused(root, tmp_path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    p = vrmbox("provision", "--root", str(root), "--market", "mqtts://broker.example.org",
               "--market-ca", str(bogus), "--no-market-check")
    assert p.returncode == 1 and str(bogus) in p.stderr and "PEM" in p.stderr
    assert list(root.iterdir()) == []


def test_a_certificate_that_does_not_match_its_key_is_refused(root):
    port = free_port()
    assert provision(root, port).returncode == 0
    lay = layout(root)
    lay.key("server").write_bytes(lay.key("companion").read_bytes())   # another key
    before = snapshot(root)
    p = provision(root, port)
    assert p.returncode == 1
    assert "server.pem" in p.stderr and "does not belong" in p.stderr and "--rotate" in p.stderr
    assert snapshot(root) == before


def test_rotate_reissues_secrets_keeps_the_ca_and_keys_and_is_audited(root):
    port = free_port()
    assert provision(root, port).returncode == 0
    lay = layout(root)
    old = {rel: (root / rel).read_bytes() for rel in SECRETS}
    p = provision(root, port, "--rotate")
    assert p.returncode == 0, p.stderr
    new = {rel: (root / rel).read_bytes() for rel in SECRETS}
    for rel in ("etc/vrmbox/secrets/broker.password", "etc/vrmbox/secrets/companion_secret",
                "etc/vrmbox/tls/server.key", "etc/vrmbox/tls/companion.key"):
        assert new[rel] != old[rel], rel
    for rel in ("etc/vrmbox/tls/ca.key", "var/lib/vrmbox/keys/device.key", "var/lib/vrmbox/keys/data.key"):
        assert new[rel] == old[rel], rel
    with Store.open(lay.data) as store:
        events = [e for e in store.audit.entries() if e.event_type == AUDIT_ROTATED]
    assert len(events) == 1 and "broker.password" in events[0].data["files"]
    assert provision(root, port).returncode == 0        # and then it is stable again
    assert "nothing to do" in provision(root, port).stdout


def test_an_existing_market_password_is_not_replaced_without_rotate(root, tmp_path):
    pw1, pw2 = tmp_path / "pw1", tmp_path / "pw2"
    pw1.write_text("first-secret\n")
    pw2.write_text("second-secret\n")
    args = ("--market", "mqtts://broker.example.org", "--market-username", "box-7",
            "--no-market-check")
    assert provision(root, free_port(), *args, "--market-password-file", str(pw1)).returncode == 0
    lay = layout(root)
    p = provision(root, free_port(), *args, "--market-password-file", str(pw2))
    assert p.returncode == 1 and str(lay.market_password) in p.stderr and "--rotate" in p.stderr
    assert lay.market_password.read_text() == "first-secret\n"


def test_add_vendor_issues_unique_accounts_and_refuses_bad_or_existing_ones(root, tmp_path):
    assert provision(root, free_port()).returncode == 0
    out = tmp_path / "acme.pw"
    p = vrmbox("broker", "add-vendor", "acme", "--root", str(root), "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    password = out.read_text().strip()
    assert len(password) >= 40 and password not in layout(root).passwd.read_text()
    again = vrmbox("broker", "add-vendor", "acme", "--root", str(root))
    assert again.returncode == 1 and "exists" in again.stderr
    bad = vrmbox("broker", "add-vendor", "Not/A-Slug", "--root", str(root))
    assert bad.returncode == 1 and "slug" in bad.stderr
    shown = vrmbox("broker", "add-vendor", "bobs-bikes", "--root", str(root), "--json")
    assert json.loads(shown.stdout)["password"] != password


def test_config_check_names_the_bad_key_and_value(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[broker]\nurl = "htp://box"\n')
    p = vrmbox("config", "check", str(bad))
    assert p.returncode == 1
    assert "broker.url" in p.stderr and "htp://box" in p.stderr and "fix:" in p.stderr


def test_user_layout_follows_xdg():
    env = {"HOME": "/home/ann", "XDG_CONFIG_HOME": "/home/ann/.cfg"}
    lay = layout_for(None, 1000, env)
    assert not lay.system
    assert lay.config == Path("/home/ann/.cfg/vrmbox/config.toml")
    assert lay.data == Path("/home/ann/.local/share/vrmbox")
    assert layout_for(None, 0, env).config == Path("/etc/vrmbox/config.toml")


def test_the_box_connects_to_the_provisioned_broker_over_tls(root, tmp_path, monkeypatch):
    port = free_port()
    assert provision(root, port).returncode == 0
    lay = layout(root)
    broker = Broker(tmp_path / "broker", conf=lay.broker_conf).start()
    try:
        assert broker.tls and broker.port == port
        monkeypatch.setenv("VRMBOX_CONFIG", str(lay.config))
        proc = daemon(lay.data, broker.url, tmp_path / "daemon.log").start()
        try:
            wait_for(lambda: json.loads(vrmbox_data("status", "--json", data_dir=lay.data).stdout)["connected"],
                     what="daemon connected over TLS with its provisioned account")
        finally:
            proc.stop()
        anon = Client(broker.host, broker.port, lay.pem("ca"), name="anon")
        try:
            assert anon.connect() != 0
        finally:
            anon.close()
    finally:
        broker.stop()
    assert box_credentials(lay)[1] not in (tmp_path / "daemon.log").read_text()


def test_market_credentials_are_tried_before_anything_is_written(root, root2, tmp_path):
    """Root2 plays a market broker (a provisioned Mosquitto); the box in root must log in."""
    mport = free_port()
    assert provision(root2, mport).returncode == 0
    market = layout(root2)
    out = tmp_path / "market.pw"
    assert vrmbox("broker", "add-vendor", "box-at-market", "--root", str(root2),
                  "--out", str(out)).returncode == 0
    broker = Broker(tmp_path / "market", conf=market.broker_conf).start()
    try:
        wrong = tmp_path / "wrong.pw"
        wrong.write_text("not-it\n")
        args = ("--market", f"mqtts://127.0.0.1:{mport}", "--market-ca", str(market.pem("ca")),
                "--market-username", "box-at-market")
        refused = provision(root, free_port(), *args, "--market-password-file", str(wrong))
        assert refused.returncode == 1 and "refused" in refused.stderr
        assert list(root.iterdir()) == []
        ok = provision(root, free_port(), *args, "--market-password-file", str(out))
        assert ok.returncode == 0, ok.stderr
    finally:
        broker.stop()
    cfg = device_config.load_config(layout(root).config, env={})
    assert cfg.broker.url == f"mqtts://127.0.0.1:{mport}" and cfg.broker.username == "box-at-market"
    assert device_config.broker_password(cfg.broker) == out.read_text().strip()
    assert os.path.samefile(cfg.broker.ca_file, layout(root).market_ca)


NOBODY_SCRIPT = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, "tests")
from vrmbox.cli import main
from provisioned import Client, box_credentials
from provisioning.launch import Broker, free_port
from provisioning.layout import layout_for
port = free_port()
rc = main(["provision", "--broker-port", str(port), "--broker-bind", "127.0.0.1"])
lay = layout_for(None, os.geteuid())
broker = Broker(Path(os.environ["HOME"]) / "run", conf=lay.broker_conf).start()
try:
    c = Client(broker.host, broker.port, lay.pem("ca"), *box_credentials(lay), name="box")
    connack = c.connect()
    c.close()
finally:
    broker.stop()
print(json.dumps({"rc": rc, "connack": connack, "config": str(lay.config),
                  "uid": os.geteuid(), "owner": lay.box_password.stat().st_uid}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as an ordinary user")
def test_an_ordinary_user_provisions_into_xdg_dirs_and_runs_the_broker():
    import pwd
    import shutil
    import subprocess
    import sys
    import tempfile

    from provisioning.launch import ROOT, child_env
    nobody = pwd.getpwnam("nobody")
    home = Path(tempfile.mkdtemp(prefix="vrm-home-"))
    try:
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        env = {k: v for k, v in child_env().items() if not k.startswith("XDG_")}
        env.update(HOME=str(home), VRMBOX_CONFIG=os.devnull)
        # util-linux's setpriv: Popen(user=...) cannot exec a Python that lives under /root
        p = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                            "--clear-groups", sys.executable, "-c", NOBODY_SCRIPT], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert out == {"rc": 0, "connack": 0, "config": str(home / ".config/vrmbox/config.toml"),
                       "uid": nobody.pw_uid, "owner": nobody.pw_uid}
    finally:
        shutil.rmtree(home)


def test_socket_allow_lists_name_the_accounts_only_when_they_exist(monkeypatch):
    """Installed (accounts exist): who may open each socket; a dev/test root: single-user setup."""
    from provisioning import accounts
    from provisioning.provision import Options, Report, _config_values
    lay = layout_for(Path("/srv/box"), 0)
    home = {"url": "mqtts://127.0.0.1:8883", "ca_file": lay.pem("ca"), "username": "box@1",
            "password_file": lay.box_password}
    has_lists = "control_users" in device_config.SECTIONS["control"]
    monkeypatch.setattr(accounts, "exists", lambda name: True)
    values, _ = _config_values(Options(), lay, home, Report(lay))
    if has_lists:
        assert values["control.control_users"] == [accounts.BOX_USER, accounts.COMPANION_USER]
        assert values["control.button_users"] == [accounts.UI_USER]
        assert values["control.button_socket"] == lay.button_socket
    monkeypatch.setattr(accounts, "exists", lambda name: False)
    report = Report(lay)
    values, _ = _config_values(Options(), lay, home, report)
    assert "control.control_users" not in values and "control.button_users" not in values
    assert any("control_users" in n for n in report.notes)
    assert values["control.socket"] == lay.control_socket == Path("/srv/box/run/vrmbox/control.sock")


def test_board_is_set_in_the_config_and_changed_in_place(root):
    """--board writes ui.profile; another --board later edits that one line, keeping the rest."""
    port = free_port()
    bad = provision(root, port, "--board", "nope")
    assert bad.returncode == 1 and "headless" in bad.stderr and "adafruit-oled-bonnet" in bad.stderr
    assert not layout(root).config.exists()              # checked before anything is written
    assert provision(root, port, "--board", "headless").returncode == 0
    conf = layout(root).config
    assert tomllib.loads(conf.read_text())["ui"]["profile"] == "headless"
    conf.write_text(conf.read_text().replace('log_level = "INFO"', 'log_level = "DEBUG"'))
    again = provision(root, port, "--board", "waveshare-oled-hat")
    assert again.returncode == 0, again.stderr
    text = conf.read_text()
    assert tomllib.loads(text)["ui"]["profile"] == "waveshare-oled-hat"
    assert 'log_level = "DEBUG"' in text                  # the person's edit is kept
    assert conf.with_name("config.toml.bak").is_file()
    check = vrmbox("config", "check", "--json", str(conf))
    assert json.loads(check.stdout)["ui_profile"] == "waveshare-oled-hat"
    same = provision(root, port, "--board", "waveshare-oled-hat")
    assert "nothing to do" in same.stdout


def test_set_key_edits_one_line_or_adds_it():
    from device.config.render import set_key
    text = config_render.example_toml()
    once = set_key(text, "ui.profile", "headless")
    assert tomllib.loads(once)["ui"]["profile"] == "headless"
    assert len(once.splitlines()) == len(text.splitlines())
    assert tomllib.loads(set_key("", "ui.profile", "x"))["ui"]["profile"] == "x"
    other = set_key("[ui]\n[control]\n# profile = 1\n", "ui.profile", "x")
    assert tomllib.loads(other) == {"ui": {"profile": "x"}, "control": {}}


def test_an_older_config_gets_the_keys_new_in_this_version(root):
    """Upgrading: keys provisioning manages that an older config.toml lacks are added; the
    person's edits stay, and the previous file is kept as config.toml.bak."""
    port = free_port()
    assert provision(root, port).returncode == 0
    conf = layout(root).config
    head, _, companion = conf.read_text().partition("\n[companion]\n")
    companion = "\n".join(line for line in companion.splitlines()       # as an older version wrote it
                           if not re.match(r"(cert_file|key_file|ca_file|redirect_port|port) = ", line))
    old = f"{head}\n[companion]\n{companion}"
    old = old.replace('log_level = "INFO"', 'log_level = "DEBUG"')
    conf.write_text(old + "\n")
    assert "cert_file" not in tomllib.loads(old)["companion"]
    again = provision(root, port)
    assert again.returncode == 0, again.stderr
    data = tomllib.loads(conf.read_text())
    assert data["companion"]["cert_file"].endswith("companion.pem") and data["companion"]["port"] == 8443
    assert data["log_level"] == "DEBUG"
    assert conf.with_name("config.toml.bak").read_text() == old + "\n"
    assert "new in this version" in again.stdout
    assert "nothing to do" in provision(root, port).stdout
