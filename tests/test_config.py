"""Config: defaults, file + env + overrides precedence, every bad setting named, the example file."""
from __future__ import annotations

import logging
import os
import re
from dataclasses import fields
from pathlib import Path

import pytest

from device import config
from device.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "vrmbox.example.toml"
DOCS = ROOT / "docs" / "config.md"
ENV = {"HOME": "/home/alice"}


@pytest.fixture(autouse=True)
def no_system_config(tmp_path, monkeypatch):
    """Never read a real /etc/vrmbox/config.toml from a test."""
    monkeypatch.setattr(config, "SYSTEM_CONFIG", tmp_path / "etc" / "absent.toml")


def write(tmp_path: Path, text: str, name: str = "vrmbox.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults():
    c = load_config(env=ENV)
    assert c.source is None
    assert c.data_dir == Path("/home/alice/.local/share/vrmbox")
    assert c.control.socket == c.data_dir / "control.sock"
    b = c.broker
    assert (b.url, b.host, b.port, b.tls) == ("mqtt://127.0.0.1:1883", "127.0.0.1", 1883, False)
    assert b.username is None and b.password is None and b.password_file is None
    assert (b.keepalive, b.session_expiry, b.reconnect_min, b.reconnect_max) == (30, 7 * 86400, 1, 60)
    assert c.intake == config.IntakeConfig(1000, 60, 20, 65536, 20)
    assert c.intents.default_ttl_s == 7 * 86400 and c.intents.terms_id == "vrm-basic-1"
    assert "No tracking" in c.intents.terms_text
    assert c.agreements == config.AgreementsConfig(300, 30, False)
    assert c.presets == () and c.log_level == "INFO"


def test_data_dir_from_env_and_socket_follows():
    c = load_config(env={**ENV, "VRMBOX_DATA_DIR": "/srv/box"})
    assert c.data_dir == Path("/srv/box") and c.control.socket == Path("/srv/box/control.sock")


def test_file_then_env_then_overrides(tmp_path):
    p = write(tmp_path, """
data_dir = "/from/file"
log_level = "debug"
[broker]
url = "mqtts://broker.example"
keepalive = 45
[intake]
max_queue = 10
per_vendor_burst = 5
""")
    c = load_config(p, env=ENV)
    assert c.source == p and c.data_dir == Path("/from/file") and c.log_level == "DEBUG"
    assert (c.broker.host, c.broker.port, c.broker.tls, c.broker.keepalive) == ("broker.example", 8883, True, 45)
    assert c.intake.max_queue == 10 and c.intake.per_vendor_per_minute == 60   # untouched default
    c = load_config(p, env={**ENV, "VRMBOX_DATA_DIR": "/from/env"})
    assert c.data_dir == Path("/from/env")
    c = load_config(p, {"broker.url": "mqtt://127.0.0.1:1234", "data_dir": "/tmp/x",
                        "intake.max_queue": "500", "agreements.companion_only_confirmation": "true"},
                    env={**ENV, "VRMBOX_DATA_DIR": "/from/env"})
    assert (c.broker.host, c.broker.port, c.broker.tls) == ("127.0.0.1", 1234, False)
    assert c.broker.keepalive == 45                                          # file value kept
    assert c.data_dir == Path("/tmp/x") and c.control.socket == Path("/tmp/x/control.sock")
    assert c.intake.max_queue == 500 and c.agreements.companion_only_confirmation is True


def test_config_file_from_env_and_system_path(tmp_path, monkeypatch):
    p = write(tmp_path, 'log_level = "WARNING"\n')
    assert load_config(env={**ENV, "VRMBOX_CONFIG": str(p)}).log_level == "WARNING"
    with pytest.raises(ConfigError, match="not found"):
        load_config(env={**ENV, "VRMBOX_CONFIG": str(tmp_path / "nope.toml")})
    monkeypatch.setattr(config.load, "SYSTEM_CONFIG", p)
    assert load_config(env=ENV).source == p
    assert load_config(env={**ENV, "VRMBOX_CONFIG": ""}).source == p


def test_relative_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ca.pem").write_text("x")
    p = write(tmp_path / "etc", '[broker]\nurl = "mqtts://h"\nca_file = "ca.pem"\n[control]\nsocket = "~/s.sock"\n')
    c = load_config(p, env=ENV)
    assert c.broker.ca_file == tmp_path / "etc" / "ca.pem"
    assert c.control.socket == Path("/home/alice/s.sock")


def test_password_file(tmp_path, caplog):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    os.chmod(pw, 0o600)
    p = write(tmp_path, f'[broker]\nusername = "box"\npassword_file = "{pw}"\n')
    with caplog.at_level(logging.WARNING, logger="device.config"):
        c = load_config(p, env=ENV)
    assert c.broker.password is None and c.broker.password_file == pw    # not read at load
    assert config.broker_password(c.broker) == "s3cret"
    assert "s3cret" not in repr(c)
    assert not caplog.records
    os.chmod(pw, 0o644)
    with caplog.at_level(logging.WARNING, logger="device.config"):
        assert config.broker_password(load_config(p, env=ENV).broker) == "s3cret"
    assert any("0600" in r.getMessage() for r in caplog.records)


def test_inline_password_warns_and_is_never_shown(tmp_path, caplog):
    p = write(tmp_path, '[broker]\nusername = "box"\npassword = "hunter2"\n')
    with caplog.at_level(logging.WARNING, logger="device.config"):
        assert load_config(p, env=ENV).broker.password == "hunter2"
    assert any("password_file" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError) as exc:
        load_config(p, {"broker.password_file": str(tmp_path / "pw")}, env=ENV)
    assert "hunter2" not in str(exc.value) and exc.value.key == "broker.password"


def test_exact_error_message():
    with pytest.raises(ConfigError) as exc:
        load_config(None, {"broker.url": "htp://x"}, env=ENV)
    assert str(exc.value) == "config key 'broker.url' = 'htp://x': scheme must be mqtt or mqtts"
    assert exc.value.key == "broker.url" and isinstance(exc.value, ValueError)


BAD_OVERRIDES = [
    ("broker.url", "mqtt://", "host"),
    ("broker.url", "mqtt://u:p@host", "credentials"),
    ("broker.url", "mqtt://host:99999", "valid URL"),
    ("broker.url", "mqtt://host/path", "scheme://host"),
    ("broker.url", 1883, "must be a string"),
    ("broker.keepalive", 0, "between 5 and 3600"),
    ("broker.keepalive", "30s", "must be an integer"),
    ("broker.keepalive", True, "must be an integer"),
    ("home_broker.session_expiry", -1, "between"),
    ("broker.reconnect_min", 0, "between"),
    ("broker.reconnect_max", 0, "between"),
    ("broker.client_id", "has space", "characters"),
    ("broker.username", "", "characters"),
    ("broker.password", "x", "is required"),                  # no username -> names broker.username
    ("broker.ca_file", "/etc/ca.pem", "mqtts"),
    ("intake.max_queue", 0, "between"),
    ("intake.per_vendor_per_minute", 1.5, "integer"),
    ("intake.per_vendor_burst", 5000, "max_queue"),
    ("intake.max_message_bytes", 1 << 20, "between"),
    ("intents.default_ttl_s", 10, "between"),
    ("intents.terms_id", "Basic Terms", "slug"),
    ("intents.terms_text", "", "characters"),
    ("agreements.countersign_timeout_s", 1, "between"),
    ("agreements.default_duration_days", 4000, "between"),
    ("agreements.companion_only_confirmation", "maybe", "true or false"),
    ("control.socket", "/" + "s" * 200, "Unix socket"),
    ("data_dir", "", "path"),
    ("log_level", "loud", "one of"),
    ("presets", {"name": "x"}, "list"),
    ("broker.nope", 1, "unknown key"),
    ("nope", 1, "unknown key"),
    ("intake", {}, "unknown key"),
]


@pytest.mark.parametrize("key,value,reason", BAD_OVERRIDES, ids=[f"{k}={v!r}"[:40] for k, v, _ in BAD_OVERRIDES])
def test_bad_override_is_named(key, value, reason):
    with pytest.raises(ConfigError) as exc:
        load_config(None, {key: value}, env=ENV)
    msg = str(exc.value)
    expected_key = "broker.username" if key == "broker.password" else key
    assert exc.value.key == expected_key
    assert msg.startswith(f"config key '{expected_key}' = ")
    assert reason in msg


BAD_FILES = [
    ("[broker]\nurl = 'htp://x'\n", "broker.url", "scheme"),
    ("[broker]\nspeed = 3\n", "broker.speed", "unknown key"),
    ("colour = 'red'\n", "colour", "unknown key"),
    ("broker = 'mqtt://x'\n", "broker", "must be a table"),
    ("[intake]\nmax_queue = '1000'\n", "intake.max_queue", "integer"),  # no text coercion in files
    ("[broker]\nreconnect_min = 30\nreconnect_max = 10\n", "broker.reconnect_max", "reconnect_min"),
    ("[broker]\nurl = 'mqtts://h'\ncert_file = 'c.pem'\n", "broker.cert_file", "not found"),
    ("[[presets]]\nname = 'Bike'\n", "presets[0].category", "required"),
    ("[[presets]]\nname = 'Bike'\ncategory = 'Bikes!'\n", "presets[0].category", "slug"),
    ("[[presets]]\nname = 'Bike'\ncategory = 'bikes'\ncolour = 1\n", "presets[0].colour", "unknown"),
    ("[[presets]]\nname = 'Bike'\ncategory = 'bikes'\n[[presets]]\nname = 'Bike'\ncategory = 'cars'\n",
     "presets[1].name", "another preset"),
    ("[[presets]]\nname = 'Bike'\ncategory = 'bikes'\nattributes = {a = {b = 1}}\n",
     "presets[0].attributes.a", "string, number"),
]


@pytest.mark.parametrize("text,key,reason", BAD_FILES, ids=[k for _, k, _ in BAD_FILES])
def test_bad_file_setting_is_named(tmp_path, text, key, reason):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(p, env=ENV, reader=config.DAEMON)
    assert exc.value.key == key and f"config key '{key}'" in str(exc.value)
    assert reason in str(exc.value)


def test_each_process_checks_only_its_own_files(tmp_path):
    """The UI and the phone app load the daemon's config without touching its files."""
    text = ("[broker]\nurl = 'mqtts://h'\nusername = 'u'\npassword_file = 'missing'\n"
            "ca_file = 'ca.pem'\ncert_file = 'c.pem'\nkey_file = 'k.pem'\n")
    p = write(tmp_path, text)
    for reader in (config.UI, config.COMPANION, config.CLI):
        c = load_config(p, env=ENV, reader=reader)
        assert c.broker.password is None and c.reader == reader
    with pytest.raises(ConfigError, match="ca_file.*file not found"):
        load_config(p, env=ENV, reader=config.DAEMON)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(p, env=ENV, reader=config.CHECK)
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    c = load_config(p, env=ENV, reader=config.DAEMON)
    with pytest.raises(ConfigError) as exc:      # the secret: when it is used, naming who needs it
        config.broker_password(c.broker)
    assert exc.value.key == "broker.password_file" and "cannot be read by" in str(exc.value)
    assert "secret of vrmbox" in str(exc.value) and "\n" not in str(exc.value)
    home = write(tmp_path, text.replace("[broker]", "[home_broker]"), "home.toml")
    with pytest.raises(ConfigError) as exc:
        config.broker_password(load_config(home, env=ENV, reader=config.DAEMON).home_broker)
    assert exc.value.key == "home_broker.password_file"


def test_every_key_is_declared_once_with_help_and_readers():
    names = [k.name for k in config.KEYS]
    assert len(names) == len(set(names))
    for k in config.KEYS:
        assert k.help and "\n" not in k.help and k.readers <= set(config.READERS), k.name
        if k.default is None:
            assert k.example is not None or k.default_doc or k.name.endswith(".password_file") \
                or k.name == "presets", f"{k.name}: no default and no example"


def test_docs_and_example_are_made_from_the_declaration():
    from device.config import render
    assert render.main(["--check"]) == 0, "run: python -m device.config.render --write"
    assert render.example_toml() == EXAMPLE.read_text()


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*broken.toml': is not valid TOML"):
        load_config(write(tmp_path, "[broker\n", "broken.toml"), env=ENV)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", env=ENV)


def test_tls_files(tmp_path):
    for name in ("ca.pem", "box.crt", "box.key"):
        (tmp_path / name).write_text("x")
    c = load_config(None, {"broker.url": "mqtts://h:9999", "broker.ca_file": str(tmp_path / "ca.pem"),
                           "broker.cert_file": str(tmp_path / "box.crt"),
                           "broker.key_file": str(tmp_path / "box.key")}, env=ENV)
    assert c.broker.tls and c.broker.port == 9999 and c.broker.key_file == tmp_path / "box.key"


def test_presets(tmp_path):
    c = load_config(None, {"presets": [{"name": "Bike", "category": "bikes",
                                        "attributes": {"budget_max": 800, "tags": ["a", "b"]}}]}, env=ENV)
    (p,) = c.presets
    assert (p.name, p.category, p.description, dict(p.attributes)) == (
        "Bike", "bikes", None, {"budget_max": 800, "tags": ["a", "b"]})
    with pytest.raises(TypeError):
        p.attributes["x"] = 1  # type: ignore[index]


# ------------------------------------------------------------------------------ the example file
def test_example_file_is_the_defaults_plus_presets():
    ex = load_config(EXAMPLE, env=ENV)
    default = load_config(env=ENV)
    for f in fields(config.Config):
        if f.name not in ("presets", "source"):
            assert getattr(ex, f.name) == getattr(default, f.name), f.name
    assert [p.name for p in ex.presets] == ["Bike", "Broadband"]
    assert ex.presets[0].attributes["budget_max"] == 800


def _all_keys() -> list[str]:
    return [f"{s}.{k}" if s else k for s, keys in config.SECTIONS.items() for k in keys]


def test_example_and_docs_mention_every_key():
    example = EXAMPLE.read_text()
    docs = DOCS.read_text()
    for dotted in _all_keys():
        section, _, key = dotted.rpartition(".")
        if key == "presets":
            assert "[[presets]]" in example
        else:
            assert re.search(rf"^#? ?{key} = ", example, re.M), f"{dotted} not in the example"
            if section:
                assert f"[{section}]" in example
        assert f"`{dotted}`" in docs, f"{dotted} not in docs/config.md"



def test_the_box_face_shows_the_https_pairing_address(tmp_path):
    from device.ui.app import companion_url_of
    (tmp_path / "c.pem").write_text("x")
    p = write(tmp_path, f"[companion]\nport = 8443\ncert_file = '{tmp_path}/c.pem'\n"
                        f"key_file = '{tmp_path}/k.key'\n")
    url = companion_url_of(load_config(p, env=ENV, reader=config.UI))   # the key is not the UI's
    assert url is not None and re.fullmatch(r"https://[a-z0-9.-]+\.local:8443/pair", url), url
    assert companion_url_of(load_config(env=ENV, reader=config.UI)) is None   # development: the launcher's
    with pytest.raises(ConfigError, match="go together"):
        load_config(write(tmp_path, "[companion]\ncert_file = 'c.pem'\n", "half.toml"), env=ENV)


def test_a_retired_key_is_skipped_with_a_warning_so_an_upgraded_box_starts(tmp_path, caplog):
    f = tmp_path / "c.toml"
    f.write_text("[intents]\nrepublish_window_s = 60\nrepublish_every_s = 120\n")
    with caplog.at_level(logging.WARNING, logger="device.config.load"):
        cfg = load_config(f, env={})
    assert cfg.intents.republish_every_s == 120
    assert "intents.republish_window_s is not read any more" in caplog.text
    f.write_text("[intents]\nrepublish_windw_s = 60\n")             # a typo is still an error
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(f, env={})
